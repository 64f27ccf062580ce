"""`edgefleet simulate`: many light simulated devices that speak the real protocol."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgefleet.cli.common import broker_option, emit_json, need, prefix_option
from edgefleet.devices.profiles import list_profiles

if TYPE_CHECKING:
    from edgefleet.fleet.connection import BrokerTarget


def _factors(pairs: tuple[str, ...], option: str) -> dict[str, float]:
    out = {}
    for pair in pairs:
        version, sep, factor = pair.partition("=")
        try:
            out[version] = float(factor.rstrip("x"))
        except ValueError:
            sep = ""
        if not sep or not version:
            raise click.BadParameter(f"{pair!r}: give VERSION=FACTOR, e.g. 3=1.5", param_hint=option)
    return out


@click.command()
@click.option("--devices", "count", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="How many devices.")
@click.option("--id-prefix", default="sim", show_default=True, help="Device ids: PREFIX-00001, ...")
@click.option("--profiles", default="rpi4,rpi5,coral-devboard", show_default=True,
              help=f"Board profiles, taken in turn ({', '.join(list_profiles())}).")
@click.option("--groups", default="sim", show_default=True,
              help="Groups, comma-separated, taken in turn (one per device).")
@click.option("--model", default="digits:1", show_default=True,
              help="NAME:VERSION the devices run at the start ('' for none).")
@click.option("--interval", "interval_s", type=click.FloatRange(0.05), default=1.0, show_default=True,
              help="Seconds between telemetry messages of a device.")
@click.option("--latency-ms", type=click.FloatRange(0.001), default=4.0, show_default=True,
              help="Invoke latency on a Raspberry Pi 4's CPU; other boards scale it.")
@click.option("--rate", "rate_per_s", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Inferences per second per device.")
@click.option("--fail-version", multiple=True, metavar="VERSION",
              help="Installs of this version fail their self-test (repeatable).")
@click.option("--slower", multiple=True, metavar="VERSION=FACTOR",
              help="This version's latency is FACTOR times the board's (repeatable).")
@click.option("--hungrier", multiple=True, metavar="VERSION=FACTOR",
              help="This version's energy per inference is FACTOR times (repeatable).")
@click.option("--install-s", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Seconds from a new desired state to active (or failed).")
@click.option("--trust", "trust_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Check desired-state signatures against this trust folder (default: not checked).")
@click.option("--duration", type=click.FloatRange(0), help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--uplink-size", type=click.IntRange(0), default=1000, show_default=True,
              help="Devices whose telemetry shares one MQTT connection (0: each its own).")
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the counts at the end as JSON.")
def simulate(count: int, id_prefix: str, profiles: str, groups: str, model: str, interval_s: float,
             latency_ms: float, rate_per_s: float, fail_version: tuple[str, ...], slower: tuple[str, ...],
             hungrier: tuple[str, ...], install_s: float, trust_dir: Path | None, duration: float | None,
             uplink_size: int, broker: BrokerTarget, prefix: str, as_json: bool) -> None:
    """Run simulated devices against the broker: each with its own connection and last will,
    a reported state, telemetry v2 shaped by its board profile, answers to inference requests,
    and installs that follow desired states (told to fail or regress with --fail-version,
    --slower, --hungrier). For load tests, rollout tests and demos; every message says
    "simulated": true. No chunk is fetched and no model runs.

    \b
    Examples:
      edgefleet simulate --devices 1000 --broker 127.0.0.1:1883
      edgefleet simulate --devices 20 --slower 2=1.5 --fail-version 3 --broker 127.0.0.1:1883
    """
    need("fleet", "paho.mqtt")
    from edgefleet.devices.profiles import ProfileError, load_profile
    from edgefleet.fleet.sim_device import Behaviour
    from edgefleet.fleet.simulator import Simulator, make_devices
    from edgefleet.protocol.desired import BundleRef
    from edgefleet.protocol.topics import Topics

    try:
        boards = [load_profile(p.strip()) for p in profiles.split(",") if p.strip()]
    except ProfileError as exc:
        raise click.BadParameter(str(exc), param_hint="--profiles") from None
    bundle = None
    if model:
        name, sep, version = model.partition(":")
        if not sep or not name or not version:
            raise click.BadParameter(f"{model!r}: give NAME:VERSION", param_hint="--model")
        # a made-up digest: the simulated bundle exists on no broker
        bundle = BundleRef(name, version, hashlib.sha256(f"simulated {model}".encode()).hexdigest())
    behaviour = Behaviour(frozenset(fail_version), _factors(slower, "--slower"),
                          _factors(hungrier, "--hungrier"), install_s)
    devices = make_devices(count, boards, [g.strip() for g in groups.split(",") if g.strip()], bundle,
                           behaviour, interval_s, latency_ms, rate_per_s, prefix=id_prefix)
    sim = Simulator(broker, Topics(prefix), devices, trust_dir, uplink_size)
    signal.signal(signal.SIGTERM, lambda *_: sim.halt())
    try:
        _start(sim, as_json)
    except OSError as exc:
        raise click.ClickException(f"cannot reach the MQTT broker at {broker.address}: {exc}; "
                                   "check --broker") from None
    if not as_json:
        click.echo(f"{count} simulated devices on {broker.address} (prefix {prefix}); Ctrl-C stops them")
    try:
        sim.run(duration)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    counts: dict[str, Any] = sim.counts.as_dict()
    if as_json:
        emit_json({"devices": count, **counts})
    else:
        click.echo(f"sent {counts['telemetry']:,} telemetry and {counts['reported']:,} reported messages, "
                   f"{counts['answers']:,} answers in {counts['seconds']:.0f} s")


def _start(sim: Any, quiet: bool) -> None:
    if quiet:
        sim.start()
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("connecting devices", total=len(sim.devices))
        sim.start(lambda done, total: bar.update(task, completed=done))
