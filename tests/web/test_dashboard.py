"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) against the real API
(gunicorn) and a real worker: sign in, the jobs list, one job's live curves, diagnostics and findings,
the checkpoint download, and the readable errors."""
from __future__ import annotations

import hashlib
import json
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
        "training": {"epochs": 3, "batch_size": 64, "seed": 0},
    }


def _sign_in(page: Any, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")


def test_dashboard_follows_a_job_and_downloads_its_checkpoint(page: Any, api_url: str, token: str,
                                                               worker: Any, capsys: Any) -> None:
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
    assert len(metrics) == 3
    view = page.locator("#job-view")
    assert view.get_attribute("data-epochs") == "3"

    def points(selector: str) -> list[str]:
        return page.locator(f"{selector} circle").evaluate_all("cs => cs.map(c => c.dataset.epoch)")

    for name in ("loss", "val_loss"):
        assert points(f"#chart-loss .series[data-name='{name}']") == ["1", "2", "3"], name
    for name in ("accuracy", "val_accuracy"):
        assert points(f"#chart-metric-accuracy .series[data-name='{name}']") == ["1", "2", "3"], name
    assert points("#chart-lr .series[data-name='learning_rate']") == ["1", "2", "3"]
    # The decaying rate spans under a decade here: still one point per epoch, falling.
    lr_y = page.locator("#chart-lr circle").evaluate_all("cs => cs.map(c => +c.getAttribute('cy'))")
    assert lr_y == sorted(lr_y)  # SVG y grows downwards
    variables = [f"{v['layer']}/{v['name']}" for v in diagnostics["variables"]]
    assert len(variables) == 4
    assert page.locator("#chart-update-ratio .series").evaluate_all(
        "gs => gs.map(g => g.dataset.name)") == variables
    for name in variables:
        assert page.get_attribute(f"#chart-update-ratio .series[data-name='{name}']", "data-points") == "3"

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

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-job.png"
    page.screenshot(path=str(shot), full_page=True)
    with capsys.disabled():  # shown in the test run's output, not only on failure
        print(f"\ndashboard screenshot: {shot}")


def test_apply_suggested_change_forks_the_job_and_shows_the_fork(page: Any, api_url: str, token: str,
                                                                 worker: Any) -> None:
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
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-forked.png"), full_page=True)


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
