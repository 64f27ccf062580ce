"""`edgefleet devices forget`: stop showing devices that are gone."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from edgefleet.cli.common import (
    broker_option,
    connect_or_fail,
    emit_json,
    need,
    parse_duration,
    prefix_option,
)

if TYPE_CHECKING:
    from edgefleet.fleet.connection import BrokerTarget

@click.group()
def devices() -> None:
    """What the broker keeps about devices."""


@devices.command()
@click.argument("device_ids", nargs=-1)
@click.option("--offline-for", metavar="DURATION",
              help="Also every device offline or stopped at least this long (30m, 1h, 2d).")
@click.option("--dry-run", is_flag=True, help="Say what would be forgotten; change nothing.")
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def forget(device_ids: tuple[str, ...], offline_for: str | None, dry_run: bool, broker: BrokerTarget,
           prefix: str, as_json: bool) -> None:
    """Clear the retained status and reported state of DEVICE_IDS (and, with --offline-for, of
    devices gone that long), so that monitors stop showing them. A device that comes back
    shows again. Desired states stay: see 'edgefleet desired clear'.

    \b
    Examples:
      edgefleet devices forget pi-7 pi-9 --broker 127.0.0.1:1883
      edgefleet devices forget --offline-for 7d --dry-run --broker 127.0.0.1:1883
    """
    need("fleet", "rich")
    from edgefleet.fleet.connection import close
    from edgefleet.fleet.forget import choose, clear, known
    from edgefleet.protocol.topics import Topics

    age = parse_duration(offline_for) if offline_for else None
    if not device_ids and age is None:
        raise click.UsageError("name the devices to forget, or give --offline-for")
    client = connect_or_fail(broker, "forget")
    try:
        topics = Topics(prefix)
        rows = choose(known(client, topics), device_ids, age)
        online = [r["device_id"] for r in rows if r["status"] in ("online", "stale")]
        if online:
            click.echo(f"note: {', '.join(online)} {'is' if len(online) == 1 else 'are'} online; "
                       "a running agent shows again at its next reported state", err=True)
        cleared = [] if dry_run else clear(client, topics, [r["device_id"] for r in rows])
    finally:
        close(client)
    chosen = [{"device_id": r["device_id"], "status": r["status"], "last_seen_age_s": r["last_seen_age_s"]}
              for r in rows]
    if as_json:
        emit_json({"dry_run": dry_run, "devices": chosen, "cleared_topics": cleared})
        return
    if not chosen:
        click.echo("no device matches")
    verb = "would forget" if dry_run else "forgot"
    for r in chosen:
        age_note = f", last seen {r['last_seen_age_s']:.0f} s ago" if r["last_seen_age_s"] is not None else ""
        click.echo(f"{verb} {r['device_id']} ({r['status']}{age_note})")
