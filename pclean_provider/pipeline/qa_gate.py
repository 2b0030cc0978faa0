"""The site's lowest QA gate: no template, and so no run's conf, may archive below it.

An archived version is immutable and is announced downstream (an Airflow asset event), so a product
QA judged an error must not become one because a template or a trigger form set the gate to 0. The
site minimum defaults to the top of QA's 'error' band (qa_models.BAND_EDGES). Lowering it (a test
site forcing test-sized products through, a commissioning night) is an administrator's decision:
``[pclean] qa_gate_minimum`` in Airflow's configuration, exported as ``$PCLEAN_QA_GATE_MINIMUM``, never a
template or run setting; a process that runs with a lowered minimum says so in its log.
"""

from __future__ import annotations

import logging
import math
import os

from pclean_provider.pipeline.qa_models import BAND_EDGES

QA_GATE_MINIMUM_ENV = "PCLEAN_QA_GATE_MINIMUM"
DEFAULT_QA_GATE_MINIMUM = BAND_EDGES["error"]

log = logging.getLogger(__name__)
_warned: set[float] = set()


class QaGateSettingError(ValueError):
    """$PCLEAN_QA_GATE_MINIMUM is not a number in [0, 1]."""


def qa_gate_minimum() -> float:
    """The lowest QA gate this site allows ($PCLEAN_QA_GATE_MINIMUM, else the top of the error band)."""
    raw = os.environ.get(QA_GATE_MINIMUM_ENV, "").strip()
    if not raw:
        return DEFAULT_QA_GATE_MINIMUM
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # also false for nan
        raise QaGateSettingError(
            f"{QA_GATE_MINIMUM_ENV}={raw[:20]!r} ([pclean] qa_gate_minimum) is not a number between 0 and 1; "
            f"set it to the lowest QA score a product may be archived with, or unset it for "
            f"{DEFAULT_QA_GATE_MINIMUM}")
    if value < DEFAULT_QA_GATE_MINIMUM and value not in _warned:
        # Said once per process and value: every task and step that loads a template runs this.
        _warned.add(value)
        log.warning("the site's lowest QA gate is lowered to %s by %s ([pclean] qa_gate_minimum): products "
                    "QA scores in the 'error' band (below %s) may be archived", value, QA_GATE_MINIMUM_ENV,
                    DEFAULT_QA_GATE_MINIMUM)
    return value
