"""The real Airflow UI in headless Chromium: sign in, fill the cube pipeline's trigger form, open the
product's QA report from its task's "QA report" button (served by the provider's plugin); the product is
below the QA gate and waits in review_decision: re-image it from the Required Actions page with an
override, and approve the new run's product through the REST API, which archives it.

Shares the session's `airflow standalone` with the end-to-end test. The screenshot of the finished
run is kept under test-artifacts/ for people to look at.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests

from pclean_provider.names import run_folder_name
from tests.airflow import standalone
from tests.conftest import require

pytestmark = [pytest.mark.browser, pytest.mark.airflow, pytest.mark.casa]

DAG_ID = "nightly_cube_imaging"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = standalone.REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture()
def page():
    require("playwright", importlib.util.find_spec("playwright") is not None, "run `make setup`")
    require("chromium", CHROMIUM.exists(), "run `make setup` (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(60_000)
        yield context.new_page()
        browser.close()


def newest_run_with_vis(server, vis: str, not_before: float, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = server.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"order_by": "-run_after", "limit": 20})
        for run in runs["dag_runs"]:
            if (run.get("conf") or {}).get("vis") == vis:
                return run["dag_run_id"]
        time.sleep(1)
    raise AssertionError(f"no run with vis={vis} appeared after the form was submitted")


def park(page) -> None:
    """Leave the UI while the test only watches the REST API: an open DAG or task page re-renders
    on every refresh of a running DAG, and that costs this 2-core machine a core for minutes
    (measured: 42 CPU-seconds of Chromium in one run of this test)."""
    page.goto("about:blank")


def test_trigger_form_run_succeeds(airflow_standalone, casa_runtime, page):
    from playwright.sync_api import expect

    from pclean_provider.casa.simulator import simulate_ms

    server = airflow_standalone
    ms = simulate_ms(server.data_root / "incoming" / "browser.ms", nchan=4, hours=0.25, seed=51).ms
    server.wait_for_dag(DAG_ID)
    server.unpause(DAG_ID)
    ARTIFACTS.mkdir(exist_ok=True)

    page.goto(server.base_url)
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(server.admin_password())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)

    page.goto(f"{server.base_url}/dags/{DAG_ID}")
    started = time.time()
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    vis_field = dialog.locator("#element_vis")
    if not vis_field.is_visible():
        # The parameters sit in a collapsed section in some layouts.
        dialog.get_by_text("Run Parameters", exact=False).first.click()
    vis_field.fill(ms)
    # The form shows the template's values, not empty boxes: its overrides (the test-sized cube of
    # standalone.write_small_templates) and its declared cluster connection and QA thresholds.
    # The JSON editor fills in its lines after it appears, laid out with non-breaking spaces (\s).
    overrides = dialog.locator("#element_overrides")
    overrides.scroll_into_view_if_needed()
    expect(overrides).to_contain_text(re.compile(r'"imsize":\s*64'))
    expect(overrides).to_contain_text(re.compile(r'"specmode":\s*"cube"'))
    for declared in ("cluster_options", "cluster_connection_id", "qa_thresholds"):
        assert dialog.locator(f"#element_{declared}").count() == 1, declared
    page.screenshot(path=str(ARTIFACTS / "browser-trigger-form.png"), full_page=True)
    dialog.get_by_role("button", name="Trigger").last.click()

    run_id = newest_run_with_vis(server, ms, started)
    park(page)
    # A test-sized cube scores below the template's gate (0.66): the product waits for a reviewer.
    server.wait_for_task(DAG_ID, run_id, ("review_decision", 0), {"awaiting_input"}, timeout=480)
    summary = server.task_summary(DAG_ID, run_id)
    # The template's default cube_mode (exact): one cube task for the MS, no mapped sub-cubes.
    assert summary[("cube", 0)][0] == "success" and ("image_subcube", 0) not in summary, summary
    # The gate's two branches run side by side: archive may still be on its way to skipped.
    server.wait_for_task(DAG_ID, run_id, ("archive", 0), {"skipped"}, timeout=120)
    assert server.task_summary(DAG_ID, run_id)[("review", 0)][0] == "success", summary
    # The wait holds no cluster: the teardown runs while the product waits, and the run stays open.
    server.wait_for_task(DAG_ID, run_id, ("cluster_down", -1), {"success"}, timeout=180)
    assert server.task_summary(DAG_ID, run_id)[("review_decision", 0)][0] == "awaiting_input"
    assert server.run_state(DAG_ID, run_id) == "running"
    check_the_qa_report_opens_from_its_task(page, server, run_id)
    new_run = reimage_from_the_required_actions_page(page, server, run_id)
    state = server.wait_for_run(DAG_ID, run_id, timeout=120)
    assert state == "success", server.task_summary(DAG_ID, run_id)

    # What an operator sees: the run's page says it succeeded.
    page.goto(f"{server.base_url}/dags/{DAG_ID}/runs/{run_id}")
    page.get_by_text("success", exact=False).first.wait_for()
    shot = ARTIFACTS / "browser-run-succeeded.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    conf = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["conf"]
    assert conf["vis"] == ms and conf["preset"] == "none"  # the form sent the field we set plus defaults
    # The untouched template values went through the conf policy (they are the template's own).
    assert conf["overrides"]["imsize"] == 64 and conf["overrides"]["specmode"] == "cube", conf
    approve_the_reimaged_product_in_the_ui(page, server, run_id, new_run, ms)


def reimage_from_the_required_actions_page(page, server, run_id: str) -> str:
    """The waiting task's Required Actions page: the question links the QA report; a reviewer asks for a
    dirty re-image (niter 0) and the answer starts a run of this MS alone with that override."""
    from playwright.sync_api import expect

    from pclean_provider.pipeline.notify import read_notifications

    run = quote(run_id, safe="")
    detail = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/review_decision/0/hitlDetails")
    assert detail["subject"] == f"QA review: browser.ms ({DAG_ID})" and detail["options"] == [
        "Approve", "Reject", "Re-image"], detail
    report = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/qa/links",
                        params={"map_index": 0})["extra_links"]["QA report"]
    assert f"[QA report]({report})" in detail["body"], detail["body"]

    # The notification that the review waits names the page to answer on and the report.
    (waiting,) = [n for n in read_notifications(server.data_root / "notifications")
                  if n.run_id == run_id and n.kind == "review_waiting"]
    assert waiting.ms == "browser.ms" and waiting.qa_report == f"{server.base_url}{report}", waiting
    assert waiting.review_url == f"{server.base_url}/dags/{DAG_ID}/runs/{run}/tasks/review_decision/mapped/0/" \
                                 "required_actions", waiting
    page.goto(waiting.review_url)
    expect(page.locator(f'a[href="{report}"]').first).to_be_visible(timeout=60_000)
    # The question's text (the ticket, the CLI way) and the form: a note, then the tclean parameters.
    expect(page.get_by_text("it stays in review, unpublished", exact=False)).to_be_visible()
    niter = page.get_by_role("spinbutton", name="niter")
    niter.scroll_into_view_if_needed()
    niter.fill("0")
    page.locator("#element_note").fill("dirty image, to compare")
    page.screenshot(path=str(ARTIFACTS / "browser-review-waiting.png"), full_page=True)
    page.get_by_test_id("hitl-option-Re-image").click()

    server.wait_for_task(DAG_ID, run_id, ("review_decision", 0), {"success"}, timeout=120)
    park(page)
    answered = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/review_decision/0/hitlDetails")
    assert answered["chosen_options"] == ["Re-image"] and answered["responded_by_user"]["name"] == "admin"
    result = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/review_decision/xcomEntries/"
                               "return_value", params={"map_index": 0})["value"]
    result = json.loads(result) if isinstance(result, str) else result
    new_run = result["reimage_run_id"]
    ticket = json.loads(Path(result["review_ticket"]).read_text())
    assert ticket["status"] == "re-imaging" and ticket["decisions"][-1]["overrides"] == {"niter": 0}, ticket
    assert ticket["decisions"][-1]["note"] == "dirty image, to compare" and "pclean archive publish" in ticket[
        "how_to_publish"]
    return new_run


def approve_the_reimaged_product_in_the_ui(page, server, first_run: str, new_run: str, vis: str) -> None:
    """The re-image run images that MS alone with the reviewer's override; its product (below the gate
    again) waits in turn, and Approve on its Required Actions page archives it, with the asset event."""
    from playwright.sync_api import expect

    conf = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{new_run}")["conf"]
    assert conf["vis"] == vis and conf["overrides"]["niter"] == 0 and conf["overrides"]["imsize"] == 64, conf
    server.wait_for_task(DAG_ID, new_run, ("review_decision", 0), {"awaiting_input"}, timeout=480)
    archive = server.data_root / "archive" / "browser_cube"
    assert not archive.exists()  # neither night published anything yet
    # A person answers minutes later; this test waits until the scheduler took in the pause (see
    # Standalone.answer), then answers as the reviewer does, on the page the notification links.
    server.wait_until_pause_taken_in(DAG_ID, new_run, "review_decision", 0)
    page.goto(f"{server.base_url}/dags/{DAG_ID}/runs/{quote(new_run, safe='')}/tasks/review_decision/mapped/0/"
              "required_actions")
    approve = page.get_by_test_id("hitl-option-Approve")
    expect(approve).to_be_visible(timeout=60_000)
    page.locator("#element_note").fill("good enough")
    approve.click()
    server.wait_for_task(DAG_ID, new_run, ("review_decision", 0), {"success"}, timeout=120)
    park(page)
    state = server.wait_for_run(DAG_ID, new_run, timeout=300)
    summary = server.task_summary(DAG_ID, new_run)
    assert state == "success" and summary[("review_decision", 0)][0] == "success", summary
    # A new product: the re-image run's own cube, made with niter 0, archived.
    config = json.loads(next((server.data_root / "work" / DAG_ID / "runs").glob(
        f"{run_folder_name(new_run)}/**/imaging-config.json")).read_text())
    assert _find(config, "niter") == 0, config
    assert [p.name for p in sorted(archive.glob("v*"))] == ["v0001"]
    (event,) = [e for e in server.api("GET", "/assets/events", params={"limit": 100})["asset_events"]
                if e.get("source_run_id") == new_run]
    assert event["source_task_id"] == "review_decision" and event["extra"]["version"] == 1, event
    assert event["extra"]["reviewed"]["by"] == "admin" and event["extra"]["reviewed"]["note"] == "good enough"
    assert not [e for e in server.api("GET", "/assets/events", params={"limit": 100})["asset_events"]
                if e.get("source_run_id") == first_run]


def _find(data, key: str):
    """The first value of ``key`` anywhere in nested JSON."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for value in data:
            found = _find(value, key)
            if found is not None:
                return found
    return None


