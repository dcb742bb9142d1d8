"""The dashboard's sweep page in headless Chromium against the real API and worker: the sweeps list, then
one sweep's trials table, objective per trial, best-so-far curve and parameter-vs-objective plots, each
checked against the API's numbers."""
from __future__ import annotations

from typing import Any

import requests

from tests.conftest import tiny_spec, wait_until
from tests.web.test_dashboard import ARTIFACTS, _sign_in, browser, page, pytestmark  # noqa: F401 (fixtures)


def test_the_sweep_page_draws_the_trials(page: Any, api_url: str, token: str, worker: Any) -> None:  # noqa: F811
    auth = {"Authorization": f"Bearer {token}"}
    body = {"name": "dashboard sweep", "seed": 6, "max_trials": 4, "parallelism": 2,
            "base": tiny_spec(training={"epochs": 3, "batch_size": 16, "seed": 1},
                              diagnostics={"enabled": False, "preflight": False}),
            "search": {"optimizer.learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 0.1},
                       "model.layers[0].units": {"type": "int_uniform", "low": 2, "high": 16},
                       "model.layers[0].activation": {"type": "choice", "values": ["relu", "tanh"]}},
            "objective": {"metric": "val_loss"}, "algorithm": {"type": "tpe", "n_startup_trials": 2}}
    resp = requests.post(f"{api_url}/v1/sweeps", json=body, headers=auth, timeout=30)
    assert resp.status_code == 201, resp.text
    sweep_id = resp.json()["id"]
    sweep = wait_until(lambda: (s := requests.get(f"{api_url}/v1/sweeps/{sweep_id}", headers=auth, timeout=30).json())
                       ["status"] != "running" and s, 240, 0.5, "the sweep to finish")
    assert sweep["status"] == "completed"

    page.goto(api_url + "/#/sweeps")
    _sign_in(page, token)
    page.wait_for_selector(f"tr[data-sweep='{sweep_id}']")
    assert page.inner_text(f"tr[data-sweep='{sweep_id}'] a") == "dashboard sweep"
    page.click(f"tr[data-sweep='{sweep_id}'] a")
    page.wait_for_selector("#sweep-view[data-status='completed'][data-trials='4']")

    trials = sorted(sweep["trials"], key=lambda t: t["trial"])
    rows = page.locator("#sweep-trials tr").evaluate_all("rs => rs.map(r => +r.dataset.trial)")
    assert rows == [t["trial"] for t in sweep["trials"]]  # ranked, best first, as the API lists them

    def circles(selector: str, attr: str) -> list[float]:
        return page.locator(f"{selector} circle").evaluate_all(f"cs => cs.map(c => +c.getAttribute('{attr}'))")

    assert circles("#chart-sweep-objective .series", "data-epoch") == [t["trial"] for t in trials]
    best_y = circles("#chart-sweep-best .series", "cy")
    assert len(best_y) == 4 and best_y == sorted(best_y)  # val_loss only falls; SVG y grows downwards
    lr = page.locator("figure[data-param='optimizer.learning_rate']")
    assert lr.locator("svg").get_attribute("data-scale") == "log"
    assert sorted(circles("figure[data-param='optimizer.learning_rate']", "data-x")) == sorted(
        t["params"]["optimizer.learning_rate"] for t in trials)
    assert sorted(circles("figure[data-param='model.layers[0].units']", "data-y")) == sorted(t["value"] for t in trials)
    assert page.locator("figure[data-param='model.layers[0].activation']").count() == 0  # strings have no axis
    facts = page.inner_text("#sweep-facts")
    assert "tpe" in facts and f"trial {sweep['best']['trial']}" in facts
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sweep-page.png"), full_page=True)
