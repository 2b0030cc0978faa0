"""The task<->CLI contract of the `pclean` steps the DAGs run: one result file, one writer, one reader."""

from __future__ import annotations

import json
import sys

import pytest

from pclean_provider.exit_codes import IngestExit, PlanExit
from pclean_provider.step_results import (
    SCHEMA_VERSION,
    StepResult,
    StepResultError,
    finish,
    read_step_result,
    write_step_result,
)


def test_a_result_reads_back_as_written_and_no_temporary_file_is_left(tmp_path):
    path = tmp_path / "plan.result.json"
    written = StepResult.of("plan", PlanExit.UNPLANNED, {"plans": [], "errors": [{"vis": "a.ms", "error": "x"}]},
                            "a.ms could not be planned")
    write_step_result(path, written)
    assert read_step_result(path, "plan", 3) == written
    data = json.loads(path.read_text())
    assert data["exit"] == "UNPLANNED" and data["kind"] == "plan" and data["schema_version"] == SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["plan.result.json"]


def test_without_a_file_the_exit_code_and_stderr_are_the_result(tmp_path):
    result = read_step_result(tmp_path / "none.json", "ingest", 4, why="MS unreadable")
    assert (result.exit, result.payload, result.message, result.ok) == ("READ_UNSTABLE", {}, "MS unreadable", False)
    assert read_step_result(tmp_path / "none.json", "qa", -9).exit == "EXIT_-9"


def test_the_exit_code_wins_over_a_file_that_disagrees(tmp_path):
    path = tmp_path / "qa.result.json"
    write_step_result(path, StepResult.of("qa", 0, {"overall_score": 1.0}))
    result = read_step_result(path, "qa", 1, why="Traceback ...")
    assert result.exit == "FAILED" and result.payload == {} and "said OK" in result.message


def test_another_steps_or_a_newer_schemas_file_is_refused(tmp_path):
    path = tmp_path / "r.json"
    write_step_result(path, StepResult.of("qa", 0))
    with pytest.raises(StepResultError, match="expected 'pclean plan'"):
        read_step_result(path, "plan", 0)
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(StepResultError, match="schema version"):
        read_step_result(path, "qa", 0)


def test_finish_writes_only_when_asked_and_says_so_when_it_cannot(tmp_path, capsys):
    assert finish(None, "ingest", IngestExit.OK, {"accepted": []}) == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = finish(blocker / "ingest.result.json", "ingest", IngestExit.OK, unwritable=IngestExit.READ_UNSTABLE)
    assert code == IngestExit.READ_UNSTABLE and "could not be written" in capsys.readouterr().err


def test_run_step_passes_the_result_file_and_never_reads_an_earlier_tries(tmp_path, monkeypatch):
    from pclean_provider.dags import pclean_subprocess

    logs = tmp_path / "logs"
    logs.mkdir()
    write_step_result(logs / "plan.result.json", StepResult.of("plan", 0, {"plans": ["stale"]}))
    # A step that dies before writing its result: the earlier try's file must not stand in for it.
    monkeypatch.setattr(pclean_subprocess, "pclean_command", lambda: [sys.executable, "-c", "import sys; sys.exit('boom')"])
    died = pclean_subprocess.run_step(["plan", "x.ms"], logs)
    assert died.exit == "FAILED" and died.payload == {} and "boom" in died.message
    # A step that writes one: its payload comes back, stdout plays no part.
    script = ("import sys; from pclean_provider.step_results import finish; "
              "print('{\"not\": \"this\"}'); "
              "sys.exit(finish(sys.argv[sys.argv.index('--result-file') + 1], sys.argv[1], 3, "
              "{'plans': [], 'errors': [{'vis': sys.argv[2], 'error': 'flagged'}]}, 'x.ms: flagged'))")
    monkeypatch.setattr(pclean_subprocess, "pclean_command", lambda: [sys.executable, "-c", script])
    planned = pclean_subprocess.run_step(["plan", "x.ms"], logs)
    assert planned.code == PlanExit.UNPLANNED and planned.exit == "UNPLANNED"
    assert planned.payload["errors"] == [{"vis": "x.ms", "error": "flagged"}] and planned.message == "x.ms: flagged"


def test_the_cli_steps_write_their_refusal_too(tmp_path):
    from pclean_provider.cli import ingest, plan

    assert ingest.main(["--result-file", str(tmp_path / "i.json")]) == IngestExit.BAD_INPUT
    refused = read_step_result(tmp_path / "i.json", "ingest", IngestExit.BAD_INPUT)
    assert refused.exit == "BAD_INPUT" and "landing area" in refused.message
    assert plan.main(["x.ms", "--request", str(tmp_path / "missing.json"),
                      "--result-file", str(tmp_path / "p.json")]) == PlanExit.BAD_INPUT
    assert "missing.json" in read_step_result(tmp_path / "p.json", "plan", PlanExit.BAD_INPUT).message