def check_the_qa_report_opens_from_its_task(page, server, run_id: str) -> None:
    """After the run: the QA task's "QA report" button opens the product's report, served by the
    provider's plugin to the signed-in user only; its "QA night" button lists the night's products;
    the imaging task links to the same report, and to no Dask dashboard now that its cluster is down."""
    from playwright.sync_api import expect

    def links(task_id: str, map_index: int = 0) -> dict:
        path = f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/links"
        return server.api("GET", path, params={"map_index": map_index})["extra_links"]

    qa, cube, up = links("qa"), links("cube"), links("cluster_up", map_index=-1)
    report = qa["QA report"]
    assert report and report.startswith("/pclean/qa/") and report.endswith("/qa/qa.html"), qa
    assert cube["QA report"] == report, cube
    assert cube["Dask dashboard"] is None and up["Dask dashboard"] is None, (cube, up)

    # The button in the task instance's details, as an operator clicks it.
    page.goto(f"{server.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/qa/mapped/0/details")
    button = page.get_by_role("link", name="QA report")
    expect(button).to_have_attribute("href", report)
    button.click()
    page.wait_for_url(f"{server.base_url}{report}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("QA report: browser")
    page.screenshot(path=str(ARTIFACTS / "browser-qa-report.png"), full_page=True)

    page.goto(f"{server.base_url}{qa['QA night']}")
    row = page.get_by_role("row").filter(has_text="browser.ms")
    expect(row).to_contain_text(re.compile(r"(archive|review) \(gate 0\.\d\d\)"))
    page.screenshot(path=str(ARTIFACTS / "browser-qa-night.png"), full_page=True)

    # Browse > pclean QA: the pipelines and their nights, inside the Airflow UI.
    page.goto(server.base_url)
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="pclean QA").click()
    frame = page.frame_locator("iframe[title='pclean QA']")
    night_folder = unquote(qa["QA night"].split("/")[-2])
    expect(frame.get_by_role("row").filter(has_text=DAG_ID)).to_contain_text(night_folder)

    # The plugin asks for Airflow's sign-in and serves nothing outside the data roots' QA folders.
    bearer = {"Authorization": f"Bearer {server.token()}"}
    assert requests.get(server.base_url + report, timeout=30).status_code == 401
    assert requests.get(server.base_url + report, headers=bearer, timeout=30).status_code == 200
    files = f"{server.base_url}/pclean/qa/{DAG_ID}/files"
    # '..' (sent encoded, so that no client tidies it away) is refused even where it lands on a report.
    for path in ("/etc/passwd", report.split("/files", 1)[1].replace("/qa/qa.html", "/qa/%2e%2e/qa/qa.json")):
        assert requests.get(files + path, headers=bearer, timeout=30).status_code == 404, path
