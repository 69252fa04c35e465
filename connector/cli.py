"""The `deskroute` command (also `python -m connector`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from connector.settings import Settings
from connector.store.users import ROLES


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic explains which variable is wrong
        raise click.ClickException(f"invalid settings: {exc}") from exc


def _services(settings: Settings | None = None) -> Any:
    from connector.mappings import MappingError
    from connector.services import Services

    try:
        return Services(settings or _settings())
    except MappingError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


def _exit_on_sigterm() -> None:
    # Turn SIGTERM (Heroku, systemd, docker stop) into a normal exit so `finally:` blocks run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def _exit_now_if_training() -> None:
    """The last step of a shutdown. A training on a thread of ours (the first model, a retrain) can't be stopped,
    and the interpreter's exit tears down the native threads inside it (ONNX Runtime, BLAS), which aborts the
    process. So give its lease up (another process, or this one restarted, trains at once) and exit now."""
    from connector.model_keeper import give_up_leases

    if give_up_leases():
        click.echo("stopped during a training; it starts again with the next process that needs it", err=True)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@click.group()
@click.version_option(package_name="deskroute")
def main() -> None:
    """Deskroute routes new helpdesk tickets to the right group, and learns from agents' re-routes."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, type=int, help="Web server threads.")
def serve(host: str, port: int, threads: int) -> None:
    """Run the web app, the worker and the scheduler in one process."""
    import waitress

    from connector import create_app, freeze_startup_objects
    from connector.logs import configure_logging
    from connector.scheduler import init_scheduler, stop_scheduler

    settings = _settings()
    configure_logging(settings.deskroute_log_level, settings.deskroute_log_format)
    services = _services(settings)
    services.report_platforms()
    app = create_app(services=services)
    # On a fresh install the first model trains on a thread (about 15 s): webhooks are taken and queued meanwhile.
    pool = services.start_workers(first_model_in_background=True)
    services.router.cascade()  # load the model (if there is one yet) and the tiers now, not on the first ticket
    freeze_startup_objects()
    scheduler = init_scheduler(services) if settings.deskroute_scheduler else None
    if scheduler:
        scheduler.start()
    _exit_on_sigterm()
    for name in services.mappings:
        state = "configured" if name in services.platforms else services.refused.get(name) or \
            f"not configured (set {', '.join(services.unconfigured.get(name, []))})"
        click.echo(f"{name}: {state}", err=True)
    click.echo(f"Deskroute listening on http://{host}:{port}  (health: /health, metrics: /metrics)", err=True)
    try:
        # waitress would otherwise buffer up to 1 GiB (to a temp file) before the app could say 413.
        waitress.serve(app, host=host, port=port, threads=threads, ident="deskroute", _quiet=True,
                       max_request_body_size=settings.deskroute_max_body_bytes)
    finally:
        pool.stop()
        if scheduler:
            stop_scheduler(scheduler)
        _exit_now_if_training()


@main.command()
def worker() -> None:
    """Run the worker and the scheduler only (the Procfile's worker: line)."""
    from connector.logs import configure_logging
    from connector.scheduler import init_scheduler, stop_scheduler

    settings = _settings()
    configure_logging(settings.deskroute_log_level, settings.deskroute_log_format)
    services = _services(settings)
    services.report_platforms()
    pool = services.start_workers()
    services.router.cascade()  # load the model and the tiers now, not on the first ticket (about 2 s)
    scheduler = init_scheduler(services) if settings.deskroute_scheduler else None
    if scheduler:
        scheduler.start()
    _exit_on_sigterm()
    click.echo(f"Deskroute worker running ({settings.deskroute_worker_threads} thread(s))", err=True)
    try:
        while not pool.stop_event.wait(1.0):
            pass
    finally:
        pool.stop()
        if scheduler:
            stop_scheduler(scheduler)
        _exit_now_if_training()


