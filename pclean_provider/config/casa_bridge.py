"""Turn tclean's flat keyword arguments into the records casatools' synthesis tools take.

This is the one place that knows how tclean maps its parameters onto `synthesisimager`,
`synthesisnormalizer`, `synthesisdeconvolver` and `iterbotsink` records. Getting it exactly
right matters more than anything else in the continuum engine: a record that differs from
tclean's (a weighting flag, a cycleniter default) gives images that differ from tclean's.

Facts taken from casatasks 6.7 (task_tclean.py, imagerhelpers/input_parameters.py):
- tclean renames vis->msname, timerange->timestr, uvrange->uvdist, observation->obs,
  intent->state, gain->loopgain, smallscalebias->scalebias and forces chanchunks=1;
- for specmode='mfs' it forces perchanweightdensity=False, and it forces mosweight=False for
  every gridder but mosaic/awp2, before the records are built;
- weighting 'briggsabs' becomes type 'briggs' with rmode 'abs' ('briggs' -> rmode 'norm');
- cycleniter <= 0 or > niter becomes niter; with savemodel set and auto-masking or nsigma the
  model is not saved during the loop (readonly selection).
Parameters tclean does not expose take the values ImagerParameters gives them.

No casatools import here (config/ stays importable without CASA): the records are plain dicts
of str/int/float/bool/list, which the tools accept (units as strings).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict

from pclean_provider.errors import PcleanInputError

# tclean keyword -> name in the records (and in casatasks' ImagerParameters), where they differ.
TCLEAN_TO_RECORD_NAMES = {
    "vis": "msname",
    "timerange": "timestr",
    "uvrange": "uvdist",
    "observation": "obs",
    "intent": "state",
    "gain": "loopgain",
    "smallscalebias": "scalebias",
}

_SELECTION_KEYS = ("msname", "field", "spw", "scan", "timestr", "uvdist", "antenna", "obs", "state",
                   "datacolumn", "savemodel")

# Defaults of the parameters tclean itself does not expose (ImagerParameters' defaults).
_HIDDEN_DEFAULTS: dict[str, Any] = {
    "sysvel": "",
    "sysvelframe": "",
    "mterm": True,
    "dopbcorr": True,
    "workdir": "",
    "maskthreshold": "",
    "maskresolution": "",
    "nmask": 0,
    "chanchunks": 1,
    "cflist": [],
    "gridfunction": "SF",
    "convsupport": -1,
    "truncate": "-1",
    "gwidth": "-1",
    "jwidth": "-1",
    "pointingcolumntouse": "direction",
    "convertfirst": "never",
    "minweight": 0.0,
    "clipminmax": False,
}

# The mtmfs/mosaic gridders that keep mosweight as the user set it.
_MOSWEIGHT_GRIDDERS = ("mosaic", "awp2")


class BridgeError(PcleanInputError):
    """A tclean parameter the continuum engine cannot turn into records (names it and the fix)."""


class CasaRecords(BaseModel):
    """Everything the synthesis tools need for one imaging run, as plain JSON-able dicts.

    `selection` is keyed 'ms0', 'ms1', ... (one entry per MeasurementSet, tclean's order);
    the casa layer still passes each through synthesisutils.checkselectionparams.
    """

    model_config = ConfigDict(extra="forbid")

    selection: dict[str, dict[str, Any]]
    image: dict[str, Any]
    gridding: dict[str, Any]
    weighting: dict[str, Any]
    normalization: dict[str, Any]
    deconvolution: dict[str, Any]
    iteration: dict[str, Any]
    # tclean-level switches that steer the order of work rather than any one tool.
    restoration: bool = True
    pbcor: bool = False
    calcres: bool = True
    calcpsf: bool = True

    @property
    def imagename(self) -> str:
        return self.image["imagename"]

    @property
    def niter(self) -> int:
        return int(self.iteration["niter"])

    @property
    def deconvolver(self) -> str:
        return self.image["deconvolver"]

    @property
    def nterms(self) -> int:
        return int(self.image["nterms"]) if self.deconvolver == "mtmfs" else 1

    @property
    def gridder(self) -> str:
        return self.gridding["gridder"]

    def with_imagename(self, imagename: str) -> CasaRecords:
        """The same records writing to another image name (a staging name, a part name)."""
        out = self.model_copy(deep=True)
        for rec in (out.image, out.gridding, out.normalization, out.deconvolution):
            rec["imagename"] = imagename
        out.iteration["allimages"]["0"]["imagename"] = imagename
        return out


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _selection(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    vis = _as_list(p["msname"])
    if not vis or any(not v for v in vis):
        raise BridgeError("vis: no MeasurementSet given; set vis='path/to/data.ms'.")
    out: dict[str, dict[str, Any]] = {}
    for i, ms in enumerate(vis):
        rec = {}
        for key in _SELECTION_KEYS:
            value = p[key]
            if key != "msname" and isinstance(value, (list, tuple)):
                if len(value) == 1:
                    value = value[0]
                elif len(value) == len(vis):
                    value = value[i]
                else:
                    raise BridgeError(
                        f"{key}: {len(value)} entries for {len(vis)} MeasurementSets; give one entry "
                        f"or one per MeasurementSet.")
            rec[key] = ms if key == "msname" else value
        # observation may be an int in tclean; the selection record wants text.
        rec["obs"] = str(rec["obs"]) if rec["obs"] != "" else ""
        out[f"ms{i}"] = rec
    return out


def casa_records(tclean_kwargs: dict[str, Any]) -> CasaRecords:
    """Records for the synthesis tools from the keyword arguments of casatasks.tclean."""
    p: dict[str, Any] = dict(_HIDDEN_DEFAULTS)
    for key, value in tclean_kwargs.items():
        p[TCLEAN_TO_RECORD_NAMES.get(key, key)] = copy.deepcopy(value)
    missing = [k for k in ("msname", "imagename", "imsize", "deconvolver", "weighting", "niter") if k not in p]
    if missing:
        raise BridgeError(f"missing tclean parameters {missing}: pass the full cfg.tclean_kwargs().")

    specmode = "mfs" if p.get("specmode") == "cont" else p.get("specmode", "mfs")
    if specmode != "mfs":
        raise BridgeError(f"specmode={specmode!r}: the continuum engine images specmode='mfs' only; "
                          "cubes go through the cube engine.")
    if not p["imagename"]:
        raise BridgeError("imagename: empty; set imagename='path/prefix' for the output images.")
    gridder = p["gridder"]
    deconvolver = p["deconvolver"]

    # tclean's own adjustments, made before it builds the records.
    mosweight = bool(p["mosweight"]) and gridder in _MOSWEIGHT_GRIDDERS
    perchanweightdensity = False  # always, for mfs

    weighting = p["weighting"]
    rmode = "none"
    if weighting == "briggsabs":
        weighting, rmode = "briggs", "abs"
    elif weighting == "briggs":
        rmode = "norm"
    elif weighting == "briggsbwtaper":
        raise BridgeError("weighting='briggsbwtaper' does not work with specmode='mfs' (tclean refuses "
                          "it too); use weighting='briggs'.")

    imagename = p["imagename"]
    image = {
        "imagename": imagename, "nchan": p["nchan"], "imsize": p["imsize"], "cell": p["cell"],
        "phasecenter": p["phasecenter"], "stokes": p["stokes"], "specmode": specmode,
        "start": p["start"], "width": p["width"], "veltype": p["veltype"], "nterms": p["nterms"],
        "restfreq": p["restfreq"], "outframe": p["outframe"], "reffreq": p["reffreq"],
        "sysvel": p["sysvel"], "sysvelframe": p["sysvelframe"], "projection": p["projection"],
        "restart": p["restart"], "startmodel": p["startmodel"], "deconvolver": deconvolver,
    }
    gridding = {
        "gridder": gridder, "aterm": p["aterm"], "psterm": p["psterm"], "mterm": p["mterm"],
        "wbawp": p["wbawp"], "cfcache": p["cfcache"], "usepointing": p["usepointing"],
        "dopbcorr": p["dopbcorr"], "conjbeams": p["conjbeams"], "computepastep": p["computepastep"],
        "rotatepastep": p["rotatepastep"], "pointingoffsetsigdev": p["pointingoffsetsigdev"],
        "facets": p["facets"], "chanchunks": 1, "interpolation": p["interpolation"],
        "wprojplanes": p["wprojplanes"], "deconvolver": deconvolver, "vptable": p["vptable"],
        "imagename": imagename, "pointingcolumntouse": p["pointingcolumntouse"],
        "convertfirst": p["convertfirst"], "convfunc": p["gridfunction"],
        "convsupport": p["convsupport"], "truncate": p["truncate"], "gwidth": p["gwidth"],
        "jwidth": p["jwidth"], "minweight": p["minweight"], "clipminmax": p["clipminmax"],
    }
    weightrec = {
        "type": weighting, "rmode": rmode, "robust": p["robust"], "noise": p["noise"],
        "npixels": p["npixels"], "uvtaper": p["uvtaper"], "multifield": mosweight,
        "usecubebriggs": perchanweightdensity,
    }
    normalization = {
        "pblimit": p["pblimit"], "nterms": p["nterms"], "facets": p["facets"],
        "normtype": p["normtype"], "workdir": p["workdir"], "deconvolver": deconvolver,
        "imagename": imagename, "restoringbeam": p["restoringbeam"], "psfcutoff": p["psfcutoff"],
    }
    deconvolution = {
        "id": 0, "deconvolver": deconvolver, "nterms": p["nterms"], "scales": p["scales"],
        "scalebias": p["scalebias"], "restoringbeam": p["restoringbeam"], "usemask": p["usemask"],
        "mask": p["mask"], "pbmask": p["pbmask"], "maskthreshold": p["maskthreshold"],
        "maskresolution": p["maskresolution"], "nmask": p["nmask"],
        "sidelobethreshold": p["sidelobethreshold"], "noisethreshold": p["noisethreshold"],
        "lownoisethreshold": p["lownoisethreshold"], "negativethreshold": p["negativethreshold"],
        "smoothfactor": p["smoothfactor"], "fusedthreshold": p["fusedthreshold"],
        "specmode": specmode, "largestscale": p["largestscale"], "minbeamfrac": p["minbeamfrac"],
        "cutthreshold": p["cutthreshold"], "growiterations": p["growiterations"],
        "dogrowprune": p["dogrowprune"], "minpercentchange": p["minpercentchange"],
        "verbose": p["verbose"], "fastnoise": p["fastnoise"], "interactive": p["interactive"],
        "startmodel": p["startmodel"], "nsigma": p["nsigma"], "imagename": imagename,
        "fullsummary": p["fullsummary"],
    }
    niter = int(p["niter"])
    cycleniter = int(p["cycleniter"])
    if niter > 0 and (cycleniter <= 0 or cycleniter > niter):
        cycleniter = niter if not p["interactive"] else min(niter, 100)
    savemodel = p["savemodel"]
    selection = _selection(p)
    if niter > 0 and savemodel != "none" and (
            p["interactive"] or p["usemask"] == "auto-multithresh" or float(p["nsigma"]) > 0.0):
        # As tclean: the model cannot be saved inside the loop then; it is predicted afterwards.
        for rec in selection.values():
            rec["readonly"] = True
            rec["usescratch"] = False
        loop_savemodel = "none"
    else:
        loop_savemodel = savemodel
    iteration = {
        "niter": niter, "cycleniter": cycleniter, "threshold": p["threshold"],
        "loopgain": p["loopgain"], "interactive": p["interactive"], "cyclefactor": p["cyclefactor"],
        "minpsffraction": p["minpsffraction"], "maxpsffraction": p["maxpsffraction"],
        "savemodel": loop_savemodel, "nsigma": p["nsigma"], "nmajor": p["nmajor"],
        "fullsummary": p["fullsummary"],
        "allimages": {"0": {"imagename": imagename, "multiterm": deconvolver == "mtmfs"}},
    }
    if p.get("outlierfile"):
        raise BridgeError("outlierfile: outlier fields are not supported by the continuum engine; "
                          "image each field separately (outlierfile='').")
    if p.get("interactive"):
        raise BridgeError("interactive=True: a parallel run cannot stop for a viewer; set interactive=False.")
    if p.get("psfphasecenter"):
        raise BridgeError("psfphasecenter: not supported by the continuum engine; leave it ''.")
    return CasaRecords(
        selection=selection, image=image, gridding=gridding, weighting=weightrec,
        normalization=normalization, deconvolution=deconvolution, iteration=iteration,
        restoration=bool(p.get("restoration", True)), pbcor=bool(p.get("pbcor", False)),
        calcres=bool(p.get("calcres", True)), calcpsf=bool(p.get("calcpsf", True)),
    )


def casa_records_for(cfg: Any) -> CasaRecords:
    """Records for a PcleanConfig (anything with `tclean_kwargs()`)."""
    return casa_records(cfg.tclean_kwargs())
