"""`trainyard`: the command line on top of `client.Trainyard`.

Exit codes: 0 success; 1 the job failed or was cancelled (`submit --wait`, `watch`); 2 usage error;
3 the API answered with an error (its problem document is printed); 4 the API could not be reached.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from client import render
from client.api import (DEFAULT_URL, DEV_TOKEN_FILE, FINAL_STATUSES, TOKEN_SOURCE_ARGUMENT, TOKEN_SOURCE_ENV,
                        Trainyard)
from client.errors import ConnectionFailed, NotFound, TrainyardError, Unauthorized

EXIT_JOB_FAILED = 1
EXIT_API_ERROR = 3
EXIT_CONNECTION = 4

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
SORTS = ("-created_at", "-best_value", "best_value")


class TrainyardGroup(click.Group):
    """Turns client errors into a printed problem and a meaningful exit code, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConnectionFailed as exc:
            click.echo(f"error: {exc.title}: {exc.detail}", err=True)
            ctx.exit(EXIT_CONNECTION)
        except Unauthorized as exc:
            _echo_unauthorized(ctx, exc)
            ctx.exit(EXIT_API_ERROR)
        except TrainyardError as exc:
            _echo_problem(exc)
            ctx.exit(EXIT_API_ERROR)


def _echo_problem(exc: TrainyardError) -> None:
    """The problem's title and detail once, then each field error once.

    A validation problem's detail restates its first errors ("The job spec is not valid: a: ...; b: ...");
    those are listed below it, so only the detail's lead-in is printed."""
    line = f"error: {exc.title}" + (f" ({exc.status})" if exc.status else "")
    detail = exc.detail
    if exc.errors and detail:
        first = exc.errors[0]
        at = detail.find(f"{first.get('field') or 'body'}: {first.get('message')}")
        if at > 0:
            detail = detail[:at].rstrip(" :") + ":"
    click.echo(f"{line}: {detail}" if detail else line, err=True)
    for item in exc.errors:
        click.echo(f"  {item.get('field') or '(body)'}: {item.get('message')}", err=True)


TOKEN_HELP = ("`make run` prints one and writes it to var/dev-token; an operator creates one with "
              "`flask --app service tokens create --tenant <name>`. Pass it with --token or TRAINYARD_TOKEN.")


def _echo_unauthorized(ctx: click.Context, exc: Unauthorized) -> None:
    """A 401 says which token was sent and where it came from, or, with none, where the CLI looked."""
    ty = ctx.find_object(Trainyard)
    if ty is None or not ty.token:
        found = DEV_TOKEN_FILE.absolute()
        state = "empty" if found.is_file() else "not found"
        click.echo(f"error: No API token (the server answered {exc.title} ({exc.status})).", err=True)
        click.echo(f"  looked at: --token, TRAINYARD_TOKEN, ./var/dev-token ({found}: {state})", err=True)
        click.echo(f"  get one: {TOKEN_HELP}", err=True)
        return
    _echo_problem(exc)
    source = ty.token_source
    if source == TOKEN_SOURCE_ARGUMENT:  # click read --token from the command line or from the environment
        from_env = ctx.get_parameter_source("token") == click.core.ParameterSource.ENVIRONMENT
        source = TOKEN_SOURCE_ENV if from_env else "--token"
    click.echo(f"  the token came from {source}; get a valid one: {TOKEN_HELP}", err=True)


def _client(ctx: click.Context) -> Trainyard:
    return ctx.find_object(Trainyard)  # type: ignore[return-value]


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _is_tty() -> bool:
    return sys.stdout.isatty()


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of text.")


@click.group(cls=TrainyardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="TRAINYARD_URL", default=DEFAULT_URL, show_default=True, show_envvar=True,
              help="The Trainyard API.")
@click.option("--token", envvar="TRAINYARD_TOKEN", show_envvar=True,
              help="API token (default: the contents of ./var/dev-token, which `make run` writes).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per HTTP request.")
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None, timeout: float) -> None:
    """Submit, follow and download Trainyard training jobs."""
    ctx.obj = Trainyard(url, token, timeout=timeout)


