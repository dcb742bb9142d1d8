"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) against the real API
(gunicorn) and a real worker: sign in, the jobs list, one job's live curves, diagnostics and findings,
the charts' scale switch, hover read-out and best-epoch marker, the spec panel, the jobs list's colours,
the checkpoint download, and the readable errors. Screenshots go to var/test-artifacts/."""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, wait_until

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "var" / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                reason="needs Debian's chromium (make test installs it: .ci/ensure-browser)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


EPOCHS = 6  # the rate halves every epoch: over a decade in all, what its log axis is for
ALL = [str(e) for e in range(1, EPOCHS + 1)]


def _spec() -> dict[str, Any]:
    # Raw digits pixels (0..16, not standardised): diagnostics has a finding to show.
    return {
        "name": "dashboard-digits",
        "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "none"},
        "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                                   {"type": "dense", "units": 10, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.002},
        "schedule": {"type": "exponential_decay", "decay_steps": 1, "decay_rate": 0.5},
        "training": {"epochs": EPOCHS, "batch_size": 64, "seed": 0},
    }


def _sign_in(page: Any, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")


def test_dashboard_follows_a_job_and_downloads_its_checkpoint(page: Any, api_url: str, token: str,
                                                               exporting_worker: Any, capsys: Any) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    job = requests.post(f"{api_url}/v1/jobs", json=_spec(), headers=auth, timeout=10).json()
    job_id = job["id"]

    page.goto(api_url + "/")
    page.wait_for_selector("#signin:not([hidden])")
    _sign_in(page, "ty_not-a-token")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "refused the token" in page.inner_text("#signin-error")
    _sign_in(page, token)

    # The jobs list, then the job page, opened while the job may still be queued or running: it must
    # follow the job to its end by itself (server-sent events, or polling where the API has none).
    page.wait_for_selector(f"tr[data-job='{job_id}']")
    assert page.inner_text(f"tr[data-job='{job_id}'] a") == "dashboard-digits"
    page.click(f"tr[data-job='{job_id}'] a")
    page.wait_for_selector("#job-view[data-status='succeeded'][data-live='ended']", timeout=120_000)

    metrics = requests.get(f"{api_url}/v1/jobs/{job_id}/metrics", headers=auth, timeout=10).json()["epochs"]
    diagnostics = requests.get(f"{api_url}/v1/jobs/{job_id}/diagnostics", headers=auth, timeout=10).json()
    assert len(metrics) == EPOCHS
    view = page.locator("#job-view")
    assert view.get_attribute("data-epochs") == str(EPOCHS)

    def points(selector: str) -> list[str]:
        return page.locator(f"{selector} circle").evaluate_all("cs => cs.map(c => c.dataset.epoch)")

    for name in ("loss", "val_loss"):
        assert points(f"#chart-loss .series[data-name='{name}']") == ALL, name
    for name in ("accuracy", "val_accuracy"):
        assert points(f"#chart-metric-accuracy .series[data-name='{name}']") == ALL, name
    assert points("#chart-lr .series[data-name='learning_rate']") == ALL
    # The decaying rate, one point per epoch, falling.
    lr_y = page.locator("#chart-lr circle").evaluate_all("cs => cs.map(c => +c.getAttribute('cy'))")
    assert lr_y == sorted(lr_y)  # SVG y grows downwards
    variables = [f"{v['layer']}/{v['name']}" for v in diagnostics["variables"]]
    assert len(variables) == 4
    assert page.locator("#chart-update-ratio .series").evaluate_all(
        "gs => gs.map(g => g.dataset.name)") == variables
    for name in variables:
        assert page.get_attribute(f"#chart-update-ratio .series[data-name='{name}']", "data-points") == str(EPOCHS)

    findings = diagnostics["findings"]
    assert findings, "this job is built to have findings"
    rendered = page.locator("#findings-list li.finding")
    assert rendered.count() == len(findings)
    assert rendered.evaluate_all("ls => ls.map(l => l.dataset.code)") == [f["code"] for f in findings]
    first = rendered.first
    assert first.locator(".severity").inner_text().lower() == findings[0]["severity"]
    assert findings[0]["message"] in first.inner_text()
    assert json.loads(first.locator("pre.evidence").inner_text()) == findings[0]["evidence"]
    if findings[0]["suggested_change"] is not None:
        assert json.loads(first.locator("pre.suggested-change").inner_text()) == findings[0]["suggested_change"]
    assert "stop reason" in page.inner_text("#job-facts").lower()

    # The best checkpoint: fetched with the token, saved from a Blob, byte for byte the API's.
    with page.expect_download() as download:
        page.click("#download-keras")
    saved = Path(download.value.path())
    assert download.value.suggested_filename == f"{job_id}-best.keras"
    [best] = [c for c in requests.get(f"{api_url}/v1/jobs/{job_id}/checkpoints", headers=auth,
                                      timeout=10).json()["checkpoints"] if c["is_best"]]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == best["sha256"]
    # An export on raw inputs and the model card, the same way.
    with page.expect_download() as download:
        page.click("#download-onnx")
    assert download.value.suggested_filename == f"{job_id}-best.onnx.tar.gz"
    etag = requests.head(f"{api_url}/v1/jobs/{job_id}/checkpoints/best?format=onnx", headers=auth,
                         timeout=10).headers["ETag"]
    assert f'"{hashlib.sha256(Path(download.value.path()).read_bytes()).hexdigest()}"' == etag
    with page.expect_download() as download:
        page.click("#download-card")
    assert download.value.suggested_filename == f"{job_id}-card.json"
    card = requests.get(f"{api_url}/v1/jobs/{job_id}/card", headers=auth, timeout=10).json()
    assert json.loads(Path(download.value.path()).read_text()) == card

    job = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=10).json()
    _check_scale_switch(page, "#chart-loss", default="linear")
    _check_scale_switch(page, "#chart-lr", default="log")  # rates are read in powers of ten
    _check_readout(page, "#chart-loss", 2, {name: metrics[1][name] for name in ("loss", "val_loss")})
    _check_readout(page, "#chart-update-ratio", 2,
                   {f"{v['layer']}/{v['name']}": v["update_ratio"] for v in diagnostics["epochs"][1]["variables"]})
    _check_best_marker(page, job)

    # The spec panel: closed at first, then the normalised spec (defaults filled in) as JSON.
    assert page.get_attribute("#job-spec", "open") is None
    assert not page.is_visible("#job-spec-json")
    page.click("#job-spec summary")
    shown = json.loads(page.inner_text("#job-spec-json"))
    assert shown == job["spec"] and shown != _spec()  # as the API stored it, defaults filled in
    page.click("#job-spec summary")

    # For the picture: the loss on a log axis, the accuracy read out at epoch 2 (in a viewport as tall as
    # the page, so the full-page screenshot does not resize it and lose the pointer).
    page.click("#chart-loss button[data-scale='log']")
    page.set_viewport_size({"width": 1280, "height": page.evaluate("document.documentElement.scrollHeight")})
    _hover_epoch(page, "#chart-metric-accuracy", 2)
    _screenshot(page, "dashboard-job.png", capsys)


def _screenshot(page: Any, name: str, capsys: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot), full_page=True)
    with capsys.disabled():  # shown in the test run's output, not only on failure
        print(f"\ndashboard screenshot: {shot}")


def test_dashboard_shows_the_time_left_of_a_running_job(page: Any, api_url: str, token: str, worker: Any) -> None:
    import re

    from playwright.sync_api import expect

    from tests.conftest import tiny_spec, wait_until

    auth = {"Authorization": f"Bearer {token}"}
    spec = tiny_spec(name="dashboard-eta", training={"epochs": 5000, "batch_size": 8, "seed": 5})
    job_id = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=10).json()["id"]
    try:
        def estimated() -> bool:
            job = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=10).json()
            return job["status"] == "running" and job["eta"] is not None

        wait_until(estimated, 120, 0.2, "the job's first epoch")
        page.goto(api_url + "/")
        _sign_in(page, token)
        # The list: under the running job's status, its time left.
        cell = page.wait_for_selector(f"tr[data-job='{job_id}'] .eta")
        assert re.fullmatch(r"eta (\d+[dhms])+", cell.inner_text()), cell.inner_text()
        # The job page: in its header, with where the estimate comes from.
        page.click(f"tr[data-job='{job_id}'] a")
        expect(page.locator("#job-eta")).to_have_text(re.compile(r"^ETA (\d+[dhms])+ \(.+; from its recent epochs\)$"))
    finally:
        requests.post(f"{api_url}/v1/jobs/{job_id}/cancel", headers=auth, timeout=10)
    # Once it has ended there is no time left to show.
    page.wait_for_selector("#job-view[data-status='cancelled']", timeout=60_000)
    assert page.inner_text("#job-eta") == ""


def test_apply_suggested_change_forks_the_job_and_shows_the_fork(page: Any, api_url: str, token: str,
                                                                 worker: Any, capsys: Any) -> None:
    """SGD at 1e-10 stops by diagnosis (lr_too_small); its finding's button forks it with the suggested rate,
    the page follows the fork to its end, and the finding then says the fork resolved it."""
    auth = {"Authorization": f"Bearer {token}"}
    spec = {**_spec(), "name": "dashboard-tiny-rate", "optimizer": {"type": "sgd", "learning_rate": 1e-10},
            "schedule": {"type": "constant"}, "dataset": {"id": "builtin:digits", "validation_split": 0.2,
                                                          "normalize": "standardize"},
            "training": {"epochs": 10, "batch_size": 32, "seed": 0}}
    parent = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=10).json()

    page.goto(f"{api_url}/#/jobs/{parent['id']}")
    _sign_in(page, token)
    page.wait_for_selector("#job-view[data-status='failed'][data-live='ended']", timeout=120_000)
    button = page.locator("#findings-list li.finding[data-code='lr_too_small'] button.apply-finding")
    assert button.inner_text() == "Apply suggested change"
    # Only findings with a suggested change offer it.
    diagnostics = requests.get(f"{api_url}/v1/jobs/{parent['id']}/diagnostics", headers=auth, timeout=10).json()
    assert page.locator("button.apply-finding").count() == len(
        [f for f in diagnostics["findings"] if f["suggested_change"]])
    button.click()

    # The page's policy allows no script from strings (wait_for_function): the hash is read from here instead.
    hash_ = wait_until(lambda: (h := page.evaluate("location.hash")) != f"#/jobs/{parent['id']}" and h, 30, 0.2,
                       "the page to show the fork")
    child_id = hash_.removeprefix("#/jobs/")
    child = requests.get(f"{api_url}/v1/jobs/{child_id}", headers=auth, timeout=10).json()
    assert child["parent"]["id"] == parent["id"] and child["parent"]["applied_findings"] == ["lr_too_small:-"]
    page.wait_for_selector("#job-view[data-status='succeeded'][data-live='ended']", timeout=120_000)
    assert parent["id"] in page.inner_text("#job-facts")  # Forked from

    page.goto(f"{api_url}/#/jobs/{parent['id']}")
    note = page.locator("#findings-list li.finding[data-code='lr_too_small'] .resolved-by")
    note.wait_for()
    assert note.inner_text() == f"Resolved by fork {child_id}"
    assert child_id in page.inner_text("#job-facts")  # Forks
    _screenshot(page, "dashboard-forked.png", capsys)


def _y_ticks(page: Any, chart: str) -> list[tuple[float, float]]:
    """(value, y) of each labelled tick on a chart's y axis, lowest value first."""
    return sorted((float(label), float(y)) for label, y in page.locator(f"{chart} svg text.ytick").evaluate_all(
        "ts => ts.map(t => [t.textContent, t.getAttribute('y')])"))


