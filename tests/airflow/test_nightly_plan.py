"""A night imaged from the plan alone: the shipped cube template, no overrides, under dag.test().

One MS holds two calibrators and two science sources (with scan intents, as telescopes record
them); another is fully flagged. The plan images each science source as a target of its own,
skips the calibrators and the flagged MS before any cluster starts, and the run stays green: each
science target ends archived or in review with its QA report, whose plan and grid checks show
a cell of several pixels per beam and an image that covers the primary beam.
"""

from __future__ import annotations

import json

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import
from tests.airflow.test_nightly_dags import (
    DATA_ROOT,
    answering_reviews,
    map_names,
    project_dags,
    run_dag,
    task_states,
    template_dag,
)

pytestmark = [pytest.mark.airflow, pytest.mark.casa]

TARGETS = [
    {"name": "J1331+3030", "intents": ["CALIBRATE_FLUX", "CALIBRATE_BANDPASS"], "offset_ra_deg": 8.0,
     "offset_dec_deg": 3.0, "flux_jy": 15.0},
    {"name": "J1150+2417", "intents": ["CALIBRATE_PHASE"], "offset_ra_deg": -3.0, "offset_dec_deg": -4.0,
     "flux_jy": 1.2},
    {"name": "NGC4151", "intents": ["OBSERVE_TARGET"]},
    {"name": "NGC4258", "intents": ["OBSERVE_TARGET"], "offset_ra_deg": 2.0, "offset_dec_deg": 1.0},
]


# The ACA (7 m dishes, baselines under 50 m) at 100 GHz: its primary beam is a few synthesized beams
# across, so the plan derives 90-pixel images (on the built-in 1.5 km Y array at 1.4 GHz: 720).
SURVEY = dict(array="aca.cycle10", antennas=8, ref_freq_hz=100e9, chan_width_hz=15.6e6, nchan=4, hours=0.5,
              integration_s=120.0, seed=9)


@pytest.fixture(scope="module")
def dags(casa_runtime):
    return project_dags()


def test_a_night_planned_from_the_data_images_every_science_target(dags, tmp_path):
    from pclean_provider.casa.simulator import simulate_ms
    from pclean_provider.pipeline.notify import read_notifications

    landing = DATA_ROOT / "landing-plan"
    landing.mkdir(parents=True, exist_ok=True)
    for name, extra in (("survey.ms", {"targets": TARGETS}), ("dead.ms", {"flagged": "all"})):
        simulate_ms(landing / name, **SURVEY, overwrite=True, **extra)
        (landing / f"{name}.complete").write_text("")
    sent = tmp_path / "sent.jsonl"
    notifier = {"notifier": "tests.airflow.recording_notifier.RecordingNotifier", "on": ["not_imaged"],
                "kwargs": {"path": str(sent)}}
    dag = template_dag(tmp_path / "plan-dags", "nightly_cube_plan", landing_dir="landing-plan",
                       notifiers=[notifier])
    # No overrides: the template's policies decide everything. A target below the gate waits for a
    # reviewer, who keeps it in review.
    with answering_reviews("nightly_cube_plan", ["Reject"], {"note": "kept for a look"}):
        run = run_dag(dag, {})
    states = task_states(run)
    assert str(run.state) == "success", states

    # One imaging path per science target, named by MS and target; calibrators and the flagged MS none.
    cubes = map_names(run, "cube")
    assert sorted(cubes) == ["survey.ms NGC4151", "survey.ms NGC4258"], cubes
    run_dir = DATA_ROOT / "work" / "nightly_cube_plan" / "runs"
    for label, index in cubes.items():
        assert states[("cube", index)][0] == "success" and states[("qa", index)][0] == "success", states
        routes = {states[("archive", index)][0], states[("review", index)][0]}
        assert routes == {"success", "skipped"}, (label, routes)
        target = label.split()[-1]
        (qa_json,) = run_dir.glob(f"*/survey/{target}/qa/qa.json")
        qa = json.loads(qa_json.read_text())
        decisions = {d["name"]: d for d in qa["plan"]["decisions"]}
        assert decisions["cell"]["source"] == "derived" and decisions["imsize"]["source"] == "derived"
        grid = qa["metrics"]["grid"]
        assert grid["pixels_per_beam"] >= 3.0, grid
        assert grid["pb_edge"] <= 0.5, grid  # the image reaches the primary beam's half power
        if states[("review", index)][0] == "success":
            (ticket,) = (DATA_ROOT / "review" / "nightly_cube_plan" / "survey" / target).glob("*.json")
            kept = json.loads(ticket.read_text())
            assert kept["target"] == target and kept["status"] == "rejected", kept
            assert states[("review_decision", index)][0] == "success", states
        else:
            # Several targets in one MS: each archive id ends in a hash of the MS and target.
            (product,) = (DATA_ROOT / "archive").glob(f"survey_{target}_cube+*")
            assert (product / "v0001" / "manifest.json").exists()

    # Said before any cluster time: the flagged MS and the calibrators, with their reasons.
    notes = [n for n in read_notifications(DATA_ROOT / "notifications") if n.run_id == run.run_id]
    (dead,) = [n for n in notes if n.kind == "not_imaged"]
    assert dead.ms == "dead.ms" and "no unflagged data" in dead.reason, dead
    (message,) = [json.loads(line) for line in sent.read_text().splitlines()]
    assert message["task_id"] == "prepare" and message["run_id"] == run.run_id
    ledger = json.loads((DATA_ROOT / "work" / "nightly_cube_plan" / "ledger" / "dead.ms.json").read_text())
    assert ledger["route"] == "not_imaged"
    (plan_file,) = run_dir.glob("*/plans/survey.ms.plan.json")
    plan = json.loads(plan_file.read_text())
    assert {s["label"] for s in plan["skipped"]} == {"J1331+3030", "J1150+2417"}
