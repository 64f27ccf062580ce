"""`edgefleet demo`: the whole path on an embedded broker."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgefleet.cli.common import need


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the demo's files here (default: a temporary folder, removed after).")
@click.option("--requests", "n_requests", default=200, show_default=True, type=click.IntRange(1),
              help="Inference requests to send to the agent.")
def demo(workdir: Path | None, n_requests: int) -> None:
    """The whole path on an embedded broker: train, convert, sign, publish, run, report.

    \b
    Example:
      edgefleet demo --workdir demo-files --requests 50
    """
    need("converter", "tensorflow")
    need("fleet", "amqtt", "rich")
    from edgefleet.demo import run_demo

    sys.exit(run_demo(workdir, n_requests))
