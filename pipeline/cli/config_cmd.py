"""``sfamp config``: validate and show mapping files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import typer
from rich.table import Table

from pipeline.cli.common import (
    console,
    err_console,
    fail,
    print_json,
    reporting_settings,
    settings_or_exit,
)
from pipeline.cli.help import SfampTyper
from pipeline.cli.verify import run_verify
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.config.validation import dump_mapping, load_mapping, read_document, validate_document
from pipeline.config.verify import message_of
from pipeline.errors import ConfigError, MappingError, Problem, SettingsError
from pipeline.kafka.config_topic import publish_changed_mapping, stored_revision, stored_text
from pipeline.kafka.inspect import quick_settings
from pipeline.kafka.topics import TopicNames
from pipeline.wording import plural

app = SfampTyper(
    help="Validate, show, verify, import and export the mapping.", no_args_is_help=True
)

FILE = typer.Argument(..., help="Mapping file (JSON).", show_default=False)
NO_VERIFY = typer.Option(
    False, "--no-verify", help="Skip the online checks against Salesforce and Amplitude."
)
OUTPUT = typer.Option(None, "--output", "-o", help="Write to this file instead of standard output.")


@app.command()
def validate(
    file: Path = FILE,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Check a mapping file offline and list every problem with its JSON path.

    Also checks that the mapping writes at most SFAMP_AMPLITUDE__MAX_GROUP_TYPES
    group types (Amplitude tracks 5 per project and ignores the others).
    Exits 0 when the mapping is valid, 1 when it is not. With --json, a file that
    cannot be read or is not JSON is reported in the same shape, at path "$".
    """
    settings = settings_or_exit()
    try:
        document = read_document(file)
    except MappingError as exc:  # not JSON, not UTF-8, a key given twice, no such file
        if not (as_json or exc.problems):
            raise
        model, problems = None, exc.problems or [Problem("$", str(exc))]
    else:
        model, problems = validate_document(
            document, max_group_types=settings.amplitude.max_group_types
        )
    if as_json:
        print_json(
            {
                "file": str(file),
                "valid": model is not None,
                "problems": [{"path": p.path, "message": p.message} for p in problems],
            }
        )
    elif model is not None:
        relations = ", ".join(f"{m.sfdc_object} -> {m.group_type}" for m in model.mappings)
        console.print(f"[green]valid[/]: {file} ({relations})", highlight=False)
    else:
        table = Table(title=f"{file}: {plural(len(problems), 'problem')}", title_justify="left")
        table.add_column("path", style="cyan", no_wrap=True)
        table.add_column("problem")
        for problem in problems:
            table.add_row(problem.path, problem.message)
        console.print(table)
    if model is None:
        raise typer.Exit(1)


@app.command()
def show(file: Path = FILE) -> None:
    """Print the normalized form of a valid mapping (what export writes)."""
    typer.echo(dump_mapping(load_mapping(file)), nl=False)


@app.command()
def verify(
    file: Path = FILE,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Check a mapping against the live Salesforce org and Amplitude project.

    Exits 0 when no check failed (warnings allowed), 1 otherwise; missing
    credentials are listed like 'sfamp run' lists them.
    """
    settings = reporting_settings()
    mapping = _load_for_org(settings, file)
    report = run_verify(settings, mapping, json_output=as_json)
    if not report.ok:
        raise typer.Exit(1)


@app.command("import")
def import_(
    file: Path = FILE,
    no_verify: bool = NO_VERIFY,
) -> None:
    """Validate, verify, then publish a mapping to sfamp.config; running services switch to it.

    Running services check it against the org again and keep their current
    mapping if it fails.
    """
    settings = reporting_settings()
    mapping = load_mapping(file, max_group_types=settings.amplitude.max_group_types)
    topic = TopicNames(settings.kafka.topic_prefix).config
    if not no_verify:
        _require_credentials(settings)
    # Kafka first: a cluster that does not answer fails here, not after the online checks.
    stored = asyncio.run(stored_revision(quick_settings(settings.kafka)))
    if stored.problem is not None:
        console.print(
            f"[yellow]warning:[/] revision {stored.revision} in {topic} cannot be used: "
            f"{message_of(stored.problem)}; publishing replaces it",
            highlight=False,
        )
    if not no_verify:
        report = run_verify(settings, mapping)
        if not report.ok:
            console.print(f"[red]nothing published[/] to {topic}", highlight=False)
            raise typer.Exit(1)
    published, before = asyncio.run(
        publish_changed_mapping(settings.kafka, mapping, now_ms=int(time.time() * 1000))
    )
    if published is not before:
        console.print(
            f"[green]published[/] revision {published.revision} of {file} to {topic}",
            highlight=False,
        )
        previous = before.mapping if before is not None else stored.mapping
        backfill = mapping.objects_to_backfill(previous)
        if before is None and stored.revision == 0:  # the first ever: nothing sent yet
            console.print(
                "if no backfill has run yet, records already in Salesforce reach Amplitude "
                "from one:",
                highlight=False,
            )
            console.print("  sfamp backfill", highlight=False)
        elif backfill and previous is not None:
            objects = " ".join(f"--object {name}" for name in backfill)
            # The command on a line of its own, never wrapped: it is there to be copied.
            console.print("existing groups get what it adds from a backfill:", highlight=False)
            console.print(f"  sfamp backfill {objects}", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"unchanged: revision {published.revision} in {topic} is already this mapping; "
            "nothing published",
            highlight=False,
        )


def _load_for_org(settings: Settings, file: Path) -> MappingConfig:
    mapping = load_mapping(file, max_group_types=settings.amplitude.max_group_types)
    _require_credentials(settings)
    return mapping


def _require_credentials(settings: Settings) -> None:
    problems = settings.credential_problems()
    if problems:
        fail(SettingsError(problems))


@app.command()
def export(
    output: Path | None = OUTPUT,
) -> None:
    """Print (or write) the mapping currently published in sfamp.config."""
    settings = reporting_settings()
    topic = TopicNames(settings.kafka.topic_prefix).config
    published = asyncio.run(stored_revision(quick_settings(settings.kafka)))
    if published.revision == 0 and published.document is None:
        raise MappingError(
            f"no mapping is published in {topic} yet; publish one with 'sfamp config import FILE'"
        )
    if published.problem is not None:  # as written: put it right, then import it
        err_console.print(
            f"[yellow]warning:[/] revision {published.revision} in {topic} cannot be used: "
            f"{message_of(published.problem)}; exported as written",
            highlight=False,
        )
    text = stored_text(published)
    if output is None:
        typer.echo(text, nl=False)
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            raise ConfigError(f"cannot write {output}: {exc.strerror}") from exc
        console.print(f"wrote revision {published.revision} to {output}", highlight=False)
