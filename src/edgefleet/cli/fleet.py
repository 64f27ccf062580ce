"""`edgefleet publish`, `infer` and `monitor`: the fleet's commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgefleet.cli.common import (
    DEFAULT_KEY,
    broker_option,
    connect_or_fail,
    emit_json,
    need,
    parse_duration,
    prefix_option,
)
from edgefleet.protocol.limits import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

if TYPE_CHECKING:
    from edgefleet.fleet.connection import BrokerTarget


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))  # a folder gets a message
@click.option("--device", "devices", multiple=True, help="Device id to run it (repeatable).")
@click.option("--group", "groups", multiple=True, help="Group to run it (repeatable).")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=Path(DEFAULT_KEY),
              show_default=True, help="Private key that signs the transfer manifest and desired states.")
@click.option("--unsigned", is_flag=True,
              help="No signatures, for development: agents take them only with [trust] "
                   "allow_unsigned = true.")
@click.option("--chunk-size", default=DEFAULT_CHUNK_SIZE, show_default=True,
              type=click.IntRange(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
              help="Bytes per retained chunk (1 KiB to 120 KiB, below every common broker's limit).")
@click.option("--rollback", is_flag=True,
              help="Let devices that run a newer version of this model go back to this one "
                   "(without it they refuse a downgrade).")
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def publish(bundle: Path, devices: tuple[str, ...], groups: tuple[str, ...], key: Path,
            chunk_size: int, unsigned: bool, rollback: bool, broker: BrokerTarget, prefix: str,
            as_json: bool) -> None:
    """Put BUNDLE on the broker as retained chunks and set the desired state, signed with
    the same key as the transfer.

    \b
    Examples:
      edgefleet publish digits-2.efb --group kitchen --broker 127.0.0.1:1883
      edgefleet publish digits-1.efb --group kitchen --rollback --broker 127.0.0.1:1883
    """
    need("device", "paho.mqtt")
    from edgefleet.file_kinds import describe, model_not_bundle
    from edgefleet.fleet.connection import BrokerError, close, connect
    from edgefleet.fleet.publish import PublishError, publish_bundle
    from edgefleet.protocol.bundle import BundleError
    from edgefleet.protocol.delivery import DeliveryError
    from edgefleet.protocol.signing import SignatureError, load_signer
    from edgefleet.protocol.topics import Topics

    wrong = model_not_bundle(bundle)
    if wrong is not None or bundle.is_dir():  # before the key and the broker: nothing to send
        raise click.ClickException(wrong or f"{bundle} is {describe(bundle)}, not a bundle (.efb)")
    if not devices and not groups:
        click.echo("note: no --device or --group given; the bundle is stored on the broker "
                   "but no device is told to run it", err=True)
    try:
        signing_key = load_signer(None if unsigned else key)
        client = connect(broker, "publish")
    except (SignatureError, BrokerError) as exc:
        raise click.ClickException(str(exc)) from None
    # a progress bar where rich is installed (the fleet extra); a board with the device extra alone
    # publishes without one
    bar_wanted = not as_json and importlib.util.find_spec("rich") is not None
    try:
        if not bar_wanted:
            result = publish_bundle(client, Topics(prefix), bundle, signing_key, devices, groups,
                                    chunk_size, rollback=rollback)
        else:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task("publishing chunks", total=None)
                result = publish_bundle(
                    client, Topics(prefix), bundle, signing_key, devices, groups, chunk_size,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    rollback=rollback)
    except (BundleError, DeliveryError, PublishError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        close(client)
    if result.bundle_signed_by != signing_key.key_id:
        click.echo(f"note: the bundle is signed by key {result.bundle_signed_by}, the transfer by "
                   f"{signing_key.key_id}; devices must trust both", err=True)
    if as_json:
        emit_json(result.as_dict())
    else:
        targets = [f"device {d}" for d in devices] + [f"group {g}" for g in groups]
        what = "desired (as a rollback)" if rollback else "desired"
        click.echo(f"published {result.bundle_id}: {result.bundle_bytes} bytes in {result.chunks} "
                   f"chunk(s) in {result.seconds:.2f} s, signed by key {result.signed_by}; "
                   f"{what} for {', '.join(targets) or 'nobody'}")


@click.command()
@click.argument("inputs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", required=True, help="Device id to ask.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds to wait.")
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer (every output) as JSON.")
def infer(inputs: Path, device: str, timeout: float, broker: BrokerTarget, prefix: str,
          as_json: bool) -> None:
    """Ask DEVICE over MQTT to run its active model on INPUTS: a .npy array (one sample or
    a batch) for a one-input model, or a .npz with one array per input name (or `x`).

    \b
    Example:
      edgefleet infer three.npy --device pi-kitchen-01 --broker 127.0.0.1:1883
    """
    need("device", "paho.mqtt")
    from edgefleet.fleet.connection import close
    from edgefleet.fleet.infer_client import InferenceFailed, MqttInferClient, answer_text, read_inputs
    from edgefleet.protocol.limits import MAX_INFER_REQUEST_BYTES
    from edgefleet.protocol.topics import Topics, check_id

    try:
        check_id("device", device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    try:
        x = read_inputs(inputs)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    size = x.nbytes if not isinstance(x, dict) else sum(a.nbytes for a in x.values())
    # base64 grows the arrays by a third; past the agent's limit the request would be refused
    if size * 4 // 3 + 1024 > MAX_INFER_REQUEST_BYTES:
        raise click.ClickException(
            f"{size:,} bytes of inputs exceed what one MQTT request may carry "
            f"({MAX_INFER_REQUEST_BYTES:,} bytes after base64); split the batch or use the local API")
    client = connect_or_fail(broker, "infer")
    try:
        answer = MqttInferClient(client, Topics(prefix), device).infer(x, timeout)
    except InferenceFailed as exc:
        raise click.ClickException(f"device {device}: {exc}") from None
    finally:
        close(client)
    if as_json:
        emit_json(answer)
    else:
        click.echo(answer_text(answer))


@click.command()
@broker_option
@prefix_option
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--wait", default=12.0, show_default=True, type=float,
              help="With --once: listen this long at most (stops early when every online "
                   "device has sent telemetry).")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the snapshot as JSON.")
@click.option("--group", help="Only the devices in this group.")
@click.option("--model", help="Only the devices running this model (NAME or NAME:VERSION).")
@click.option("--status", type=click.Choice(["online", "stale", "offline", "stopped", "unknown", "failed"]),
              help="Only the devices in this state (failed: their last install failed).")
@click.option("--sort", type=click.Choice(["device", "status", "model", "p95", "energy", "seen"]),
              default="device", show_default=True,
              help="Order of the devices (p95, energy, seen: highest first).")
@click.option("--share", metavar="NAME",
              help="Take telemetry through the shared subscription $share/NAME/..., so that monitors "
                   "started with the same NAME each get part of it (docs/operations.md).")
@click.option("--prometheus", "prometheus", metavar="[HOST]:PORT",
              help="Also serve the fleet's metrics for Prometheus there (as 'edgefleet exporter').")
@click.option("--publish-alerts", is_flag=True,
              help="Publish the alerts, retained, on <prefix>/alerts/<device>/<kind> while they last.")
@click.option("--history", "history", metavar="PATH|URL",
              help="Record telemetry and state changes here (default "
                   "~/.local/state/edgefleet/history.sqlite; a postgresql:// URL for a shared store); "
                   "'edgefleet report' reads it.")
@click.option("--history-every", default="10s", show_default=True,
              help="Record a device's telemetry at most this often (state changes always).")
@click.option("--no-history", is_flag=True, help="Record nothing.")
def monitor(broker: BrokerTarget, prefix: str, once: bool, wait: float, as_json: bool, group: str | None,
            model: str | None, status: str | None, sort: str, share: str | None,
            prometheus: str | None, publish_alerts: bool, history: str | None, history_every: str,
            no_history: bool) -> None:
    """A live view of the devices: status, model (active and desired), delegate, latency,
    throughput, power, energy per inference, temperature, last seen; and a table per model
    version across the fleet.

    \b
    Examples:
      edgefleet monitor --broker 127.0.0.1:1883
      edgefleet monitor --group kitchen --sort p95 --broker 127.0.0.1:1883
      edgefleet monitor --once --json --broker 127.0.0.1:1883
    """
    if as_json and not once:  # a usage error first: it holds whatever is installed
        raise click.UsageError("--json goes with --once")
    need("fleet", "rich")
    from edgefleet.fleet.connection import close
    from edgefleet.fleet.live_view import Filters
    from edgefleet.fleet.monitor import collect, render_table, watch
    from edgefleet.protocol.topics import Topics

    filters = Filters(group, model, status, sort)
    client = connect_or_fail(broker, "monitor")
    try:
        if not once:
            watch(client, Topics(prefix), filters, share, prometheus, publish_alerts,
                  None if no_history else (history or ""), parse_duration(history_every))
            return
        view = collect(client, Topics(prefix), wait)
    finally:
        close(client)
    if as_json:
        snapshot = view.snapshot()
        rows = [r for r in snapshot["devices"] if filters.keep(r)]
        snapshot["devices"] = rows
        kept = {r["device_id"] for r in rows}
        snapshot["raw"] = {d: raw for d, raw in snapshot["raw"].items() if d in kept}
        emit_json(snapshot)
    else:
        from rich.console import Console

        Console().print(render_table(view, filters))
