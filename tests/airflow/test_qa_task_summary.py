"""The qa task hands QA the imaging task's own iteration figures (the report said "iterations
unknown" although the cube task had logged them)."""

from __future__ import annotations

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import

pytestmark = pytest.mark.airflow


def test_the_iteration_summary_comes_from_the_imaging_result():
    from pclean_provider.dags.tasks.qa import _iteration_summary

    cube = {"iterations": 4381, "stop_reason": "threshold", "summary": {"iterdone": 4381, "niter": 500000,
                                                                        "stopcode": 2, "nested": {"x": 1}}}
    assert _iteration_summary(cube) == {"iterdone": 4381, "niter": 500000, "stopcode": 2,
                                        "stopDescription": "threshold"}
    assert _iteration_summary({"iterations": 12}) == {"iterdone": 12}
    assert _iteration_summary({"results": []}) == {} and _iteration_summary(None) == {}