# ------------------------------------------------------------------ jobs
@main.command()
@click.argument("spec", type=click.File("r"))
@click.option("--wait", "wait_", is_flag=True, help="Follow the job until it ends (exit 1 if it does not succeed).")
@click.option("--poll", type=float, default=0.5, show_default=True, help="Seconds between polls with --wait.")
@json_option
@click.pass_context
def submit(ctx: click.Context, spec: Any, wait_: bool, poll: float, as_json: bool) -> None:
    """Submit the job spec in SPEC (a JSON file, or - for stdin)."""
    job = _client(ctx).submit(_read_json(spec, "SPEC"))
    _announce(job, wait_, as_json)
    if wait_:
        _follow(ctx, job, poll, as_json)


def _read_json(file: Any, hint: str) -> Any:
    try:
        return json.load(file)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=hint) from exc


def _announce(created: dict[str, Any], wait_: bool, as_json: bool) -> None:
    """What `submit` says of the job or sweep it created: the JSON (unless following it, which prints it at
    the end), or its id."""
    if as_json:
        if not wait_:
            _print_json(created)
    else:
        click.echo(f"submitted {created['id']}" + ("" if wait_ else f" ({created['status']})"))


ALL_FINDINGS = "*"


def parse_settings(settings: tuple[str, ...]) -> dict[str, Any]:
    """`--set path=value ...` as one JSON merge patch: `optimizer.learning_rate=0.01` is
    `{"optimizer": {"learning_rate": 0.01}}`. A value is read as JSON (numbers, true, null, lists,
    objects), anything else as a string; `null` removes the field, which takes its default."""
    patch: dict[str, Any] = {}
    for item in settings:
        path, sep, text = item.partition("=")
        parts = path.strip().split(".")
        if not sep or not all(parts):
            raise click.BadParameter(f"{item!r} is not PATH=VALUE (e.g. optimizer.learning_rate=0.01)",
                                     param_hint="--set")
        if any("[" in part for part in parts):
            raise click.BadParameter(f"{path!r}: a merge patch replaces a list whole; set the whole list, "
                                     "e.g. model.layers='[...]'", param_hint="--set")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        node = patch
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise click.BadParameter(f"{path!r} sets a field inside a value set by another --set",
                                         param_hint="--set")
        if isinstance(node.get(parts[-1]), dict):
            raise click.BadParameter(f"{path!r} replaces fields set by another --set", param_hint="--set")
        node[parts[-1]] = value
    return patch


def parse_from(value: str) -> str | int:
    if value in ("scratch", "best", "last"):
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter("must be scratch, best, last or an epoch number", param_hint="--from")


@main.command()
@click.argument("job_id")
@click.option("--apply-findings", "apply_findings", is_flag=False, flag_value=ALL_FINDINGS, default=None,
              metavar="[IDS]", help="Apply the job's findings' suggested changes: every finding that has one, "
                                    "or the comma-separated finding ids given (after JOB_ID).")
@click.option("--set", "settings", multiple=True, metavar="PATH=VALUE",
              help="Set a field of the child's spec, e.g. optimizer.learning_rate=0.01 (VALUE is JSON, or "
                   "else a string); repeatable, and wins over a finding's suggestion.")
@click.option("--from", "from_", default="scratch", show_default=True, metavar="scratch|best|last|EPOCH",
              help="Start from scratch, or from the job's best checkpoint, last backup or an epoch's checkpoint "
                   "(weights only: the optimizer starts fresh).")
@click.option("--wait", "wait_", is_flag=True, help="Follow the child until it ends (exit 1 if it does not succeed).")
@click.option("--poll", type=float, default=0.5, show_default=True, help="Seconds between polls with --wait.")
@json_option
@click.pass_context
def fork(ctx: click.Context, job_id: str, apply_findings: str | None, settings: tuple[str, ...], from_: str,
         wait_: bool, poll: float, as_json: bool) -> None:
    """Make a new job from JOB_ID's spec with its findings' fixes and/or --set changes."""
    patch = parse_settings(settings)
    source = parse_from(from_)
    ty = _client(ctx)
    ids: list[str] = []
    if apply_findings == ALL_FINDINGS:
        ids = [f["id"] for f in ty.diagnostics(job_id)["findings"] if f.get("suggested_change")]
        if not ids:
            raise click.UsageError(f"{job_id} has no finding with a suggested change; use --set to change "
                                   "the spec yourself")
    elif apply_findings:
        ids = [i.strip() for i in apply_findings.split(",") if i.strip()]
    child = ty.fork(job_id, patch=patch, apply_findings=ids, from_=source)
    if as_json and not wait_:
        _print_json(child)
        return
    if not as_json:
        changes = render.patch_text(child["parent"]["patch"]) or "no changes"
        applied = ", ".join(child["parent"]["applied_findings"]) or "none"
        click.echo(f"forked {job_id} -> {child['id']} ({child['status']}); from {from_}; "
                   f"findings applied: {applied}; changes: {changes}")
    if wait_:
        _follow(ctx, child, poll, as_json)


