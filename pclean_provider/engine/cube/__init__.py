"""Cube imaging (specmode 'cube'/'cubedata'): preflight, the channel split, the sub-cube sessions'
loop or the independent sub-cubes, and the concatenation into tclean's products."""
