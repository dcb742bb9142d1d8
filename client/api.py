"""`Trainyard`: a small synchronous client for the Trainyard HTTP API (see openapi.yaml)."""
from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from client.download import Download, download_verified
from client.errors import ConnectionFailed, JobFailed, ServerError, error_for_response

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of a job's stream."""

    id: int | None
    event: str
    data: Any
    retry: int | None = None  # the reconnection time (ms) the stream set with this event, if any


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the lines of a `text/event-stream` (comments skipped; data lines joined with newlines).

    As in the SSE standard, an event without an `id:` line keeps the last id seen."""
    event_id: int | None = None
    name = "message"
    data: list[str] = []
    retry: int | None = None
    for line in lines:
        if line == "":
            if data:
                yield Event(event_id, name, json.loads("\n".join(data)), retry)
            name, data, retry = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = int(value) if value.isdigit() else event_id
        elif field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "retry" and value.isdigit():
            retry = int(value)


def _seconds(header: str | None) -> float | None:
    """A `Retry-After` in seconds (the date form is not used by this API)."""
    return float(header) if header is not None and header.strip().isdigit() else None


#: `Trainyard.patch(name=...)` left out: the name stays as it is (None clears it).
UNCHANGED: Any = object()


def label_filters(labels: Mapping[str, str | None] | Iterable[str]) -> list[str]:
    """The list's `label` parameters: `key:value`, or `key` for "has this label"."""
    if isinstance(labels, Mapping):
        return [key if value is None else f"{key}:{value}" for key, value in labels.items()]
    if isinstance(labels, str):
        return [labels]
    return list(labels)


DEFAULT_URL = "http://127.0.0.1:8000"
DEV_TOKEN_FILE = Path("var") / "dev-token"
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


#: Where a token is looked for, in order (for messages: `find_token` says which one gave it).
TOKEN_SOURCE_ARGUMENT = "the token argument"
TOKEN_SOURCE_ENV = "TRAINYARD_TOKEN"


def find_token(token: str | None) -> tuple[str | None, str | None]:
    """(token, where it came from): the token given, else $TRAINYARD_TOKEN, else the one `make run` wrote
    to ./var/dev-token (its absolute path is the source); (None, None) when there is none."""
    if token:
        return token, TOKEN_SOURCE_ARGUMENT
    token = os.environ.get("TRAINYARD_TOKEN")
    if token:
        return token, TOKEN_SOURCE_ENV
    try:
        token = DEV_TOKEN_FILE.read_text().strip() or None
    except OSError:
        return None, None
    return (token, str(DEV_TOKEN_FILE.absolute())) if token else (None, None)


def resolve_token(token: str | None) -> str | None:
    """The token given, else $TRAINYARD_TOKEN, else the one `make run` wrote to ./var/dev-token."""
    return find_token(token)[0]