@main.command()
@click.option("--subject", default="", help="Ticket subject.")
@click.option("--body", default="", help="Ticket body.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def classify(subject: str, body: str, as_json: bool) -> None:
    """Classify one ticket with the active model, and show where each helpdesk would route it."""
    from connector.feedback import ensure_model
    from connector.models import Ticket

    services = _services()
    ensure_model(services.store, services.taxonomy, services.settings)
    ticket = Ticket(platform="cli", id="0", subject=subject, description=body)
    if not ticket.text:
        raise click.UsageError("give --subject and/or --body")
    classification = services.router.classify(ticket.text)
    decisions = {name: services.router.decide(name, classification) for name in services.mappings}
    if as_json:
        click.echo(json.dumps({"classification": classification.model_dump(mode="json"),
                               "decisions": {k: v.model_dump(mode="json") for k, v in decisions.items()}}, indent=2))
        return
    c = classification
    click.echo(f"category:   {c.category or '(none: triage)'}")
    click.echo(f"confidence: {c.confidence:.2f}")
    click.echo(f"tier:       {c.tier}" + (f"  (guardrail: {c.guardrail})" if c.guardrail else ""))
    click.echo(f"reason:     {c.reason}")
    click.echo(f"model:      {c.model_version or '-'}   ({c.latency_ms:.1f} ms)")
    for call in c.llm_calls:
        cost = f"${call.cost_usd:.5f}" if call.cost_usd is not None else "cost unknown"
        click.echo(f"claude:     {call.model} {call.outcome}: {call.input_tokens} input, {call.output_tokens} output,"
                   f" {call.cache_read_tokens} cache read, {call.cache_write_tokens} cache write tokens;"
                   f" {call.latency_ms:.0f} ms; {cost}" + (f" ({call.error})" if call.error else ""))
    if c.llm_calls:
        total = sum(call.cost_usd or 0 for call in c.llm_calls)
        click.echo(f"llm cost:   ${total:.5f} (prompt {c.prompt_version})")
    for name, d in decisions.items():
        click.echo(f"{name}: group {d.group_id}, priority {d.priority}, tags {' '.join(d.tags)}")


def _load_data(paths: tuple[Path, ...]) -> Any:
    from connector.datasets import DatasetError, load_dataset

    try:
        data = load_dataset(paths[0])
        for path in paths[1:]:
            data = data + load_dataset(path)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    return data


@main.command()
@click.option("--data", "paths", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Labelled CSV or JSONL file (subject, body or text, category). Repeatable.")
@click.option("--model-out", type=click.Path(path_type=Path),
              help="Write the model to this file instead of making it the app's active model.")
def train(paths: tuple[Path, ...], model_out: Path | None) -> None:
    """Train the local model.

    With --model-out, trains on the files alone and writes a model file. Without it, trains on the
    taxonomy's examples plus the files and activates the result, but only if every label in the files
    is a taxonomy category.
    """
    from connector.classify.local import LocalModel
    from connector.feedback import LabelMismatch, feedback_dataset, train_active

    data = _load_data(paths)
    started = time.perf_counter()
    if model_out is not None:
        try:
            model = LocalModel.train(data.texts, data.labels)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        model.save(model_out)
        click.echo(f"trained on {len(data)} examples, {len(model.labels)} labels, "
                   f"in {time.perf_counter() - started:.1f} s; wrote {model_out}")
        return
    from connector.classify.redact import redact
    from connector.datasets import Dataset

    services = _services()
    base = feedback_dataset(services.store, services.taxonomy, services.settings, now=time.time())
    data = Dataset([redact(text) for text in data.texts], data.labels)  # it goes into the database: no personal data
    try:
        version = train_active(services.store, services.taxonomy, data, source=",".join(map(str, paths)), base=base)
    except LabelMismatch as exc:
        raise click.ClickException(f"not replacing the active model: {exc}. Add the categories to "
                                   "taxonomy.yaml, or train a separate model with --model-out.") from exc
    click.echo(f"trained on {len(data)} examples plus {len(base)} from the taxonomy and Claude's confident labels,"
               f" in {time.perf_counter() - started:.1f} s; model v{version} is now active")


@main.command(name="eval")
@click.option("--data", "path", required=True, type=click.Path(path_type=Path), help="Labelled CSV or JSONL file.")
@click.option("--model", "model_path", type=click.Path(path_type=Path, exists=True),
              help="A model file to score alone (the local tier). Default: the app's whole cascade.")
@click.option("--predictions", type=click.Path(path_type=Path),
              help="Write one JSON object per input row, in order: category, confidence, tier, label.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def evaluate(path: Path, model_path: Path | None, predictions: Path | None, as_json: bool) -> None:
    """Score a model (or the app's cascade) on a labelled file."""
    from connector.classify.evaluation import score
    from connector.classify.local import LocalModel, ModelFormatError
    from connector.feedback import ensure_model

    data = _load_data((path,))
    if model_path is not None:
        try:
            model = LocalModel.load(model_path)
        except ModelFormatError as exc:
            raise click.ClickException(f"{model_path}: {exc}") from exc

        def predict(text: str) -> tuple[str | None, float, str]:
            p = model.predict(text)
            return p.label, p.confidence, "local"
    else:
        services = _services()
        ensure_model(services.store, services.taxonomy, services.settings)
        cascade = services.router.cascade()

        def predict(text: str) -> tuple[str | None, float, str]:
            c = cascade.classify(text)
            return c.category, c.confidence, c.tier

    rows, timings = [], []
    for text in data.texts:
        started = time.perf_counter()
        rows.append(predict(text))
        timings.append((time.perf_counter() - started) * 1000)
    result: dict[str, Any] = score(data.labels, [r[0] for r in rows], [r[1] for r in rows])
    result["p50_ms"] = round(statistics.median(timings), 3)
    result["p95_ms"] = round(statistics.quantiles(timings, n=20)[-1], 3) if len(timings) > 1 else result["p50_ms"]
    if predictions is not None:
        with predictions.open("w", encoding="utf-8") as out:
            for (category, confidence, tier), label in zip(rows, data.labels, strict=True):
                out.write(json.dumps({"category": category, "confidence": round(confidence, 6), "tier": tier,
                                      "label": label}) + "\n")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            click.echo(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")


def _when(value: str | None, name: str) -> float | None:
    from datetime import UTC, datetime

    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time", param_hint=name) from exc
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


@main.group()
def corrections() -> None:
    """Agents' re-routes: list, review and export them."""


_STATUS = click.Choice(["pending", "accepted", "rejected"])
_LIST_STATUS = click.Choice(["pending", "accepted", "rejected", "all"])


@corrections.command(name="export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--since", help="Only re-routes at or after this ISO 8601 date or time (UTC if no zone).")
@click.option("--until", help="Only re-routes before this ISO 8601 date or time.")
@click.option("--category", help="Only re-routes whose predicted, corrected or final category is this.")
@click.option("--status", type=_STATUS, help="Only corrections in this review state.")
@click.option("--output", type=click.Path(path_type=Path), help="Write here instead of standard output.")
def corrections_export(fmt: str, since: str | None, until: str | None, category: str | None, status: str | None,
                       output: Path | None) -> None:
    """Write the corrections as CSV or JSONL (columns: README, "Corrections")."""
    from connector.corrections import to_csv, to_jsonl

    services = _services()
    rows = services.store.corrections.find(since=_when(since, "--since"), until=_when(until, "--until"),
                                      category=category, status=status)
    text = to_csv(rows) if fmt == "csv" else to_jsonl(rows)
    if output is None:
        click.echo(text.removeprefix("\ufeff"), nl=False)  # a terminal doesn't want the spreadsheet BOM
    else:
        output.write_text(text, encoding="utf-8", newline="")
        click.echo(f"wrote {len(rows)} correction(s) to {output}", err=True)


@corrections.command(name="list")
@click.option("--status", type=_LIST_STATUS, default="pending", show_default=True)
@click.option("--limit", default=50, show_default=True)
def corrections_list(status: str, limit: int) -> None:
    """Show corrections awaiting (or past) review, as the admin UI's Corrections page does."""
    services = _services()
    rows = services.store.corrections.find(status=None if status == "all" else status, limit=limit)
    for row in rows:
        final = "final" if row["is_final"] else f"then {row['final_category']}"
        click.echo(f"{row['id']:>6}  {row['platform']} #{row['ticket_id']} move {row['seq']}: "
                   f"{row['predicted_category'] or 'triage'} ({row['predicted_tier']}) -> {row['corrected_category']}"
                   f" [{final}]  agent {row['agent_id'] or '?'}  {row['status']}"
                   + (f" by {row['reviewed_by']}" if row["reviewed_by"] else ""))
    if not rows:
        click.echo(f"no {status} corrections")


def _review(ids: tuple[int, ...], status: str, reviewer: str, label: str | None) -> None:
    from connector.corrections import why_not_learnable

    services = _services()
    if label is not None and label not in services.taxonomy.categories:
        raise click.BadParameter(f"{label!r} is not a category in taxonomy.yaml", param_hint="--label")
    missing, problems, done = [], [], 0
    for i in ids:
        row = services.store.corrections.get(i)
        if row is None:
            missing.append(i)
        elif status == "accepted" and (problem := why_not_learnable(row, label, services.taxonomy.categories)):
            problems.append(f"{problem} (--label CATEGORY)")
        else:
            done += services.store.corrections.review(i, status=status, reviewer=reviewer, now=time.time(), label=label)
    click.echo(f"{done} correction(s) {status}")
    if missing:
        problems.append(f"no correction with id {', '.join(map(str, missing))}")
    if problems:
        raise click.ClickException("; ".join(problems))


@corrections.command(name="accept")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--label", help="Learn this category instead of the one the agent's last move maps to.")
@click.option("--by", "reviewer", default="cli", show_default=True, help="Who reviewed.")
def corrections_accept(ids: tuple[int, ...], label: str | None, reviewer: str) -> None:
    """Accept corrections: the local model learns from them at its next retrain."""
    _review(ids, "accepted", reviewer, label)


@corrections.command(name="reject")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--by", "reviewer", default="cli", show_default=True, help="Who reviewed.")
def corrections_reject(ids: tuple[int, ...], reviewer: str) -> None:
    """Reject corrections: they stay in the export, but are never learned."""
    _review(ids, "rejected", reviewer, None)


@corrections.command(name="forget-text")
@click.option("--yes", is_flag=True, help="Don't ask first.")
def corrections_forget_text(yes: bool) -> None:
    """Forget the ticket text and agents' comments every correction keeps (its category, groups and review
    stay). The model can't learn from a correction without its text, and the text can't be brought back: for
    an install that turned DESKROUTE_CORRECTIONS_KEEP_TEXT off (with it on, new corrections keep text
    again), or must forget what it kept."""
    store = _services().store
    kept = store.corrections.text_count()
    if not kept:
        click.echo("no correction keeps text")
        return
    if not yes:
        click.confirm(f"forget the text of {kept} correction(s)? This can't be undone", abort=True)
    forgotten = store.corrections.forget_text()
    logging.getLogger(__name__).warning("correction text forgotten", extra={"corrections": forgotten})
    click.echo(f"forgot the text of {forgotten} correction(s)")


@main.group()
def model() -> None:
    """The local model's versions: list, promote, roll back, retrain."""


@model.command(name="list")
def model_list() -> None:
    """Every stored model, newest first, with its metrics."""
    services = _services()
    for info in services.store.models.all():
        metrics = info.metrics
        f1 = metrics.get("holdout_macro_f1")
        click.echo(f"{'*' if info.active else ' '} v{info.version:<4} "
                   f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(info.created_at))}  "
                   f"{info.n_examples:>6} examples  {len(info.labels):>3} labels  "
                   f"held-out macro-F1 {f1 if f1 is not None else '-'}  cv accuracy "
                   f"{round(metrics['cv_accuracy'], 3) if metrics.get('cv_accuracy') is not None else '-'}  "
                   f"{info.source}")


@model.command(name="promote")
@click.argument("version", type=int)
def model_promote(version: int) -> None:
    """Make a stored model the active one."""
    from connector.feedback import LabelMismatch, promote

    services = _services()
    try:
        promote(services.store, services.taxonomy, version)
    except KeyError:
        raise click.ClickException(f"no model v{version}") from None
    except LabelMismatch as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model v{version} is now active")


@model.command(name="rollback")
def model_rollback() -> None:
    """Go back to the previous model for these categories."""
    from connector.feedback import rollback

    services = _services()
    try:
        version = rollback(services.store, services.taxonomy)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"rolled back: model v{version} is now active")


@model.command(name="retrain")
def model_retrain() -> None:
    """Retrain on the feedback dataset now, behind the promotion gate (as the nightly event does)."""
    from connector.model_keeper import Lease, gated_retrain

    services = _services()
    lease = Lease.take(services.store, f"cli-{uuid.uuid4().hex[:12]}")
    if lease is None:  # two trainings would share a worker's cores and could promote in turn
        raise click.ClickException("a model is being trained now (by a worker, or the nightly retrain); "
                                   "run this again when it is done (`deskroute model list` shows it)")
    with lease:
        report = gated_retrain(services.store, services.taxonomy, services.settings, lease,
                               services.live_categories, now=time.time(), trigger="cli")
    if report.version is None:
        click.echo(f"retrain {report.outcome}: {report.reason}")
        return
    current = f"{report.current_f1:.3f}" if report.current_f1 is not None else "-"
    click.echo(f"candidate v{report.version} {report.outcome}: held-out macro-F1 {report.candidate_f1:.3f} vs current "
               f"{current} on {report.n_holdout} examples ({report.reason})")


def _config_store() -> tuple[Any, Path]:
    """The database and the default files, without loading the configuration (an import must be able
    to replace an invalid one)."""
    from connector.mappings import resolve_dir
    from connector.store import Store

    settings = _settings()
    store = Store(settings.database_url)
    store.migrate()
    return store, resolve_dir(settings.deskroute_mappings_dir)


@main.group()
def config() -> None:
    """The taxonomy and mappings: import, export, history. Once edited, the live copy is in the database."""


@config.command(name="import")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--by", "author", default="cli", show_default=True, help="Who made the change, for the history.")
def config_import(path: Path, author: str) -> None:
    """Make PATH the live configuration: a directory with taxonomy.yaml and every <helpdesk>.yaml, or one
    of those files (it replaces the file of its name). Every process applies it within seconds."""
    from connector.config import ConfigError, import_config

    store, defaults = _config_store()
    try:
        version, changed = import_config(store, path, directory=defaults, author=author, now=time.time())
    except ConfigError as exc:
        raise click.ClickException(f"not imported, nothing changed:\n{exc}") from exc
    if not changed:
        click.echo("nothing to import: the live configuration already has these files")
        return
    click.echo(f"configuration v{version} is live: {', '.join(changed)} changed")


@config.command(name="export")
@click.argument("directory", required=False, default="mappings-export",
                type=click.Path(path_type=Path, file_okay=False))
def config_export(directory: Path) -> None:
    """Write the live configuration's YAML files into DIRECTORY (default: ./mappings-export)."""
    from connector.config import ConfigError, export_config

    store, defaults = _config_store()
    try:
        version, written = export_config(store, defaults, directory)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"exported configuration v{version}" if version is not None
               else f"exported the files in {defaults} (no edit stored yet: they are the live configuration)")


