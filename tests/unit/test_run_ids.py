"""A run id names one run's folder and Dask keys, and no other run's.

Run ids are free text when a run is triggered through the REST API; sanitised alone, an Airflow
id and one written to look like its sanitised form shared a folder and the work keys, so one run
could adopt the other's results.
"""

from __future__ import annotations

import pytest

from pclean_provider.compute.dask_keys import prefix_of_key, try_of_key, work_key
from pclean_provider.pipeline.pipeline_template import load_templates
from pclean_provider.pipeline.run_settings import settings_for_run

SCHEDULED = "scheduled__2026-01-02T02:00:00+00:00"
LOOKALIKE = "scheduled__2026-01-02T02_00_00_00_00"  # what sanitising made of the scheduled one


def template():
    (t,) = [t for t in load_templates() if t.dag_id == "nightly_cube_imaging"]
    return t


def test_run_ids_that_sanitise_alike_get_folders_of_their_own(tmp_path):
    dirs = {run_id: settings_for_run(template(), {}, run_id, data_root=tmp_path).run_dir
            for run_id in (SCHEDULED, LOOKALIKE, "manual__1")}
    assert len(set(dirs.values())) == 3, dirs
    assert dirs["manual__1"].endswith("/runs/manual__1")  # a plain id keeps its name
    assert dirs[LOOKALIKE].endswith("/runs/" + LOOKALIKE)
    # The changed one keeps a readable prefix, and stays one path component.
    assert "/runs/scheduled__2026-01-02T02_00_00_00_00+" in dirs[SCHEDULED]
    assert dirs[SCHEDULED].rsplit("/runs/", 1)[1].count("/") == 0


def test_run_ids_that_sanitise_alike_get_work_keys_of_their_own():
    keys = {run_id: work_key("subcube", "nightly", run_id, "subcube", 3, 2) for run_id in (SCHEDULED, LOOKALIKE)}
    assert keys[SCHEDULED] != keys[LOOKALIKE]
    for key in keys.values():
        assert try_of_key(key) == 2 and prefix_of_key(key).endswith("-subcube-m3-")


@pytest.mark.parametrize("run_id", ["..", ".", "", "../other_dag/runs/x", "a/b", "a\nb", "x" * 251])
def test_a_run_id_that_is_not_a_safe_folder_name_is_refused(tmp_path, run_id):
    with pytest.raises(ValueError, match=r"run_id=.*cannot name the run's folder.*Trigger the run again"):
        settings_for_run(template(), {}, run_id, data_root=tmp_path)
