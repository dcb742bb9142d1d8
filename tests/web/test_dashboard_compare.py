"""Replay and compare in the dashboard (Debian's headless Chromium driven by Playwright) against the real API
and worker: a job's Replay button trains it again and the replay shows its reproduction; jobs ticked in the
list open the compare view, whose spec diff, pair notes and overlaid curves (loss, val_loss, accuracy,
val_accuracy, learning rate) match `GET /v1/jobs/compare`. The screenshot goes to
var/test-artifacts/dashboard-compare.png (the README shows a copy, docs/dashboard-compare.png)."""
from __future__ import annotations

from typing import Any

import requests

from tests.conftest import tiny_spec, wait_until
from tests.web.test_dashboard import _screenshot, _sign_in, browser, page, pytestmark  # noqa: F401 (fixtures)

EPOCHS = 8


def _spec(name: str, learning_rate: float) -> dict[str, Any]:
    return tiny_spec(name=name, dataset={"id": "builtin:iris", "validation_split": 0.2, "normalize": "standardize"},
                     optimizer={"type": "adam", "learning_rate": learning_rate},
                     training={"epochs": EPOCHS, "batch_size": 16, "seed": 3})


def _wait(api_url: str, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    return wait_until(lambda: (job := requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=10).json())
                      ["status"] in ("succeeded", "failed", "cancelled") and job, 180, 0.3, f"job {job_id} to end")


def test_replay_then_compare_three_jobs_in_the_dashboard(page: Any, api_url: str, token: str, worker: Any,  # noqa: F811
                                                         capsys: Any) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    fast = requests.post(f"{api_url}/v1/jobs", json=_spec("iris-lr-0.02", 0.02), headers=auth, timeout=10).json()
    slow = requests.post(f"{api_url}/v1/jobs", json=_spec("iris-lr-0.002", 0.002), headers=auth, timeout=10).json()
    _wait(api_url, auth, fast["id"])
    _wait(api_url, auth, slow["id"])

    # The job page's Replay button: the page follows the replay to its end and shows its reproduction.
    page.goto(f"{api_url}/#/jobs/{fast['id']}")
    _sign_in(page, token)
    page.wait_for_selector("#job-view[data-status='succeeded'][data-live='ended']", timeout=60_000)
    page.click("#replay-job")
    hash_ = wait_until(lambda: (h := page.evaluate("location.hash")) != f"#/jobs/{fast['id']}" and h, 30, 0.2,
                       "the page to show the replay")
    replay_id = hash_.removeprefix("#/jobs/")
    replay = _wait(api_url, auth, replay_id)
    page.wait_for_selector("#job-view[data-status='succeeded'][data-live='ended']", timeout=60_000)
    assert replay["replay_of"] == fast["id"] and replay["reproduction"]["identical"] is True, replay
    facts = page.inner_text("#job-facts")
    assert fast["id"] in facts and "identical: every epoch's metrics match" in facts

    # Tick the three in the list; the button says how many, and opens the compare view.
    page.goto(f"{api_url}/#/")
    ids = [fast["id"], slow["id"], replay_id]
    assert page.is_disabled("#compare-selected")
    for job_id in ids:
        page.check(f"tr[data-job='{job_id}'] input.select-job")
    assert page.inner_text("#compare-selected") == "Compare selected (3)"
    page.click("#compare-selected")
    page.wait_for_selector("#compare-view[data-loaded='true']")
    body = requests.get(f"{api_url}/v1/jobs/compare", params={"ids": ",".join(ids)}, headers=auth, timeout=10).json()

    assert page.locator("#compare-jobs tbody tr").evaluate_all("rs => rs.map(r => r.dataset.job)") == ids
    # The spec diff: the rate and the name, a column per job.
    paths = page.locator("#spec-diff tr[data-path]").evaluate_all("rs => rs.map(r => r.dataset.path)")
    assert paths == list(body["spec_diff"]) == ["name", "optimizer.learning_rate"]
    rate_row = page.locator("#spec-diff tr[data-path='optimizer.learning_rate'] td.value").all_inner_texts()
    assert rate_row == ["0.02", "0.002", "0.02"]
    # The pairs: all three share seed 3; the replay matches its original, the other rate parts at epoch 1.
    pairs = {li.get_attribute("data-pair"): li.get_attribute("class") for li in page.locator("#compare-pairs li").all()}
    assert pairs == {f"{fast['id']},{slow['id']}": "diverged", f"{fast['id']},{replay_id}": "identical",
                     f"{slow['id']},{replay_id}": "diverged"}
    # A chart per metric, a curve per job with a point per epoch.
    assert body["metrics"] == ["loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"]
    for chart in ("loss", "val_loss", "accuracy", "val_accuracy", "lr"):
        series = page.locator(f"#compare-chart-{chart} .series")
        assert series.count() == 3, chart
        assert series.evaluate_all("gs => gs.map(g => g.dataset.points)") == [str(EPOCHS)] * 3, chart
    # The replay's curve lies on its original's, point for point; the other rate's does not.
    def ys(chart: str, i: int) -> list[str]:
        return page.locator(f"#compare-chart-{chart} .series").nth(i).locator("circle").evaluate_all(
            "cs => cs.map(c => c.getAttribute('cy'))")

    assert ys("loss", 0) == ys("loss", 2) and ys("loss", 0) != ys("loss", 1)
    # ...dashed, so the original's shows through.
    dashes = page.locator("#compare-chart-loss .series path").evaluate_all(
        "ps => ps.map(p => p.getAttribute('stroke-dasharray'))")
    assert dashes == [None, None, "6 4"]
    assert page.get_attribute("#compare-chart-lr svg", "data-scale") == "log"

    page.set_viewport_size({"width": 1280, "height": page.evaluate("document.documentElement.scrollHeight")})
    _screenshot(page, "dashboard-compare.png", capsys)