@config.command(name="history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000), help="Versions to show.")
def config_history(limit: int) -> None:
    """The configuration's versions, newest first: version, when, who, what, and the files changed."""
    store, defaults = _config_store()
    versions: dict[Any, dict[str, Any]] = {}
    for row in store.configs.changes(limit=limit * 8):  # one row per file changed
        key = row["version"] if row["version"] is not None else ("file edit", row["at"])
        entry = versions.setdefault(key, {**row, "files": []})
        entry["files"].insert(0, row["file"])
    for entry in list(versions.values())[:limit]:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(entry["at"]))
        label = f"v{entry['version']}" if entry["version"] is not None else "-"
        click.echo(f"{label:<6} {when}  {entry['author']}  {entry['summary']}  ({', '.join(entry['files'])})")
    if not versions:
        click.echo(f"no configuration edits yet: the files in {defaults} are live")


@main.command()
@click.argument("platform")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650),
              help="Import tickets solved in this many past days.")
def backfill(platform: str, days: int) -> None:
    """Import solved tickets, labelled with their final group, as training history."""
    from connector.history import backfill as run_backfill
    from platforms.base import PlatformError

    services = _services()
    if platform not in services.mappings:
        raise click.BadParameter(f"unknown helpdesk {platform!r}", param_hint="PLATFORM")
    if platform not in services.platforms:
        raise click.ClickException(f"{platform} is not configured: set "
                                   f"{', '.join(services.unconfigured.get(platform, []))}")

    def progress(read: int, kept: int) -> None:
        click.echo(f"  {read} tickets read, {kept} kept", err=True)

    try:
        report = run_backfill(services, platform, days=days, progress=progress)
    except PlatformError as exc:
        raise click.ClickException(f"{platform} stopped the import: {exc}") from exc
    click.echo(f"imported {report.kept} of {report.read} tickets ({report.skipped_unmapped} in groups no category"
               f" maps to, {report.skipped_open} not solved); run `deskroute model retrain` to learn from them")