def _axis_scale(ticks: list[tuple[float, float]]) -> str:
    """Which scale places these ticks: on a linear axis y is linear in the value, on a log axis in its log."""
    assert len(ticks) >= 3, ticks

    def linear_in(f: Any) -> bool:
        (v0, y0), (v1, y1) = ticks[0], ticks[-1]
        slope = (y1 - y0) / (f(v1) - f(v0))
        return all(abs(y0 + (f(v) - f(v0)) * slope - y) < 1.0 for v, y in ticks)

    is_linear, is_log = linear_in(lambda v: v), all(v > 0 for v, _ in ticks) and linear_in(math.log10)
    assert is_linear != is_log, ticks
    return "linear" if is_linear else "log"


def _check_scale_switch(page: Any, chart: str, default: str) -> None:
    other = {"linear": "log", "log": "linear"}[default]
    for scale in (default, other, default):
        if scale != default or page.get_attribute(f"{chart} svg", "data-scale") != default:
            page.click(f"{chart} button[data-scale='{scale}']")
        assert page.get_attribute(f"{chart} svg", "data-scale") == scale
        assert page.get_attribute(f"{chart} button[data-scale='{scale}']", "aria-pressed") == "true"
        assert _axis_scale(_y_ticks(page, chart)) == scale, (chart, scale)
        assert page.locator(f"{chart} .series circle").count() > 0


