"""`edgefleet inspect`: what is in a bundle or a .tflite model (runs on boards too)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgefleet.cli.common import emit_json


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))  # a folder: a SavedModel, say
@click.option("--trust", type=click.Path(file_okay=False, path_type=Path),
              help="Verify the bundle against the public keys in this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def inspect(path: Path, trust: Path | None, as_json: bool) -> None:
    """Show a bundle's manifest (and verify it with --trust) or a .tflite model's tensors.

    \b
    Examples:
      edgefleet inspect digits-1.efb --trust keys
      edgefleet inspect model.tflite --json
    """
    from edgefleet.inspect import inspect_path

    if trust is not None and not trust.is_dir():
        raise click.ClickException(f"--trust {trust} is not a folder of .pub keys")
    try:
        info = inspect_path(path, trust)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(info)
    else:
        click.echo(info["text"])
    if (info.get("verification") or {}).get("ok") is False or (info.get("contents") or {}).get("ok") is False:
        sys.exit(1)  # scripts use `inspect` as a check: a refused or damaged bundle must fail it