def _platform(services: Any, name: str) -> Any:
    if name not in services.mappings:
        raise click.BadParameter(f"unknown helpdesk {name!r}", param_hint="PLATFORM")
    if name not in services.platforms:
        raise click.ClickException(f"{name} is not configured: set {', '.join(services.unconfigured.get(name, []))}")
    return services.platforms[name]


def _print_report(report: Any) -> None:
    for step in report.steps:
        click.echo(f"{step.action:>7}  {step.what}" + (f"\n         {step.detail}" if step.detail else ""))


@main.command()
@click.argument("platform")
@click.option("--url", "public_url", required=True,
              help="Where the helpdesk reaches Deskroute, e.g. https://deskroute.acme.com")
@click.option("--dry-run", is_flag=True, help="Print the planned API calls; change nothing.")
@click.option("--env-file", type=click.Path(path_type=Path),
              help="Write the webhook signing secret into this .env file (created readable by you alone).")
@click.option("--show-secret", is_flag=True, help="Print the webhook signing secret (without --env-file).")
def install(platform: str, public_url: str, dry_run: bool, env_file: Path | None, show_secret: bool) -> None:
    """Create Deskroute's webhook and triggers (Zendesk) or automation rules (Freshdesk). Safe to run again."""
    from platforms.base import PlatformError

    if not _acceptable_public_url(public_url):
        raise click.BadParameter("must start with https:// (http:// only for localhost): the helpdesk sends "
                                 "its secret with every webhook", param_hint="--url")
    services = _services()
    adapter = _platform(services, platform)
    try:
        report = adapter.install(public_url, dry_run=dry_run)
    except PlatformError as exc:
        raise click.ClickException(f"{platform} refused: {exc}") from exc
    _print_report(report)
    if report.secret and report.secret_setting:
        current = getattr(services.settings, report.secret_setting.lower()).get_secret_value()
        if current == report.secret:
            click.echo(f"{report.secret_setting} already holds the webhook's signing secret")
        elif env_file is not None:
            _set_env(env_file, report.secret_setting, report.secret)
            click.echo(f"wrote {report.secret_setting} to {env_file}; restart Deskroute to use it")
        elif show_secret:
            click.echo(f"set {report.secret_setting}={report.secret} (in the environment or .env), then restart"
                       " Deskroute")
        else:
            click.echo(f"the webhook's signing secret is not shown: run again with --env-file .env to store it as"
                       f" {report.secret_setting}, or with --show-secret to print it")
    if any(step.action == "manual" for step in report.steps):
        click.echo("some steps need doing by hand (above)", err=True)