@main.command()
@click.argument("job_id")
@click.option("--wait", "wait_", is_flag=True,
              help="Follow the replay until it ends and show its reproduction (exit 1 if it does not succeed).")
@click.option("--poll", type=float, default=0.5, show_default=True, help="Seconds between polls with --wait.")
@json_option
@click.pass_context
def replay(ctx: click.Context, job_id: str, wait_: bool, poll: float, as_json: bool) -> None:
    """Train the ended job JOB_ID again with the same spec, data and seed, and check it reproduces."""
    job = _client(ctx).replay(job_id)
    if as_json and not wait_:
        _print_json(job)
        return
    if not as_json:
        click.echo(f"replaying {job_id} -> {job['id']} ({job['status']})")
    if wait_:
        _follow(ctx, job, poll, as_json)


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@json_option
@click.pass_context
def compare(ctx: click.Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Compare 2 to 8 jobs: spec and environment diffs, where same-seed runs part, and every epoch's
    metrics side by side."""
    if not 2 <= len(job_ids) <= 8:
        raise click.UsageError(f"give 2 to 8 job ids; got {len(job_ids)}")
    body = _client(ctx).compare(job_ids)
    if as_json:
        _print_json(body)
    else:
        click.echo(render.comparison_text(body))


@main.command()
@click.argument("job_id")
@click.option("--poll", type=float, default=0.5, show_default=True,
              help="Seconds between polls, when the server has no event stream.")
@json_option
@click.pass_context
def watch(ctx: click.Context, job_id: str, poll: float, as_json: bool) -> None:
    """Follow JOB_ID epoch by epoch and finding by finding, then print a summary (exit 1 if it failed,
    including a stop by diagnosis, or was cancelled)."""
    _follow(ctx, _client(ctx).get(job_id), poll, as_json)


class _Eta:
    """The job's `eta` for the live line: read again at most every `REFRESH` seconds while the job is
    not final (at once while it is still queued: its first epoch means it runs), counted down in between
    with this machine's clock (so a server's clock that differs does not matter)."""

    REFRESH = 2.0

    def __init__(self, ty: Trainyard, job: dict[str, Any]) -> None:
        self.ty, self.job, self.read_at = ty, job, time.monotonic()

    def seconds_left(self) -> float | None:
        now = time.monotonic()
        status = self.job["status"]
        if status not in FINAL_STATUSES and (status != "running" or now - self.read_at >= self.REFRESH):
            try:
                self.job, self.read_at = self.ty.get(self.job["id"]), now
            except TrainyardError:  # the line goes on without a fresh estimate; the stream says what broke
                pass
        eta = self.job.get("eta") if self.job["status"] not in FINAL_STATUSES else None
        return None if not eta else max(eta["seconds"] - (now - self.read_at), 0.0)


def _follow(ctx: click.Context, job: dict[str, Any], poll: float, as_json: bool) -> None:
    ty = _client(ctx)
    epochs = job["progress"]["epochs"]
    tty = _is_tty() and not as_json
    metric, eta = render.first_metric(job), _Eta(ty, job)

    def on_epoch(row: dict[str, Any]) -> None:
        line = render.epoch_line(row, epochs, metric, eta.seconds_left())
        if tty:
            width = 24
            filled = int(width * min(row["epoch"], epochs) / epochs) if epochs else 0
            click.echo(f"\r[{'#' * filled}{'-' * (width - filled)}] {line}\x1b[K", nl=False)
        else:
            click.echo(line)

    def on_finding(finding: dict[str, Any]) -> None:
        if tty:
            click.echo("\r\x1b[K", nl=False)  # over the progress line; the next epoch draws it again
        click.echo(render.finding_line(finding))

    try:
        final = _follow_events(ty, job["id"], None if as_json else on_epoch, None if as_json else on_finding)
        if final is None:  # a server without the events endpoint: poll instead
            final = ty.wait(job["id"], on_epoch=None if as_json else on_epoch, poll=poll,
                            on_finding=None if as_json else on_finding)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching; {job['id']} goes on (trainyard watch {job['id']})", err=True)
        ctx.exit(130)
    if as_json:
        _print_json(final)
    else:
        if tty:
            click.echo()
        click.echo()
        click.echo(render.job_summary(final))
    if final["status"] != "succeeded":
        ctx.exit(EXIT_JOB_FAILED)


def _follow_events(ty: Trainyard, job_id: str, on_epoch: Any, on_finding: Any = None) -> dict[str, Any] | None:
    """Follow the job's event stream until it ends and return the job; None when the server has no stream.

    Each epoch is shown once, in order, like the polling path (a resumed run that re-does an epoch
    sends it again; it is not printed twice). Each finding is shown once, when it first arrives (the
    stream sends it again when its evidence changes; `trainyard diagnostics` shows the latest)."""
    shown = 0
    findings_shown: set[str] = set()
    try:
        for event in ty.events(job_id):
            if event.event == "epoch" and on_epoch is not None and event.data["epoch"] > shown:
                shown = event.data["epoch"]
                on_epoch(event.data)
            elif event.event == "finding" and on_finding is not None:
                key = event.data.get("id") or f"{event.data.get('code')}:{event.data.get('layer') or '-'}"
                if key not in findings_shown:
                    findings_shown.add(key)
                    on_finding(event.data)
    except NotFound:
        if shown:
            raise
        ty.get(job_id)  # the job exists (or this raises NotFound for it): so the endpoint is missing
        return None
    return ty.get(job_id)


@main.command()
@click.argument("job_id")
@json_option
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job: status, progress, best value, test metrics, stop reason."""
    job = _client(ctx).get(job_id)
    if as_json:
        _print_json(job)
    else:
        click.echo(render.job_summary(job))


