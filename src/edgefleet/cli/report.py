"""`edgefleet report`: plots and a summary of the monitor's history."""

from __future__ import annotations

from pathlib import Path

import click

from edgefleet.cli.common import emit_json, need, parse_duration


@click.command()
@click.option("--since", default="1h", show_default=True, help="How far back: 30m, 1h, 7d.")
@click.option("--history", "where", metavar="PATH|URL",
              help="The history the monitor records (default ~/.local/state/edgefleet/history.sqlite; "
                   "a postgresql:// URL for a shared store).")
@click.option("--out", "folder", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for the PNG plots and the summary.")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True,
              help="The summary's format.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def report(since: str, where: str | None, folder: Path, fmt: str, as_json: bool) -> None:
    """Write PNG plots of latency, power, energy per inference and temperature over time, per
    device and per model version, and a summary (a table per version and the state changes)
    from the history `edgefleet monitor` records.

    \\b
    Examples:
      edgefleet report --since 1h --out report/
      edgefleet report --since 7d --format html --history postgresql://ops@db/edgefleet
    """
    need("fleet", "matplotlib", "sqlalchemy")
    from sqlalchemy.exc import SQLAlchemyError

    from edgefleet.fleet.history import History
    from edgefleet.fleet.report import write_report

    seconds = parse_duration(since)
    try:
        history = History(where)
        try:
            result = write_report(history, folder, seconds, fmt)
        finally:
            history.close()
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the history at {where or 'the default file'}: "
                                   f"{exc}") from None
    if as_json:
        emit_json(result)
        return
    if not result["rows"]:
        click.echo(f"no telemetry in the history for the last {since}: is 'edgefleet monitor' recording? "
                   "(it does by default, to the same file)", err=True)
    click.echo(f"{result['summary']}: {result['devices']} devices, {result['rows']} telemetry rows, "
               f"{result['events']} events, {len(result['images'])} plots")