def _acceptable_public_url(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")


def _set_env(path: Path, name: str, value: str) -> None:
    """Set one line of a .env file, which then holds a secret: readable by its owner alone (0600), and
    replaced whole (written beside, then renamed), so that a crash never leaves half a file."""
    import os
    import tempfile

    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if not line.startswith(f"{name}=")] + [f"{name}={value}"]
    if path.exists() and path.stat().st_mode & 0o077:
        click.echo(f"{path} was readable by others; it is now readable by you alone", err=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(temp, path)


@main.command()
@click.argument("platform")
@click.option("--dry-run", is_flag=True, help="Print the planned API calls; change nothing.")
def uninstall(platform: str, dry_run: bool) -> None:
    """Remove what `deskroute install` created."""
    services = _services()
    report = _platform(services, platform).uninstall(dry_run=dry_run)
    _print_report(report)
    if not report.steps:
        click.echo("nothing to remove")


@main.command()
def doctor() -> None:
    """Check settings, helpdesks, mappings, installation, queue and model; exit 1 on any problem."""
    from connector.doctor import diagnose

    findings = diagnose(_services())
    for finding in findings:
        click.echo(f"{'ok ' if finding.ok else 'FIX'}  {finding.line}")
    problems = sum(not f.ok for f in findings)
    if problems:
        click.echo(f"{problems} problem(s)", err=True)
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def suggest(as_json: bool) -> None:
    """Group the tickets no category took into suggested categories now (as the weekly job does), and print them."""
    from connector.corrections import iso
    from connector.suggest import compute

    services = _services()
    if not services.keeps_unrouted:
        click.echo("suggestions are off (DESKROUTE_SUGGESTIONS or DESKROUTE_CORRECTIONS_KEEP_TEXT): no ticket is kept"
                   " for them now", err=True)
    compute(services.store, services.taxonomy, services.mappings, services.settings, now=services.clock())
    run = services.store.suggestions.latest(examples=3)
    assert run is not None
    names = {platform: services.store.configs.groups(platform, fresher_than=0)[1] or {}
             for platform in services.mappings}  # the group list the admin pages last fetched, if any
    clusters = [{
        **{key: c[key] for key in ("name", "description", "named_by", "size", "words", "keywords", "examples")},
        "final_groups": [{"platform": platform, "group_id": group, "group_name": names.get(platform, {}).get(group),
                          "tickets": n} for (platform, group), n in c["final_groups"]],
        "guesses": dict(c["guesses"]),
        "tickets": [{"platform": platform, "ticket_id": ticket_id} for platform, ticket_id in c["members"]],
    } for c in run["clusters"]]
    if as_json:
        click.echo(json.dumps({"computed_at": iso(run["computed_at"]), "n_tickets": run["n_tickets"],
                               "clusters": clusters}, indent=2, ensure_ascii=False))
        return
    click.echo(f"{len(clusters)} suggestion(s) from {run['n_tickets']} ticket(s) no category took")
    for n, c in enumerate(clusters, 1):
        click.echo(f"\n{n}. {c['name']} ({c['size']} tickets; named by {c['named_by']})\n   {c['description']}")
        click.echo(f"   words: {', '.join(c['words'])}")
        if c["keywords"]:
            click.echo(f"   keywords to consider: {', '.join(c['keywords'])}")
        moved = [f"{g['group_name'] or g['group_id']} ({g['platform']}) x{g['tickets']}" for g in c["final_groups"]]
        click.echo(f"   agents moved them to: {', '.join(moved) if moved else 'no move seen yet'}")
        for example in c["examples"]:
            line = " ".join(example.split())
            click.echo(f"   e.g. {line[:117] + '...' if len(line) > 120 else line}")


@main.group()
def tickets() -> None:
    """Recent decisions, and sending an event through again (the admin UI's Tickets page)."""


@tickets.command(name="list")
@click.option("--search", "-q", default="", help="Ticket id, category, tier or words of the reason.")
@click.option("--state", type=click.Choice(["done", "triage", "shadow", "dead", "pending"]), help="Only this state.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
def tickets_list(search: str, state: str | None, limit: int) -> None:
    """One line per ticket: event, ticket, state, category, tier, confidence, re-routed, and why it failed."""
    store = _services().store
    rows = store.stats.recent_tickets(search=search, state=state, limit=limit)
    for row in rows:
        confidence = f"{row['confidence']:.2f}" if row["confidence"] is not None else "-"
        category = row["category"] or ("triage" if row["decision"] else "-")  # "-": never classified
        error = row["event_error"] or row["last_error"]
        failed = row["state"] in ("dead", "triage") or row["event_state"] in ("dead", "pending")  # triage: refused?
        click.echo(f"event {row['event_id'] or '-':<6} {row['platform']} #{row['ticket_id']:<10} {row['state']:<8} "
                   f"{category:<22} {row['tier'] or '-':<7} {confidence}"
                   f"{'  re-routed' if row['rerouted'] else ''}{f'  error: {error}' if failed and error else ''}")
    others = []
    if state in (None, "dead"):  # dead events no ticket row shows: re-route and text jobs, unconfigured helpdesks
        shown = {row["event_id"] for row in rows}
        others = [e for e in store.events.recent(state="dead", limit=limit)
                  if e["id"] not in shown and (not search or search.lstrip("#") == e["ticket_id"])]
    for event in others:
        click.echo(f"event {event['id']:<6} {event['platform']} #{event['ticket_id']:<10} dead     "
                   f"({event['kind']})  error: {event['last_error']}")
    if not rows and not others:
        click.echo("no tickets match", err=True)


@tickets.command(name="retry")
@click.argument("event_ids", nargs=-1, type=int)
@click.option("--dead", "all_dead", is_flag=True,
              help="Every dead-lettered event (say, after fixing the helpdesk's credentials).")
@click.option("--reclassify", is_flag=True,
              help="Classify afresh and route (for triaged tickets; one people have taken on since is left).")
def tickets_retry(event_ids: tuple[int, ...], all_dead: bool, reclassify: bool) -> None:
    """Send finished events (dead letters, triage) through the pipeline again; a running worker picks them up."""
    services = _services()
    if all_dead:
        event_ids = (*event_ids, *(row["id"] for row in services.store.events.recent(state="dead", limit=1_000_000)))
    if not event_ids:
        raise click.UsageError("name the events to retry, or give --dead")
    failed = [event for event in event_ids
              if not services.store.events.requeue(event, now=services.clock(), reclassify=reclassify)]
    for event in event_ids:
        click.echo(f"event {event}: {'not finished or unknown' if event in failed else 'queued again'}")
    if failed:
        sys.exit(1)


@main.group(name="app")
def helpdesk_app() -> None:
    """Build the sidebar app agents see on each ticket: the decision, the runner-ups, "Wrong? tell us why"."""


_APP_UPLOAD = {
    "zendesk": "Upload it in Zendesk: Admin Center > Apps and integrations > Apps > Zendesk Support apps > "
               "Upload private app (needs Suite Growth or Support Professional and up).",
    "freshdesk": "Install it in Freshdesk: Admin > Support operations > Apps > Build it yourself > New App > Custom App"
                 " (upload the zip), then install it from Manage Apps > Custom apps.",
}


def _build_app(platform: str, public_url: str, output: Path, **options: Any) -> None:
    import secrets

    from platforms import PLATFORMS

    if not _acceptable_public_url(public_url):
        raise click.BadParameter("must start with https:// (http:// only for localhost): the helpdesk sends "
                                 "the app's token with every request", param_hint="--url")
    from connector.apps_api import MIN_TOKEN_LENGTH, app_token

    master = _settings().deskroute_app_token.get_secret_value()
    if master and len(master) < MIN_TOKEN_LENGTH:
        raise click.ClickException(f"DESKROUTE_APP_TOKEN is too short: {MIN_TOKEN_LENGTH} characters or more "
                                   "(unset it and run this again for a new one)")
    build = PLATFORMS[platform].build_app
    assert build is not None  # a command exists only for a helpdesk with an app
    try:
        path = build(public_url, output, **options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from exc
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes), calling {public_url.rstrip('/')}/apps/api")
    click.echo(_APP_UPLOAD[platform])
    if not master:
        master = secrets.token_urlsafe(32)
        click.echo("DESKROUTE_APP_TOKEN is not set, so here is a new one. It is shown this once and stored nowhere:\n\n"
                   f"    {master}\n\n"
                   "Set DESKROUTE_APP_TOKEN to it on every Deskroute process (web and worker; in the environment or "
                   ".env) and restart them.")
    # Each helpdesk's app gets its own token, derived from the one secret: Zendesk's can't speak for Freshdesk.
    click.echo(f"When you install the app, paste this in its settings (\"Deskroute app token\"):\n\n"
               f"    {app_token(master, platform)}\n")


@helpdesk_app.command(name="zendesk")
@click.option("--url", "public_url", required=True, help="Where Zendesk reaches Deskroute, e.g. https://deskroute.acme.com")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default="deskroute-zendesk.zip",
              show_default=True, help="The zip file to write.")
@click.option("--author-email", help="Support address shown with the app in Zendesk's app list.")
def app_zendesk(public_url: str, output: Path, author_email: str | None) -> None:
    """Build the private Zendesk app (ticket sidebar) as a zip to upload."""
    _build_app("zendesk", public_url, output, author_email=author_email)


@helpdesk_app.command(name="freshdesk")
@click.option("--url", "public_url", required=True,
              help="Where Freshdesk reaches Deskroute, e.g. https://deskroute.acme.com")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default="deskroute-freshdesk.zip",
              show_default=True, help="The zip file to write.")