@main.command("list")
@click.option("--status", "status_", type=click.Choice(STATUSES), help="Only jobs in this status.")
@click.option("--label", "labels", multiple=True, metavar="KEY[:VALUE]",
              help="Only jobs with this label (any value with KEY alone); repeat for several, all must match.")
@click.option("--name", help="Only jobs whose name holds this text (any case).")
@click.option("--sort", type=click.Choice(SORTS), default="-created_at", show_default=True,
              help="Newest first, or by best monitored value (jobs without one last).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="Jobs to show.")
@json_option
@click.pass_context
def list_(ctx: click.Context, status_: str | None, labels: tuple[str, ...], name: str | None, sort: str,
          limit: int, as_json: bool) -> None:
    """List your jobs, newest first (or as --sort says)."""
    page = _client(ctx).list_jobs(status=status_, limit=limit, labels=labels, name=name, sort=sort)
    if as_json:
        _print_json(page)
    elif not page["jobs"]:
        click.echo("no jobs")
    else:
        click.echo(render.jobs_table(page["jobs"]))


def _label_changes(changes: tuple[str, ...]) -> dict[str, str | None]:
    """`key=value` sets a label, `key-` removes it (kubectl's notation)."""
    out: dict[str, str | None] = {}
    for change in changes:
        key, eq, value = change.partition("=")
        if eq:
            out[key] = value
        elif change.endswith("-") and len(change) > 1:
            out[change[:-1]] = None
        else:
            raise click.BadParameter(f"{change!r}: write key=value to set a label, key- to remove it.",
                                     param_hint="CHANGES")
    return out


@main.command()
@click.argument("job_id")
@click.argument("changes", nargs=-1, metavar="[KEY=VALUE | KEY-]...")
@click.option("--name", help="Rename the job too (an empty string clears its name).")
@json_option
@click.pass_context
def label(ctx: click.Context, job_id: str, changes: tuple[str, ...], name: str | None, as_json: bool) -> None:
    """Set (KEY=VALUE) or remove (KEY-) a job's labels, and rename it with --name; other labels stay."""
    if not changes and name is None:
        raise click.UsageError("Give at least one KEY=VALUE or KEY- change, or --name.")
    extra: dict[str, Any] = {} if name is None else {"name": name or None}
    job = _client(ctx).patch(job_id, labels=_label_changes(changes) if changes else None, **extra)
    if as_json:
        _print_json(job)
    else:
        click.echo(render.job_summary(job))


@main.command()
@click.argument("job_id")
@click.option("--csv", "as_csv", is_flag=True, help="Comma-separated values with a header row.")
@json_option
@click.pass_context
def metrics(ctx: click.Context, job_id: str, as_csv: bool, as_json: bool) -> None:
    """Per-epoch metrics of JOB_ID as a table (or --csv, --json)."""
    if as_csv and as_json:
        raise click.UsageError("--csv and --json cannot be used together")
    rows = _client(ctx).metrics(job_id)
    if as_json:
        _print_json(rows)
    elif as_csv:
        columns = render.metric_columns(rows)
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif not rows:
        click.echo("no epochs finished yet")
    else:
        click.echo(render.metrics_table(rows))


@main.command()
@click.argument("job_id")
@json_option
@click.pass_context
def diagnostics(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Training diagnostics of JOB_ID: findings first, then the last epoch's per-variable dynamics, then the
    learning-rate range test when the job ran one."""
    diag = _client(ctx).diagnostics(job_id)
    if as_json:
        _print_json(diag)
        return
    findings = diag.get("findings") or []
    click.echo(f"findings ({len(findings)})")
    click.echo(render.findings_text(findings))
    epochs = diag.get("epochs") or []
    if epochs:
        last = epochs[-1]
        click.echo()
        click.echo(f"variables at epoch {last['epoch']} (of {len(epochs)} recorded)")
        click.echo(render.variables_table(last))
    if diag.get("lr_range_test"):
        click.echo()
        click.echo(render.range_test_text(diag["lr_range_test"]))


@main.command()
@click.argument("job_id")
@json_option
@click.pass_context
def cancel(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Cancel JOB_ID: a queued job ends at once, a running one at its next batch."""
    job = _client(ctx).cancel(job_id)
    if as_json:
        _print_json(job)
    elif job["status"] in FINAL_STATUSES:
        click.echo(f"{job['id']} {job['status']}")
    else:
        click.echo(f"cancel requested for {job['id']} ({job['status']}); it stops at its next batch")


DOWNLOAD_SUFFIXES = {"keras": ".keras", "savedmodel": ".savedmodel.tar.gz",
                     "keras-serving": ".keras-serving.tar.gz", "onnx": ".onnx.tar.gz"}


@main.command()
@click.argument("job_id")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="File (or existing folder) to write; default ./JOB_ID.keras (./JOB_ID.savedmodel.tar.gz).")
@click.option("--format", "fmt", type=click.Choice(list(DOWNLOAD_SUFFIXES)), default="keras", show_default=True,
              help="keras: the .keras checkpoint (normalised inputs); savedmodel, keras-serving, onnx: a .tar.gz "
                   "of a model for serving that takes raw inputs and answers raw target units, with card.json.")
@click.pass_context
def download(ctx: click.Context, job_id: str, out: Path | None, fmt: str) -> None:
    """Download JOB_ID's best checkpoint, verified against its SHA-256 (resumes a .part left behind)."""
    name = f"{job_id}{DOWNLOAD_SUFFIXES[fmt]}"
    path = out or Path(name)
    if path.is_dir():
        path = path / name
    if _is_tty():
        bar: Any = None

        def on_progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None or bar.length != total or done < bar.pos:
                if bar is not None:
                    bar.render_finish()
                bar = click.progressbar(length=total, label=path.name, show_pos=True)
                bar.render_progress()
            bar.update(done - bar.pos)

        try:
            result = _client(ctx).download_best(job_id, path, format=fmt, on_progress=on_progress)
        finally:
            if bar is not None:
                bar.render_finish()
    else:
        result = _client(ctx).download_best(job_id, path, format=fmt)
    how = ""
    if result.restarted:
        how = " (a partial file did not match and was downloaded again)"
    elif result.resumed_from:
        how = f" (resumed at byte {result.resumed_from})"
    click.echo(f"saved {result.path} ({result.size} bytes, sha256 {result.sha256}){how}")


@main.command()
@click.argument("job_id")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("tensorboard"),
              show_default=True, help="Log folder; the job's runs go to OUT/JOB_ID/{train,validation}.")