def _hover_epoch(page: Any, chart: str, epoch: int) -> None:
    """Moves the pointer over the chart, straight above the points of that epoch."""
    box = page.locator(f"{chart} .series circle[data-epoch='{epoch}']").first.bounding_box()
    area = page.locator(f"{chart} rect.overlay").bounding_box()
    x = box["x"] + box["width"] / 2  # the first epoch's points sit on the overlay's left edge: step inside
    page.mouse.move(min(max(x, area["x"] + 2), area["x"] + area["width"] - 2), area["y"] + 5)
    page.wait_for_selector(f"{chart}[data-epoch='{epoch}']")


def _check_readout(page: Any, chart: str, epoch: int, expected: dict[str, float]) -> None:
    """Hovering an epoch reads out every series' value there: the API's numbers."""
    _hover_epoch(page, chart, epoch)
    assert page.inner_text(f"{chart} .readout-epoch") == f"epoch {epoch}"
    assert page.locator(f"{chart} line.cursor").get_attribute("visibility") == "visible"
    shown = page.locator(f"{chart} .legend li").evaluate_all(
        "ls => ls.map(l => [l.dataset.name, l.querySelector('.value').dataset.value, "
        "l.querySelector('.value').textContent])")
    assert {name for name, _, _ in shown} == set(expected)
    for name, value, text in shown:
        assert float(value) == expected[name], (name, value)
        assert math.isclose(float(text), expected[name], rel_tol=1e-3), (name, text)
    page.mouse.move(1, 1)  # off the chart: the last epoch's values again
    page.wait_for_selector(f"{chart}[data-epoch='']")
    assert page.locator(f"{chart} line.cursor").get_attribute("visibility") == "hidden"