def app_freshdesk(public_url: str, output: Path) -> None:
    """Build the Freshdesk app (ticket sidebar, Freshworks platform 3.0) as a zip to install."""
    _build_app("freshdesk", public_url, output)


@main.group()
def users() -> None:
    """People who sign in to the admin UI by name: their reviews and edits carry it, and one person's access
    ends without changing everyone's password (DESKROUTE_ADMIN_PASSWORD still signs in, as "admin")."""


def _user_store() -> Any:
    from connector.store import Store

    store = Store(_settings().database_url)
    store.migrate()
    return store


def _user_arg(name: str) -> str:
    from connector.admin.gate import user_name

    try:
        return user_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc


def _new_password(from_stdin: bool) -> str:
    from connector.admin.gate import hash_password, new_password_problem

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if problem := new_password_problem(password):
        raise click.ClickException(problem)
    return hash_password(password)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


_STDIN = click.option("--password-stdin", is_flag=True, help="Read the password from standard input (scripts).")


_ROLE = click.Choice(ROLES)


@users.command(name="add")
@click.argument("name")
@click.option("--role", type=_ROLE, default="lead", show_default=True,
              help="lead: reviews corrections, reads every page; admin: also changes routing, connection, models.")
@_STDIN
def users_add(name: str, role: str, password_stdin: bool) -> None:
    """Let NAME sign in to the admin UI (it asks for the password twice)."""
    user, store = _user_arg(name), _user_store()
    if store.users.get(user):
        raise click.ClickException(f"{user} exists; `deskroute users password {user}` sets a new password")
    if not store.users.add(user, _new_password(password_stdin), now=time.time(), role=role):
        raise click.ClickException(f"{user} exists")
    click.echo(f"{user} can sign in to the admin UI as {'an admin' if role == 'admin' else 'a team lead'}")