@click.pass_context
def tensorboard(ctx: click.Context, job_id: str, out: Path) -> None:
    """Write JOB_ID's curves and diagnostics as TensorBoard event files (current even while it runs)."""
    folder = _client(ctx).download_tensorboard(job_id, out)
    runs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    click.echo(f"wrote {folder} ({', '.join(runs)}); view with: tensorboard --logdir {out}")


@main.command()
@click.argument("job_id")
@click.pass_context
def card(ctx: click.Context, job_id: str) -> None:
    """Print JOB_ID's model card (JSON): spec, data, normalisation, best, test metrics, environment, exports."""
    _print_json(_client(ctx).card(job_id))


# ------------------------------------------------------------------ sweeps
@main.group()
def sweep() -> None:
    """Start, follow, show, extend, resume and cancel sweeps."""


def _sweep_text(sw: dict[str, Any]) -> str:
    progress = sw["progress"]
    counts = ", ".join(f"{n} {status}" for status, n in progress["by_status"].items() if n)
    objective = " / ".join(f"{o['metric']} ({o['mode']})" for o in (sw.get("objectives") or [sw["objective"]]))
    lines = [render.key_values([
        ("sweep", f"{sw['id']} ({sw['status']})"), ("algorithm", sw["algorithm"]["type"]),
        ("early stopping", (sw.get("early_stopping") or {}).get("type", "none")), ("objective", objective),
        ("trials", f"{progress['submitted']} of {progress['max_trials']} submitted: {counts or 'none yet'}"),
    ])]
    trials = sw.get("trials") or []
    if trials:
        paths = list(sw["search"])
        rows = [[t["rank"] or "-", t["trial"], t["status"], t["stop_reason"] or "-", t["epochs"],
                 render.fmt(t["value"]), *(render.fmt(t["params"].get(p)) for p in paths)] for t in trials]
        lines.append(render.table(rows, ["RANK", "TRIAL", "STATUS", "STOP", "EPOCHS", "VALUE", *paths]))
    if sw.get("best"):
        lines.append(f"best: trial {sw['best']['trial']} ({sw['best_job_id']}) {render.fmt(sw['best']['value'])}")
    if sw.get("pareto_front") is not None:
        lines.append(f"pareto front: trials {', '.join(map(str, sw['pareto_front'])) or '-'}")
    if sw.get("importance"):
        lines.append("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in sw["importance"].items()))
    return "\n".join(lines)


@sweep.command("submit")
@click.argument("body", type=click.File("r"))
@click.option("--wait", "wait_", is_flag=True, help="Follow the sweep until it ends (exit 1 unless it completes).")
@click.option("--poll", type=float, default=2.0, show_default=True, help="Seconds between polls with --wait.")
@json_option
@click.pass_context
def sweep_submit(ctx: click.Context, body: Any, wait_: bool, poll: float, as_json: bool) -> None:
    """Start the sweep in BODY (a JSON file, or - for stdin), as POST /v1/sweeps takes it."""
    sw = _client(ctx).submit_sweep(_read_json(body, "BODY"))
    _announce(sw, wait_, as_json)
    if wait_:
        _follow_sweep(ctx, sw["id"], poll, as_json)


def _follow_sweep(ctx: click.Context, sweep_id: str, poll: float, as_json: bool) -> None:
    ty = _client(ctx)
    seen: set[tuple[int, str]] = set()
    while True:
        sw = ty.sweep(sweep_id)
        if not as_json:
            for t in sorted(sw["trials"], key=lambda t: t["trial"]):
                if (t["trial"], t["status"]) not in seen:
                    seen.add((t["trial"], t["status"]))
                    click.echo(f"trial {t['trial']} {t['status']}"
                               + (f" ({t['stop_reason']}) {render.fmt(t['value'])} after {t['epochs']} epochs"
                                  if t["status"] in FINAL_STATUSES else ""))
        if sw["status"] != "running":
            break
        time.sleep(poll)
    if as_json:
        _print_json(sw)
    else:
        click.echo(_sweep_text(sw))
    ctx.exit(0 if sw["status"] == "completed" else 1)


@sweep.command("watch")
@click.argument("sweep_id")
@click.option("--poll", type=float, default=2.0, show_default=True, help="Seconds between polls.")
@json_option
@click.pass_context
def sweep_watch(ctx: click.Context, sweep_id: str, poll: float, as_json: bool) -> None:
    """Follow SWEEP_ID: a line per trial as it starts and ends, then the ranked table (exit 1 unless completed)."""
    _follow_sweep(ctx, sweep_id, poll, as_json)


@sweep.command("show")
@click.argument("sweep_id")
@json_option
@click.pass_context
def sweep_show(ctx: click.Context, sweep_id: str, as_json: bool) -> None:
    """SWEEP_ID with its trials ranked, the best trial, importances and Pareto front."""
    sw = _client(ctx).sweep(sweep_id)
    if as_json:
        _print_json(sw)
    else:
        click.echo(_sweep_text(sw))


@sweep.command("cancel")
@click.argument("sweep_id")
@json_option
@click.pass_context
def sweep_cancel(ctx: click.Context, sweep_id: str, as_json: bool) -> None:
    """Cancel SWEEP_ID: no more trials; queued ones end at once, running ones at their next batch."""
    sw = _client(ctx).cancel_sweep(sweep_id)
    if as_json:
        _print_json(sw)
    else:
        click.echo(f"{sw['id']} {sw['status']}")


@sweep.command("resume")
@click.argument("sweep_id")
@json_option
@click.pass_context
def sweep_resume(ctx: click.Context, sweep_id: str, as_json: bool) -> None:
    """Continue the cancelled SWEEP_ID: new trials take the cancelled ones' places."""
    sw = _client(ctx).resume_sweep(sweep_id)
    if as_json:
        _print_json(sw)
    else:
        click.echo(f"{sw['id']} {sw['status']}")


@sweep.command("extend")
@click.argument("sweep_id")
@click.argument("max_trials", type=int)
@json_option
@click.pass_context
def sweep_extend(ctx: click.Context, sweep_id: str, max_trials: int, as_json: bool) -> None:
    """Raise SWEEP_ID's max_trials to MAX_TRIALS: it continues, finished or not."""
    sw = _client(ctx).extend_sweep(sweep_id, max_trials)
    if as_json:
        _print_json(sw)
    else:
        click.echo(f"{sw['id']} {sw['status']}: {sw['max_trials']} trials")


# ------------------------------------------------------------------ datasets
@main.group()
def datasets() -> None:
    """Upload and list data sets."""


@datasets.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", help="CSV only: the column to predict.")
@click.option("--format", "format_", type=click.Choice(["npz", "csv"]), help="When the file name does not say.")
@json_option
@click.pass_context
def datasets_upload(ctx: click.Context, file: Path, target: str | None, format_: str | None, as_json: bool) -> None:
    """Upload an .npz (x_train, y_train, ...) or a .csv (with --target)."""
    ds = _client(ctx).upload_dataset(file, target=target, format=format_)
    if as_json:
        _print_json(ds)
        return
    splits = ds.get("splits") or {}
    split_text = " / ".join(f"{k} {v}" for k, v in splits.items() if v)
    click.echo(f"uploaded {ds['id']}")
    click.echo(render.key_values([
        ("name", ds.get("name")), ("format", ds.get("format")), ("splits", split_text),
        ("input shape", ds.get("input_shape")), ("task", ds.get("task")),
        ("classes", ds.get("n_classes") or "-"), ("sha256", ds.get("sha256")),
    ]))


@datasets.command("list")
@json_option
@click.pass_context
def datasets_list(ctx: click.Context, as_json: bool) -> None:
    """Your uploaded data sets, then the built-in ones."""
    items = _client(ctx).datasets()
    if as_json:
        _print_json(items)
        return
    rows = [[d["id"], d.get("name") or "-", d.get("task") or "-", str(d.get("input_shape")),
             " / ".join(f"{k} {v}" for k, v in (d.get("splits") or {}).items() if v)] for d in items]
    click.echo(render.table(rows, ["ID", "NAME", "TASK", "INPUT", "SPLITS"]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
