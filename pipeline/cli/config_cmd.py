"""``sfamp config``: validate and show mapping files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from pipeline.cli.common import console, print_json
from pipeline.config.validation import dump_mapping, load_mapping, read_document, validate_document

app = typer.Typer(
    help="Validate, show, verify, import and export the mapping.", no_args_is_help=True
)

FILE = typer.Argument(..., help="Mapping file (JSON).", show_default=False)


@app.command()
def validate(
    file: Path = FILE,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Check a mapping file offline and list every problem with its JSON path.

    Exits 0 when the mapping is valid, 1 when it is not.
    """
    model, problems = validate_document(read_document(file))
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
        table = Table(title=f"{file}: {len(problems)} problem(s)", title_justify="left")
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
