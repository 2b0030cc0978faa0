"""Continuum imaging (specmode 'mfs'): preflight, outlier fields, and the major/minor cycle loop
over row-partitioned parts, with its per-stage timing and result."""