class Trainyard:
    """Talks to one Trainyard server as one tenant (the token's).

    `url` defaults to $TRAINYARD_URL, then http://127.0.0.1:8000; `token` to $TRAINYARD_TOKEN, then the
    contents of ./var/dev-token. Every method raises a `TrainyardError` subclass on failure.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 session: requests.Session | None = None) -> None:
        self.url = (url or os.environ.get("TRAINYARD_URL") or DEFAULT_URL).rstrip("/")
        self.token, self.token_source = find_token(token)
        self.timeout = timeout
        self.session = session or requests.Session()
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    # ---------------------------------------------------------------- plumbing
    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """One request; a status outside `ok` raises the typed error built from the problem document."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            resp = self.session.request(method, self.url + path, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ConnectionFailed("Cannot reach the Trainyard API",
                                   f"{method} {self.url}{path} failed: {exc.__class__.__name__}") from exc
        if resp.status_code not in ok:
            err = error_for_response(resp)
            resp.close()
            raise err
        return resp

    def _json(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        return self.request(method, path, ok=ok, **kwargs).json()

    # ---------------------------------------------------------------- jobs
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Validate and queue a job; returns the job with its normalised spec."""
        return self._json("POST", "/v1/jobs", ok=(201,), json=spec)

    def fork(self, job_id: str, *, patch: dict[str, Any] | None = None, apply_findings: Sequence[str] | None = None,
             from_: str | int | dict[str, int] | None = None) -> dict[str, Any]:
        """A new job from `job_id`'s spec with the findings' suggested changes and `patch` (a JSON merge patch)
        applied; `from_` is "scratch" (the server's default), "best", "last" or an epoch (an int). Returns
        the child, queued, with `parent`."""
        body: dict[str, Any] = {}
        if patch:
            body["patch"] = patch
        if apply_findings:
            body["apply_findings"] = list(apply_findings)
        if from_ is not None:
            body["from"] = {"epoch": from_} if isinstance(from_, int) else from_
        return self._json("POST", f"/v1/jobs/{job_id}/fork", ok=(201,), json=body)

    def replay(self, job_id: str) -> dict[str, Any]:
        """Train the ended job `job_id` again with the same spec, data and seed. Returns the replay, queued,
        with `replay_of`; once it ends it carries `reproduction` (whether every epoch's metrics matched)."""
        return self._json("POST", f"/v1/jobs/{job_id}/replay", ok=(201,))

    def compare(self, job_ids: Sequence[str]) -> dict[str, Any]:
        """2 to 8 jobs side by side: `spec_diff`, `environment_diff`, per-epoch `epochs`, and `pairs` (where
        jobs with the same seed part)."""
        return self._json("GET", "/v1/jobs/compare", params={"ids": ",".join(job_ids)})

    def get(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, status: str | None = None, limit: int = 20, cursor: str | None = None, *,
                  labels: Mapping[str, str | None] | Iterable[str] | None = None, name: str | None = None,
                  sort: str | None = None) -> dict[str, Any]:
        """One page: `{"jobs": [...], "next_cursor": str | None}`, newest first unless `sort` says
        `-best_value` or `best_value` (jobs without a best value last either way).

        `labels`: jobs with every one of these, `{"team": "vision", "baseline": None}` (None: has the key,
        any value) or the API's own `["team:vision", "baseline"]`; `name`: a substring of the name, any case.
        """
        params: dict[str, Any] = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor,
                                                    "name": name, "sort": sort}.items() if v is not None}
        if labels:
            params["label"] = label_filters(labels)
        return self._json("GET", "/v1/jobs", params=params)

    list = list_jobs

    def iter_jobs(self, status: str | None = None, page_size: int = 100, *,
                  labels: Mapping[str, str | None] | Iterable[str] | None = None, name: str | None = None,
                  sort: str | None = None) -> Iterator[dict[str, Any]]:
        """Every job that matches (as `list_jobs`), following `next_cursor` page by page."""
        cursor = None
        while True:
            page = self.list_jobs(status=status, limit=page_size, cursor=cursor, labels=labels, name=name, sort=sort)
            yield from page["jobs"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def patch(self, job_id: str, *, labels: Mapping[str, str | None] | None = None, name: Any = UNCHANGED,
              if_match: str | None = None) -> dict[str, Any]:
        """Change a job's labels (merged: a value of None removes that label, others are kept) and/or its
        name (None clears it), whatever its status; returns the job. With `if_match` (an `ETag` of
        `GET /v1/jobs/{id}`), only if the job has not changed since (else `PreconditionFailed`, 412)."""
        body: dict[str, Any] = {}
        if labels is not None:
            body["labels"] = dict(labels)
        if name is not UNCHANGED:
            body["name"] = name
        headers = {"If-Match": if_match} if if_match else {}
        return self._json("PATCH", f"/v1/jobs/{job_id}", json=body, headers=headers)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """A queued job ends at once; a running one stops at the next batch (poll or `wait` for it)."""
        return self._json("POST", f"/v1/jobs/{job_id}/cancel", ok=(202,))

    # ---------------------------------------------------------------- sweeps
    def submit_sweep(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a sweep (POST /v1/sweeps); returns it with its first trials queued."""
        return self._json("POST", "/v1/sweeps", ok=(201,), json=body)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        """The sweep with its trials ranked, importances and (multi-objective) Pareto front."""
        return self._json("GET", f"/v1/sweeps/{sweep_id}")

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/sweeps/{sweep_id}/cancel", ok=(202,))

    def resume_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/sweeps/{sweep_id}/resume", ok=(202,))

    def extend_sweep(self, sweep_id: str, max_trials: int) -> dict[str, Any]:
        return self._json("PATCH", f"/v1/sweeps/{sweep_id}", json={"max_trials": max_trials})

    def delete(self, job_id: str) -> None:
        self.request("DELETE", f"/v1/jobs/{job_id}", ok=(204,)).close()

    def metrics(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        """Per-epoch rows (epoch counts from 1), only those after epoch `after`."""
        return self._json("GET", f"/v1/jobs/{job_id}/metrics", params={"after": after})["epochs"]

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/jobs/{job_id}/checkpoints")["checkpoints"]

    def card(self, job_id: str) -> dict[str, Any]:
        """The job's model card (`GET /v1/jobs/{id}/card`); 409 (`Conflict`) until the job has ended."""
        return self._json("GET", f"/v1/jobs/{job_id}/card")

    def diagnostics(self, job_id: str) -> dict[str, Any]:
        """`{"variables": [...], "epochs": [...], "findings": [...]}`, findings most severe first."""
        return self._json("GET", f"/v1/jobs/{job_id}/diagnostics")

    def wait(self, job_id: str, on_epoch: Callable[[dict[str, Any]], Any] | None = None, *, poll: float = 0.5,
             timeout: float | None = None, raise_on_failure: bool = False,
             on_finding: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """Poll until the job ends and return it, calling `on_epoch(row)` once per new epoch, in order, and
        `on_finding(finding)` once per finding (by its `id`), after the epochs of the poll that found it.

        Raises `TimeoutError` after `timeout` seconds, and `JobFailed` when `raise_on_failure` is set and
        the job ended `failed` or `cancelled`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        findings_seen: set[str] = set()
        while True:
            # Read the job before its metrics: once it is final, every row it wrote is already visible.
            job = self.get(job_id)
            if on_epoch is not None:
                for row in self.metrics(job_id, after=seen):
                    seen = row["epoch"]
                    on_epoch(row)
            # The job counts its findings (one per id): the diagnostics are read only when there are new ones.
            if on_finding is not None and (job.get("findings") or {}).get("count", 0) > len(findings_seen):
                for finding in self.diagnostics(job_id)["findings"]:
                    if finding["id"] not in findings_seen:
                        findings_seen.add(finding["id"])
                        on_finding(finding)
            if job["status"] in FINAL_STATUSES:
                if raise_on_failure and job["status"] != "succeeded":
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(poll)

    def events(self, job_id: str, last_event_id: int | None = None, *, read_timeout: float = 60.0,
               reconnects: int = 5) -> Iterator[Event]:
        """The job's live events (`GET /v1/jobs/{id}/events`), parsed, until the stream's `end` event.

        Yields `Event`s (`.id`, `.event`: status | epoch | finding | end, `.data`: the parsed JSON); the
        last one is `end`. The stream is resumed from the last id received (up to `reconnects` times in a
        row), so no event is lost or repeated: when the connection drops, when the server ends the stream
        with an `error` event (its database went away; it says when to come back in `retry`), and when
        reconnecting is answered 503 (after its `Retry-After`). Keep-alive comments are skipped. Raises
        `NotFound` for an unknown job, or when the server has no events endpoint (an older server).
        """
        last = last_event_id
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            wait: float | None = None  # what the server asked for, else our own backoff
            try:
                resp = self.request("GET", f"/v1/jobs/{job_id}/events", headers=headers, stream=True,
                                    timeout=(self.timeout, read_timeout), ok=(200, 503))
                with resp:
                    if resp.status_code == 503:
                        failures += 1
                        if failures > reconnects:
                            raise error_for_response(resp)
                        wait = _seconds(resp.headers.get("Retry-After"))
                    else:
                        for event in parse_sse(resp.iter_lines(decode_unicode=True)):
                            if event.event == "error":
                                failures += 1
                                logger.warning("event stream of %s ended with an error: %s", job_id, event.data)
                                if failures > reconnects:
                                    raise ServerError("The event stream kept failing",
                                                      str((event.data or {}).get("detail", "")), status=503)
                                wait = None if event.retry is None else event.retry / 1000
                                break
                            failures = 0
                            last = event.id if event.id is not None else last
                            yield event
                            if event.event == "end":
                                return
            except ConnectionFailed:
                failures += 1
                if failures > reconnects:
                    raise
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                failures += 1
                if failures > reconnects:
                    raise ConnectionFailed("The event stream broke",
                                           f"{self.url}/v1/jobs/{job_id}/events: {exc.__class__.__name__}") from exc
            # The server closed the stream early or the connection broke: resume after the last event.
            time.sleep(min(wait, 60.0) if wait is not None else min(0.5 * 2**failures, 5.0))

    def download_best(self, job_id: str, path: str | os.PathLike[str], *, format: str = "keras",
                      on_progress: Callable[[int, int], Any] | None = None) -> Download:
        """Stream the best checkpoint to `path`, verified against its SHA-256.

        `format="savedmodel"`, `"keras-serving"` or `"onnx"` downloads the `.tar.gz` of that export
        instead (made when the job succeeds): a model on raw inputs answering raw target units, with the
        model card as `card.json`. Bytes go to `<path>.part` first and are renamed only once verified; an
        existing `.part` is resumed with a Range request (guarded by If-Range), and downloaded again
        from scratch if the resumed file does not verify. `on_progress(done, total)` is called as bytes
        arrive.
        """
        return download_verified(self, job_id, Path(path), on_progress=on_progress, fmt=format)

    def download_tensorboard(self, job_id: str, out_dir: str | os.PathLike[str]) -> Path:
        """Write the job's TensorBoard event files under `out_dir/<job_id>/{train,validation}`.

        Returns `out_dir/<job_id>`; `tensorboard --logdir out_dir` shows every job downloaded there.
        """
        out = Path(out_dir)
        resp = self.request("GET", f"/v1/jobs/{job_id}/tensorboard", timeout=max(self.timeout, 300))
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(resp.content), mode="r:gz") as tar:
            # "data": no absolute paths, no links out of `out`, no device files, whatever the archive says.
            tar.extractall(out, filter="data")
        return out / job_id

    # ---------------------------------------------------------------- datasets
    def upload_dataset(self, path: str | os.PathLike[str], *, target: str | None = None,
                       format: str | None = None) -> dict[str, Any]:
        """Upload an `.npz` or `.csv` (with `target`, the column to predict); returns the stored data set."""
        path = Path(path)
        params = {k: v for k, v in {"name": path.name, "target": target, "format": format}.items() if v is not None}
        # The file is the body (no multipart form to build or parse), sent from disk with its length.
        with path.open("rb") as fh:
            return self._json("POST", "/v1/datasets", ok=(201,), data=fh, params=params,
                              headers={"Content-Type": "application/octet-stream"}, timeout=max(self.timeout, 300))

    def datasets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/datasets")["datasets"]

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/v1/datasets/{dataset_id}", ok=(204,)).close()