def _check_best_marker(page: Any, job: dict[str, Any]) -> None:
    best = job["best"]
    for chart in ("#chart-loss", "#chart-lr"):
        assert page.get_attribute(f"{chart} .best-marker", "data-epoch") == str(best["epoch"])
    ring = page.locator("#chart-loss .best-marker circle.best-point")
    assert ring.get_attribute("data-series") == best["monitor"]
    point = page.locator(f"#chart-loss .series[data-name='{best['monitor']}'] circle[data-epoch='{best['epoch']}']")
    assert (ring.get_attribute("cx"), ring.get_attribute("cy")) == (point.get_attribute("cx"), point.get_attribute("cy"))
    marker_x = float(page.get_attribute("#chart-loss .best-marker line", "x1"))
    assert abs(marker_x - float(point.get_attribute("cx"))) < 0.1


def test_jobs_list_colours_and_a_failed_jobs_charts(page: Any, api_url: str, token: str, worker: Any,
                                                    capsys: Any) -> None:
    """SGD at 1e-10 on digits (issue 17): with the default on_error it fails on a confirmed lr_too_small,
    with "continue" it succeeds carrying that error finding; the list marks both in red and a clean job
    not, the failed job's page charts the epochs it logged, and a job cancelled while queued says it has
    none."""
    auth = {"Authorization": f"Bearer {token}"}
    standardized = {**{k: v for k, v in _spec().items() if k != "schedule"},
                    "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"}}
    digits = {**standardized, "optimizer": {"type": "sgd", "learning_rate": 1e-10},
              "training": {"epochs": 20, "batch_size": 32, "seed": 0}}
    specs = {"failed": {**digits, "name": "dashboard-sgd-stopped"},
             "flagged": {**digits, "name": "dashboard-sgd-continued", "diagnostics": {"on_error": "continue"},
                         "training": {"epochs": 3, "batch_size": 32, "seed": 0}},
             "clean": {**standardized, "name": "dashboard-clean", "training": {"epochs": 2, "seed": 0}}}
    ids = {}
    for case, spec in specs.items():
        resp = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=10)
        assert resp.status_code == 201, resp.text
        ids[case] = resp.json()["id"]
    # Cancelled behind the others: almost surely while still queued, so with no epochs at all.
    ids["cancelled"] = requests.post(f"{api_url}/v1/jobs", json={**standardized, "name": "dashboard-cancelled"},
                                     headers=auth, timeout=10).json()["id"]
    requests.post(f"{api_url}/v1/jobs/{ids['cancelled']}/cancel", headers=auth, timeout=10).raise_for_status()

    def job(case: str) -> dict[str, Any]:
        return requests.get(f"{api_url}/v1/jobs/{ids[case]}", headers=auth, timeout=10).json()

    wait_until(lambda: all(job(c)["status"] in ("succeeded", "failed", "cancelled") for c in ids), 300, 0.5,
               "the dashboard's jobs to end")
    jobs = {case: job(case) for case in ids}
    assert (jobs["failed"]["status"], jobs["failed"]["stop_reason"]) == ("failed", "diagnosis")
    assert jobs["flagged"]["status"] == "succeeded" and jobs["flagged"]["findings"]["by_severity"]["error"] >= 1
    assert jobs["clean"]["status"] == "succeeded"

    page.goto(api_url + "/")
    _sign_in(page, token)
    for job_id in ids.values():
        page.wait_for_selector(f"tr[data-job='{job_id}']")

    def row(case: str) -> Any:
        return page.locator(f"tr[data-job='{ids[case]}']")

    assert row("flagged").get_attribute("data-attention") == "error"
    assert row("failed").get_attribute("data-attention") == "error"
    by_severity = jobs["flagged"]["findings"]["by_severity"]
    assert row("flagged").locator(".badge.error").inner_text() == f"{by_severity['error']} error"
    red = row("flagged").locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    clean = row("clean")
    expected_clean = "error" if jobs["clean"]["findings"]["by_severity"]["error"] else (
        "warning" if jobs["clean"]["findings"]["by_severity"]["warning"] else "")
    assert clean.get_attribute("data-attention") == expected_clean
    if not expected_clean:
        assert clean.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor") != red
    assert red == "rgb(254, 242, 242)"
    _screenshot(page, "dashboard-jobs-colours.png", capsys)

    # The failed job's page: every chart drawn from the epochs it logged, not "no data yet".
    failed = jobs["failed"]
    metrics = requests.get(f"{api_url}/v1/jobs/{failed['id']}/metrics", headers=auth, timeout=10).json()["epochs"]
    assert 1 <= len(metrics) < 20
    logged = [str(m["epoch"]) for m in metrics]
    page.click(f"tr[data-job='{failed['id']}'] a")
    page.wait_for_selector("#job-view[data-status='failed'][data-live='ended']")
    assert page.locator("#charts text.empty").count() == 0
    for name in ("loss", "val_loss"):
        assert page.locator(f"#chart-loss .series[data-name='{name}'] circle").evaluate_all(
            "cs => cs.map(c => c.dataset.epoch)") == logged
    _check_readout(page, "#chart-loss", metrics[0]["epoch"], {n: metrics[0][n] for n in ("loss", "val_loss")})
    # 1e-10 is drawn on the log axis the rate chart starts with.
    assert page.get_attribute("#chart-lr svg", "data-scale") == "log"
    assert page.locator("#chart-lr .series circle").count() == len(metrics)
    assert any(math.isclose(v, 1e-10) for v, _ in _y_ticks(page, "#chart-lr"))
    assert "lr_too_small" in page.inner_text("#findings-list")
    _screenshot(page, "dashboard-failed-job.png", capsys)

    # A job that ended before its first epoch says so, instead of waiting for data that will not come.
    cancelled = requests.get(f"{api_url}/v1/jobs/{ids['cancelled']}/metrics", headers=auth, timeout=10).json()
    page.goto(f"{api_url}/#/jobs/{ids['cancelled']}")
    page.wait_for_selector("#job-view[data-status='cancelled'][data-live='ended']")
    if cancelled["epochs"]:  # the worker reached it first
        logged = [str(m["epoch"]) for m in cancelled["epochs"]]
        assert page.locator("#chart-loss .series[data-name='loss'] circle").evaluate_all(
            "cs => cs.map(c => c.dataset.epoch)") == logged
    else:
        empties = page.locator("#charts text.empty").evaluate_all("ts => ts.map(t => t.textContent)")
        assert len(empties) == 3 and set(empties) == {"no epochs logged"}  # loss, rate, update ratios


