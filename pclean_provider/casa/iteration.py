"""What tclean's iteration controller (the iterbotsink) reports, read the same way for cube and continuum.

The stop codes' descriptions are tclean's own; `iteration_summary` keeps the scalars of the
iterbot's summary a run reports (`iterdone`, `nmajordone`, `stopcode`, ...).
"""

from __future__ import annotations

from typing import Any

STOP_REASONS = {
    1: "iteration limit",
    2: "threshold",
    3: "force stop",
    4: "no change in peak residual across two major cycles",
    5: "peak residual increased by more than 3 times from the previous major cycle",
    6: "peak residual increased by more than 3 times from the minimum reached",
    7: "zero mask",
    8: "any combination of n-sigma and other valid exit criterion",
    9: "reached nmajor",
}


def iteration_summary(ib: Any) -> dict[str, Any]:
    """The scalars of an iterbotsink's summary that a run reports (JSON-able)."""
    summ = ib.getiterationsummary()
    out: dict[str, Any] = {}
    for key in ("iterdone", "nmajordone", "stopcode", "maxpsfsidelobe", "threshold", "nsigma",
                "cyclethreshold", "niter", "cycleniter"):
        if key in summ:
            value = summ[key]
            out[key] = value.item() if hasattr(value, "item") else value
    return out