@users.command(name="role")
@click.argument("name")
@click.argument("role", type=_ROLE)
def users_role(name: str, role: str) -> None:
    """Make NAME a team lead or an admin, from their next click."""
    user = _user_arg(name)
    if not _user_store().users.set_role(user, role):
        raise click.ClickException(f"no user {user}")
    click.echo(f"{user} is {'an admin' if role == 'admin' else 'a team lead'}")


@users.command(name="password")
@click.argument("name")
@_STDIN
def users_password(name: str, password_stdin: bool) -> None:
    """Give NAME a new password; their open sessions end."""
    user, store = _user_arg(name), _user_store()
    if not store.users.get(user):
        raise click.ClickException(f"no user {user}")
    if not store.users.set_password(user, _new_password(password_stdin), now=time.time()):
        raise click.ClickException(f"no user {user} (removed meanwhile)")
    click.echo(f"{user} has a new password; their sessions have ended")


@users.command(name="remove")
@click.argument("name")
def users_remove(name: str) -> None:
    """Stop NAME signing in; their open sessions end at their next click."""
    user = _user_arg(name)
    if not _user_store().users.remove(user):
        raise click.ClickException(f"no user {user}")
    click.echo(f"{user} can no longer sign in")


@users.command(name="list")
def users_list() -> None:
    """Who may sign in by name."""
    people = _user_store().users.all()
    for person in people:
        click.echo(f"{person.name}\t{person.role}\tadded {_iso(person.created_at)}"
                   f"\tpassword set {_iso(person.updated_at)}")
    if not people:
        click.echo("no named users: only DESKROUTE_ADMIN_PASSWORD signs in (`deskroute users add NAME`)")
    elif not any(person.role == "admin" for person in people):
        click.echo("no named admin: without DESKROUTE_ADMIN_PASSWORD nobody could change the routing "
                   "(`deskroute users role NAME admin`)", err=True)


