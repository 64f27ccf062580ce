"""`edgefleet rollback` and `edgefleet desired clear`: desired states without a new bundle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgefleet.cli.common import (
    DEFAULT_KEY,
    F,
    broker_option,
    connect_or_fail,
    emit_json,
    need,
    prefix_option,
)

if TYPE_CHECKING:
    from edgefleet.fleet.connection import BrokerTarget

_targets = [
    click.option("--device", "devices", multiple=True, help="Device id (repeatable)."),
    click.option("--group", "groups", multiple=True, help="Group (repeatable)."),
]


def _with_targets(command: F) -> F:
    for option in reversed(_targets):
        command = option(command)
    return command


def _run(action: Callable[[Any, Any], list[str]], broker: BrokerTarget, prefix: str, devices: tuple[str, ...],
         groups: tuple[str, ...], what: str, as_json: bool) -> None:
    """ACTION(client, topics) on one connection; the topics it set, printed."""
    from edgefleet.fleet.connection import close
    from edgefleet.fleet.publish import PublishError
    from edgefleet.protocol.topics import Topics

    if not devices and not groups:
        raise click.UsageError("name at least one --device or --group")
    client = connect_or_fail(broker, "desired")
    try:
        topics = action(client, Topics(prefix))
    except (PublishError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        close(client)
    targets = [f"device {d}" for d in devices] + [f"group {g}" for g in groups]
    if as_json:
        emit_json({"devices": list(devices), "groups": list(groups), "topics": topics})
    else:
        click.echo(f"{what} for {', '.join(targets)}")


@click.command()
@_with_targets
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=Path(DEFAULT_KEY),
              show_default=True, help="Private key that signs the rollback.")
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rollback(devices: tuple[str, ...], groups: tuple[str, ...], key: Path, broker: BrokerTarget, prefix: str,
             as_json: bool) -> None:
    """Send each device back to the bundle it ran before (kept on its disk: no download).

    A signed desired state that each device resolves against its own history, once: it is
    then the device's desired state until the next publish. To go to a version of your
    choosing instead: edgefleet publish OLD.efb --device ID --rollback.

    \b
    Examples:
      edgefleet rollback --group kitchen --broker 127.0.0.1:1883
      edgefleet rollback --device pi-kitchen-01 --json
    """
    need("device", "paho.mqtt")
    from edgefleet.fleet.desired import roll_back
    from edgefleet.protocol.signing import SignatureError, SigningKey

    try:
        signing_key = SigningKey.load(key)
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from None
    _run(lambda client, topics: roll_back(client, topics, signing_key, devices, groups),
         broker, prefix, devices, groups, "rollback to the previous bundle sent", as_json)


@click.group()
def desired() -> None:
    """The desired states on the broker: what devices and groups are told to run."""


@desired.command("clear")
@_with_targets
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def desired_clear(devices: tuple[str, ...], groups: tuple[str, ...], broker: BrokerTarget, prefix: str,
                  as_json: bool) -> None:
    """Remove the retained desired state of devices or groups. The devices keep running what
    they run; a device whose own is cleared follows its groups' again.

    \b
    Example:
      edgefleet desired clear --device pi-kitchen-01 --broker 127.0.0.1:1883
    """
    need("device", "paho.mqtt")
    from edgefleet.fleet.desired import clear

    _run(lambda client, topics: clear(client, topics, devices, groups),
         broker, prefix, devices, groups, "desired state cleared", as_json)


@click.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--wait", default=10.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds to wait at most for the broker's retained messages.")
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def gc(dry_run: bool, wait: float, broker: BrokerTarget, prefix: str, as_json: bool) -> None:
    """Remove the retained bundles (manifest and chunks) that no desired state names and no
    device reports as active, previous, being installed or desired.

    \b
    Examples:
      edgefleet gc --dry-run --broker 127.0.0.1:1883
      edgefleet gc --json
    """
    need("device", "paho.mqtt")
    from dataclasses import asdict

    from edgefleet.fleet import gc as collector
    from edgefleet.fleet.connection import BrokerError, close
    from edgefleet.fleet.publish import PublishError
    from edgefleet.protocol.topics import Topics

    topics = Topics(prefix)
    client = connect_or_fail(broker, "gc")
    try:
        found = collector.collect(client, topics, wait)
        unused = collector.unused(found)
        if not dry_run:
            for bundle in unused:
                collector.remove(client, topics, bundle)
    except (BrokerError, PublishError) as exc:
        raise click.ClickException(f"{exc}; nothing is lost: run edgefleet gc again") from None
    finally:
        close(client)
    kept = {b: found.named[b] for b in sorted(found.manifests) if b in found.named}
    if as_json:
        emit_json({"dry_run": dry_run, "would_remove" if dry_run else "removed": [asdict(b) for b in unused],
                   "kept": kept})
        return
    verb = "would remove" if dry_run else "removed"
    for b in unused:
        size = f"{b.bundle_bytes:,} bytes" if b.bundle_bytes is not None else "size unknown"
        click.echo(f"{verb} {b.bundle_id} ({size}, {b.chunks} chunk(s))")
    for bundle_id, names in kept.items():
        click.echo(f"kept {bundle_id}: {', '.join(names)}")
    click.echo(f"{verb} {len(unused)} bundle(s), kept {len(kept)}")
