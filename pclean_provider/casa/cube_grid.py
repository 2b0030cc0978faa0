"""The output frequency grid of a tclean cube, as CASA itself defines it.

tclean decides the spectral axis of a cube inside `synthesisimager.defineimage`: it resolves
`nchan=-1` to the channels the selected data cover, shifts a requested `start` to fit the data,
converts channel, frequency or velocity `start`/`width` into the `outframe`, and applies
`veltype`/`restfreq`. Redoing that by hand (`start + i * width`) drifts from tclean exactly where
the published pclean drifts (sub-cube boundaries, velocity starts, nchan=-1). So the grid here is
read back from the very tool call tclean makes, with the records tclean builds: the parameters go
through casatasks' own `ImagerParameters` (the class `task_tclean` constructs, in the same way it
does: its constructor's names and defaults, tclean's renames), then `selectdata` + `defineimage`,
then `getcsys` / `updatenchan`. Channel frequencies come from that coordinate system through the
coordsys tool (`toworld`), never from arithmetic on our side.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

from pydantic import BaseModel

from pclean_provider.casa.runtime import import_casatasks
from pclean_provider.config.casa_bridge import TCLEAN_TO_RECORD_NAMES
from pclean_provider.errors import PcleanInputError


class CubeGridError(PcleanInputError):
    """CASA cannot define the cube for these parameters (names the parameter when it can)."""


class CubeGrid(BaseModel):
    """The full cube's spectral axis: one frequency per output channel, in `frame`."""

    nchan: int
    frequencies_hz: list[float]
    width_hz: float
    frame: str
    restfreq_hz: float | None = None
    # The spectral axis is linear in frequency (always, for tclean cubes in frequency/radio velocity);
    # False would mean a tabular axis that start/width strings cannot reproduce.
    linear: bool = True
    # The same channels as velocities (km/s, tclean's veltype) when the cube was asked for in velocity.
    velocities_kms: list[float] | None = None


def imager_parameters(tclean_kwargs: dict[str, Any]):
    """casatasks' ImagerParameters built from tclean keywords the way task_tclean builds it."""
    import_casatasks()
    from casatasks.private.imagerhelpers.input_parameters import ImagerParameters

    renamed = {TCLEAN_TO_RECORD_NAMES.get(k, k): v for k, v in tclean_kwargs.items()}
    renamed["chanchunks"] = 1
    names = ImagerParameters.__init__.__code__.co_varnames[1:ImagerParameters.__init__.__code__.co_argcount]
    defaults = dict(zip(names, ImagerParameters.__init__.__defaults__, strict=False))
    args = {k: renamed.get(k, v) for k, v in defaults.items()}
    # tclean turns mosweight off for gridders that do not expect it (task_tclean, CASA 6.7).
    if args.get("mosweight") and args.get("gridder") not in ("mosaic", "awp2"):
        args["mosweight"] = False
    return ImagerParameters(**args)


def select_and_define(si: Any, selpars: dict[str, Any], impars: dict[str, Any],
                      gridpars: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Select the data and define the image on `si` as tclean does; returns the image's coordinate
    system record and its channel count (nchan=-1 resolved to what the data cover)."""
    for key in sorted(selpars):
        si.selectdata(selpars[key])
    si.defineimage(impars, gridpars)
    csys = si.getcsys()
    # synthesisimager wraps the coordinate system record in {'coordsys': ...}.
    csys = csys.get("coordsys", csys)
    nchan = int(impars["nchan"])
    if nchan == -1:
        nchan = int(si.updatenchan())
    return csys, nchan


def define_cube_grid(tclean_kwargs: dict[str, Any]) -> CubeGrid:
    """Ask CASA for the spectral axis tclean would give this cube (reads the MS, writes nothing)."""
    import casatools

    kwargs = dict(tclean_kwargs)
    # defineimage only describes the image; a throw-away name keeps it from touching real products.
    scratch = tempfile.mkdtemp(prefix="pclean-grid-")
    kwargs["imagename"] = os.path.join(scratch, "grid")
    kwargs["niter"] = 0
    # Only the grid is asked for: nothing may open the MS for writing (savemodel's scratch column).
    kwargs["savemodel"] = "none"
    params = imager_parameters(kwargs)
    if not params.checkParameters():
        raise CubeGridError("CASA rejected the imaging parameters while defining the cube; see the CASA log "
                            "for the parameter it names.")
    selpars = params.getSelPars()
    impars = params.getImagePars()
    gridpars = params.getGridPars()
    si = casatools.synthesisimager()
    cs = casatools.coordsys()
    try:
        # defineimage may leave scratch tables in the working directory.
        with contextlib.chdir(scratch):
            csys, nchan = select_and_define(si, selpars, impars["0"], gridpars["0"])
        cs.fromrecord(csys)
        axis = cs.findaxisbyname("Frequency")
        ndim = cs.naxes()
        freqs: list[float] = []
        for ch in range(nchan):
            pix = [0.0] * ndim
            pix[axis] = float(ch)
            freqs.append(float(cs.toworld(pix, "n")["numeric"][axis]))
        width = float(cs.increment(type="spectral")["numeric"][0])
        frame = str(cs.referencecode(type="spectral")[0])
        spectral = csys.get("spectral2", {})
        linear = "tabular" not in spectral
        restfreq = spectral.get("restfreq")
        velocities = None
        start = kwargs.get("start", "")
        if isinstance(start, str) and start.strip().lower().endswith("m/s") and restfreq:
            doppler = str(kwargs.get("veltype", "radio") or "radio")
            velocities = [float(v) for v in cs.frequencytovelocity(value=freqs, frequnit="Hz", doppler=doppler,
                                                                     velunit="km/s")]
    except RuntimeError as err:
        raise CubeGridError(f"CASA could not define the cube: {err}") from err
    finally:
        cs.done()
        si.done()
        _remove_tree(scratch)
    if nchan < 1:
        raise CubeGridError("nchan: the selection gives no channels; check spw/start/width.")
    return CubeGrid(nchan=nchan, frequencies_hz=freqs, width_hz=width, frame=frame,
                    restfreq_hz=float(restfreq) if restfreq else None, linear=linear,
                    velocities_kms=velocities)


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