def test_dashboard_errors_are_readable(page: Any, api_url: str, token: str) -> None:
    page.goto(api_url + "/")
    _sign_in(page, token)
    page.wait_for_selector("#jobs-view:not([hidden])")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-jobs.png"), full_page=True)

    missing = "job_" + "0" * 32
    page.goto(f"{api_url}/#/jobs/{missing}")
    page.wait_for_selector("#banner:not([hidden])")
    assert page.inner_text("#banner") == f"Not found (404): There is no job {missing}."
    assert page.inner_text("#job-title") == "Job not found"

    # A token revoked (or mistyped) while signed in: the next call asks for it again.
    page.evaluate("sessionStorage.setItem('trainyard.token', 'ty_revoked')")
    page.reload()
    page.wait_for_selector("#signin:not([hidden])")
    assert "refused the token" in page.inner_text("#signin-error")
    _sign_in(page, token)  # back where the user was
    page.wait_for_selector("#job-view:not([hidden]) #job-title:text('Job not found')")

    page.click("#sign-out")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('trainyard.token')") is None


def test_event_stream_parser_in_the_browser(page: Any, api_url: str) -> None:
    """The page's own SSE parser (live.js, used where the API streams job events) on a stream cut at
    awkward places: CRLF line ends, keep-alive comments, multi-line data, a chunk ending mid-line."""
    page.goto(api_url + "/")
    events = page.evaluate("""async () => {
        const { sseEvents } = await import("/ui/live.js");
        const chunks = [": keepalive\\r\\n\\r\\nid: 1\\r\\nevent: status\\r\\ndata: {\\"status\\":",
                        " \\"running\\"}\\r\\n\\r\\nid: 2\\nevent: epoch\\ndata: {\\"epoch\\": 1,\\ndata: \\"loss\\": 0.5}\\n",
                        "\\n: keepalive\\n\\nevent: end\\ndata: {\\"status\\": \\"succeeded\\"}\\n\\n"];
        const body = new ReadableStream({ start(c) {
            for (const s of chunks) c.enqueue(new TextEncoder().encode(s));
            c.close();
        } });
        const out = [];
        for await (const e of sseEvents(body)) out.push([e.event, e.id, JSON.parse(e.data)]);
        return out;
    }""")
    assert events == [["status", "1", {"status": "running"}], ["epoch", "2", {"epoch": 1, "loss": 0.5}],
                      ["end", None, {"status": "succeeded"}]]


