"""One row partition's `synthesisimager`: a continuum part, kept alive across major cycles.

The part is a session (`session_protocol`): built once by `open_part` in the process that holds
it and kept in that process's registry (`session_registry`) for the whole run. Each call runs in
the part's own working directory: CASA writes fixed-name temporary tables (IMAGING_WEIGHT_*) into
the cwd, and two imagers in one folder would overwrite each other's. `save_model` predicts the
final model into the MeasurementSet(s) after the loop.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from pclean_provider.casa import session_registry
from pclean_provider.casa.continuum_parts import PartSpec
from pclean_provider.casa.records import decode_record
from pclean_provider.casa.session_protocol import CONTINUUM_PART_OPERATIONS, SessionOperations


class PartImager(SessionOperations):
    """The synthesisimager of one part: selection, image definition and weighting, set up once."""

    operations = CONTINUUM_PART_OPERATIONS

    def __init__(self, spec: PartSpec, *, serial_layout: bool = False,
                 normalization: dict[str, Any] | None = None) -> None:
        import casatools

        self.spec = spec
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
        with contextlib.chdir(spec.workdir):
            self.si = casatools.synthesisimager()
            try:
                for key in sorted(spec.selection):
                    self.si.selectdata(spec.selection[key])
                impars = decode_record(spec.image)
                impars.pop("startmodel", None)
                self.si.defineimage(impars=impars, gridpars=spec.gridding)
                if serial_layout and normalization is not None:
                    # One part holding all rows is serial tclean's layout; tell the imager the
                    # normalization as serial tclean does.
                    self.si.normalizerinfo(normalization)
                self.si.setweighting(**spec.weighting)
            except Exception:
                self.si.done()
                raise

    # -- the operations (session_protocol.CONTINUUM_PART_OPERATIONS) -----------------------------
    def weight_density(self) -> str:
        return str(self.si.getweightdensity())

    def set_weight_density(self, path: str) -> None:
        self.si.setweightdensity(path)

    def make_psf(self) -> None:
        self.si.makepsf()

    def make_pb(self) -> None:
        self.si.makepb()

    def major_cycle(self, lastcycle: bool) -> None:
        self.si.executemajorcycle(controls={"lastcycle": bool(lastcycle)})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.si.done()


def save_model(selection: dict[str, dict[str, Any]], image: dict[str, Any], gridding: dict[str, Any],
               normalization: dict[str, Any], workdir: str) -> None:
    """Predict the model images under image['imagename'] into the MS(s): MODEL_DATA or the virtual model.

    tclean's predictModel after its loop: an imager on the full selection (readonly=False, and
    usescratch for 'modelcolumn') opens the existing model (restart), the normalizer divides it by
    the weight image for the mosaic gridders, the imager predicts, and the model is put back.
    No imaging weights are needed to predict, so none are set.
    """
    import casatools

    Path(workdir).mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(workdir):
        si = casatools.synthesisimager()
        ps = casatools.synthesisnormalizer()
        try:
            for key in sorted(selection):
                si.selectdata(selection[key])
            impars = dict(image, restart=True)
            impars.pop("startmodel", None)
            impars.pop("csys", None)
            si.defineimage(impars=impars, gridpars=gridding)
            si.normalizerinfo(normalization)
            ps.setupnormalizer(normpars=normalization)
            ps.dividemodelbyweight()
            si.predictmodel()
            ps.multiplymodelbyweight()
        finally:
            si.done()
            ps.done()


def open_part(spec_json: str, serial_layout: bool = False,
              normalization: dict[str, Any] | None = None) -> str:
    """Build and register the part's imager (Dask task or in-process); returns a PartReply as JSON."""
    spec = PartSpec.model_validate_json(spec_json)
    return session_registry.register(
        spec, lambda: PartImager(spec, serial_layout=serial_layout, normalization=normalization))
