"""One result type for pclean() and both imaging operators: a continuum run as a PcleanResult."""

from __future__ import annotations

from pclean_provider.engine.continuum.models import ContinuumResult
from pclean_provider.engine.models import PcleanResult


def _run(**extra) -> ContinuumResult:
    return ContinuumResult(run_id="r1", imagename="/data/night/cont", nparts=2, iterations=120, major_cycles=3,
                           stopcode=2, stop_reason="threshold", elapsed_s=42.0,
                           products=["/data/night/cont.image", "/data/night/cont.residual", "/elsewhere/x.image"],
                           summary={"iterdone": 120, "nmajordone": 4, "stopcode": 2}, **extra)


def test_a_continuum_run_reads_as_pclean_reports_it():
    out = _run().pclean_result(specmode="mfs", niter=500, parallel=True, seconds=50.0)
    assert isinstance(out, PcleanResult)
    assert out.products == {".image": "/data/night/cont.image", ".residual": "/data/night/cont.residual",
                            "/elsewhere/x.image": "/elsewhere/x.image"}
    assert (out.imagename, out.specmode, out.parallel, out.nworkers) == ("/data/night/cont", "mfs", True, 2)
    assert (out.iterations, out.stop_reason, out.seconds) == (120, "threshold", 50.0)
    # tclean's return record, read as tclean's callers read it.
    assert out["iterdone"] == 120 and out["stopDescription"] and out.get("stopcode") == 2
    # The run's own record is kept whole.
    assert ContinuumResult.model_validate(out.continuum) == _run()


def test_no_cleaning_gives_tclean_record_for_niter_0():
    out = _run(cycles=[]).pclean_result(specmode="mfs", niter=0, parallel=False, seconds=1.0)
    assert out.summary["iterdone"] == 0 and out.summary["stopcode"] == 3 and out.summary["nmajordone"] == 1