def test_a_new_epoch_keeps_the_readers_scale_and_hovered_epoch(page: Any, api_url: str) -> None:
    """A running job's charts are drawn again on every epoch: the scale picked and the epoch pointed at
    stay. charts.js alone, on a blank page, so the new epoch arrives exactly while the pointer rests."""
    page.goto(api_url + "/")
    page.evaluate("""async () => {
        const { chartCard } = await import("/ui/charts.js");
        const host = document.createElement("div");
        host.id = "host";
        host.style.width = "480px";
        document.body.prepend(host);
        window.draw = (epochs) => host.replaceChildren(chartCard("chart-x", "x",
            [{ name: "loss", points: Array.from({ length: epochs }, (_, i) => [i + 1, 10 / (i + 1)]) }]));
        window.draw(3);
    }""")
    page.click("#chart-x button[data-scale='log']")
    _hover_epoch(page, "#chart-x", 2)
    page.evaluate("window.draw(4)")
    assert page.get_attribute("#chart-x svg", "data-scale") == "log"
    assert page.get_attribute("#chart-x", "data-epoch") == "2"
    assert page.get_attribute("#chart-x .legend .value", "data-value") == "5"
    assert page.locator("#chart-x line.cursor").get_attribute("visibility") == "visible"
    assert page.locator("#chart-x .series circle").count() == 4
    page.mouse.move(1, 1)
    page.wait_for_selector("#chart-x[data-epoch='']")
    assert page.inner_text("#chart-x .readout-epoch") == "epoch 4"