@main.group()
def db() -> None:
    """The database: apply migrations, or move an install to another database (SQLite to PostgreSQL)."""


@db.command(name="upgrade")
def db_upgrade() -> None:
    """Apply pending migrations to DATABASE_URL (serve and worker also do this at start)."""
    from connector.store import Store, migrate

    store = Store(_settings().database_url)
    applied = store.migrate()
    click.echo(f"{store.describe()}: " + (f"applied {', '.join(applied)}; " if applied else "")
               + f"at revision {migrate.current(store.db)}")


@db.command(name="copy")
@click.option("--from", "source", required=True, help="The database to copy, e.g. sqlite:///deskroute.db.")
@click.option("--to", "target", required=True, help="An empty database, e.g. postgresql://user:pw@host/db.")
def db_copy(source: str, target: str) -> None:
    """Copy events, decisions, corrections, models, configuration and tokens into an empty database,
    then check every table's count. Stop the workers first; point DATABASE_URL at the target after."""
    from connector.store import Store
    from connector.store.transfer import CopyRefused, copy

    origin, destination = Store(source), Store(target)
    try:
        copied = copy(origin, destination)
    except CopyRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{origin.describe()} -> {destination.describe()}")
    for row in copied:
        click.echo(f"  {row.table:<16} {row.source:>9} -> {row.target:<9} {'ok' if row.ok else 'MISMATCH'}")
    if not all(row.ok for row in copied):
        raise click.ClickException("the counts differ: don't switch DATABASE_URL; see the rows above")
    click.echo(f"copied {sum(row.target for row in copied)} rows; now set DATABASE_URL to the target")


@main.command()
@click.option("--keep-running", is_flag=True, help="Keep serving afterwards, to look at the admin UI.")
@click.option("--port", default=0, type=int, help="Port for Deskroute (default: any free one).")
def demo(keep_running: bool, port: int) -> None:
    """Route sample tickets through a simulated Zendesk on loopback; no account or key needed."""
    from connector.demo import run

    _exit_on_sigterm()  # stopped by a process manager too, its temporary folder and database are removed
    sys.exit(run(keep_running=keep_running, port=port, echo=click.echo))
