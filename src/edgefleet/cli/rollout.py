"""`edgefleet rollout start|status|list|pause|resume|abort`: staged rollouts (fleet/rollout.py)."""

from __future__ import annotations

import fcntl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgefleet.cli.common import DEFAULT_KEY, broker_option, emit_json, need, parse_duration, prefix_option

if TYPE_CHECKING:
    from edgefleet.fleet.connection import BrokerTarget
    from edgefleet.fleet.rollout_state import RolloutState, RolloutStore

DEFAULT_GATE = "p95_ms<=1.2x,mj_per_inference<=1.1x,selftest=pass,errors=0"
SETTLE_S = 2.0  # retained states arrive right after subscribing
STEP_S = 0.5

_state_dir = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                          help="Where rollouts are kept (default ~/.local/state/edgefleet/rollouts).")


def _store(state_dir: Path | None) -> RolloutStore:
    from edgefleet.fleet.rollout_state import RolloutStore

    return RolloutStore(state_dir)


def _load(store: RolloutStore, rollout_id: str) -> RolloutState:
    try:
        return store.load(rollout_id)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None


@click.group()
def rollout() -> None:
    """Staged rollouts that roll back on measured regressions."""


@rollout.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--group", required=True, help="The group whose devices get the bundle.")
@click.option("--stages", default="10%,50%,100%", show_default=True,
              help="Rising shares of the group's devices, the last 100%.")
@click.option("--gate", default=DEFAULT_GATE, show_default=True,
              help="Terms each device must meet against the previous version's figures (docs/operations.md).")
@click.option("--bake", default="10m", show_default=True, help="How long the gate must hold per stage.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=Path(DEFAULT_KEY),
              show_default=True, help="Private key that signs the transfer and the desired states.")
@_state_dir
@broker_option
@prefix_option
def start(bundle: Path, group: str, stages: str, gate: str, bake: str, key: Path, state_dir: Path | None,
          broker: BrokerTarget, prefix: str) -> None:
    """Put BUNDLE on the broker and roll it out to GROUP stage by stage: the first devices (by
    id) are the canaries; each stage must hold the gate for the bake time before the next;
    a failed install or gate rolls back every device it touched. Runs until the rollout ends;
    if stopped, 'edgefleet rollout resume ID' carries on.

    \b
    Examples:
      edgefleet rollout start digits-2.efb --group kitchen --bake 10m --broker 127.0.0.1:1883
      edgefleet rollout start d-2.efb --group hall --stages 50%,100% --gate "p95_ms<=1.5x,selftest=pass"
    """
    need("fleet", "rich")
    from edgefleet.fleet.connection import BrokerError, close, connect
    from edgefleet.fleet.fleet_view import FleetView
    from edgefleet.fleet.monitor import attach
    from edgefleet.fleet.publish import PublishError, publish_bundle
    from edgefleet.fleet.rollout import group_devices, new_state, parse_stages
    from edgefleet.fleet.rollout_gate import GateError, parse_gate
    from edgefleet.protocol.bundle import BundleError
    from edgefleet.protocol.signing import SignatureError, load_signer
    from edgefleet.protocol.topics import Topics

    try:
        shares, bake_s = parse_stages(stages), parse_duration(bake)
        parse_gate(gate)
        signer = load_signer(key)
        client = connect(broker, "rollout")
    except (ValueError, GateError, SignatureError, BrokerError) as exc:
        raise click.ClickException(str(exc)) from None
    store = _store(state_dir)
    busy = [s for s in store.all() if s.group == group and s.prefix == prefix and not s.finished]
    if busy:
        close(client)
        raise click.ClickException(f"rollout {busy[0].id} of group {group} has not ended ({busy[0].phase}): "
                                   f"'edgefleet rollout resume {busy[0].id}' or 'abort {busy[0].id}' first")
    try:
        view = FleetView(Topics(prefix))
        attach(client, view)
        time.sleep(SETTLE_S)
        devices, away = group_devices(view, group)
        if not devices:
            raise click.ClickException(
                f"no online device reports group {group!r} (prefix {prefix}); 'edgefleet monitor --group "
                f"{group}' shows what the broker knows")
        if away:
            click.echo(f"note: {', '.join(away)} not online: left out of the stages; they follow the group's "
                       "desired state once the rollout completes", err=True)
        try:
            result = publish_bundle(client, Topics(prefix), bundle, signer)
        except (PublishError, BundleError) as exc:
            raise click.ClickException(str(exc)) from None
        rollout_id = f"{result.name}-{result.version}-{group}-{time.strftime('%Y%m%d-%H%M%S')}"
        state = new_state(rollout_id, {"bundle_id": result.bundle_id, "name": result.name,
                                       "version": result.version, "sha256": result.bundle_sha256,
                                       "path": str(bundle.resolve())},
                          group, prefix, shares, gate, bake_s, view, devices)
        store.save(state)
        click.echo(f"rollout {rollout_id}: {result.name} {result.version} to {len(devices)} devices of "
                   f"{group} in {len(shares)} stages ({stages}), bake {bake}")
        _run(state, store, client, view, signer)
    finally:
        close(client)


def _run(state: RolloutState, store: RolloutStore, client: Any, view: Any, signer: Any) -> None:
    from edgefleet.fleet.rollout import Runner

    lock = (store.folder / f"{state.id}.run").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise click.ClickException(f"rollout {state.id} is run by another process; 'edgefleet rollout "
                                   "status' shows it") from None
    runner = Runner(state, store, client, view, signer, say=lambda text: click.echo(f"{state.id}: {text}"))
    try:
        while not state.finished:
            runner.step()
            time.sleep(STEP_S)
    except KeyboardInterrupt:
        click.echo(f"stopped; 'edgefleet rollout resume {state.id}' carries on", err=True)
        raise SystemExit(130) from None
    finally:
        lock.close()
    if state.phase != "done":
        raise SystemExit(1)


@rollout.command()
@click.argument("rollout_id")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=Path(DEFAULT_KEY),
              show_default=True, help="Private key that signs the desired states.")
@_state_dir
@broker_option
def resume(rollout_id: str, key: Path, state_dir: Path | None, broker: BrokerTarget) -> None:
    """Carry on with ROLLOUT_ID: un-pause it, and run it in this process if none runs it (after
    the operator process that started it was stopped or killed)."""
    need("fleet", "rich")
    from edgefleet.fleet.connection import BrokerError, close, connect
    from edgefleet.fleet.fleet_view import FleetView
    from edgefleet.fleet.monitor import attach
    from edgefleet.protocol.signing import SignatureError, load_signer
    from edgefleet.protocol.topics import Topics

    store = _store(state_dir)
    state = _load(store, rollout_id)
    if state.finished:
        raise click.ClickException(f"rollout {rollout_id} has ended ({state.phase}); nothing to resume")
    if state.phase == "paused":
        store.request(rollout_id, "resume")
        state = store.load(rollout_id)
    probe = (store.folder / f"{rollout_id}.run").open("w")
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        click.echo(f"rollout {rollout_id} runs in another process; asked it to resume")
        return
    finally:
        probe.close()
    try:
        signer = load_signer(key)
        client = connect(broker, "rollout")
    except (SignatureError, BrokerError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        view = FleetView(Topics(state.prefix))
        attach(client, view)
        time.sleep(SETTLE_S)
        click.echo(f"rollout {rollout_id}: carrying on at stage {state.stage + 1}/{len(state.stages)} "
                   f"({state.phase})")
        _run(state, store, client, view, signer)
    finally:
        close(client)


def _request(what: str) -> click.Command:
    @click.command(name=what, help=f"Ask the process running ROLLOUT_ID to {what} it.")
    @click.argument("rollout_id")
    @_state_dir
    def command(rollout_id: str, state_dir: Path | None) -> None:
        store = _store(state_dir)
        state = _load(store, rollout_id)
        if state.finished:
            raise click.ClickException(f"rollout {rollout_id} has ended ({state.phase})")
        store.request(rollout_id, what)
        click.echo(f"asked rollout {rollout_id} to {what}" + (
            "; the process running it acts within a second" if what != "abort" else
            ": the process running it rolls back the devices it touched"))
    return command


rollout.add_command(_request("pause"))
rollout.add_command(_request("abort"))


@rollout.command()
@click.argument("rollout_id")
@_state_dir
@click.option("--json", "as_json", is_flag=True, help="Print the whole state as JSON.")
def status(rollout_id: str, state_dir: Path | None, as_json: bool) -> None:
    """Where ROLLOUT_ID stands, and every decision with the figures it was made on (--json)."""
    from dataclasses import asdict

    state = _load(_store(state_dir), rollout_id)
    if as_json:
        emit_json(asdict(state))
        return
    b = state.bundle
    click.echo(f"{state.id}: {b['name']} {b['version']} to group {state.group}: {state.phase}, stage "
               f"{state.stage + 1}/{len(state.stages)} ({100 * state.stages[state.stage]:.0f} %), "
               f"{len(state.touched)} of {len(state.devices)} devices told")
    for d in state.decisions:
        when = time.strftime("%H:%M:%S", time.localtime(d["at"]))
        click.echo(f"  {when} stage {d['stage'] + 1}: {d['decision']}: {d['reason']}")


@rollout.command(name="list")
@_state_dir
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def list_(state_dir: Path | None, as_json: bool) -> None:
    """Every rollout kept, oldest first."""
    states = _store(state_dir).all()
    if as_json:
        emit_json([{"id": s.id, "phase": s.phase, "stage": s.stage, "stages": s.stages, "group": s.group,
                    "bundle": s.bundle, "updated_at": s.updated_at} for s in states])
        return
    if not states:
        click.echo("no rollouts yet")
    for s in states:
        click.echo(f"{s.id}  {s.phase:12s} stage {s.stage + 1}/{len(s.stages)}  group {s.group}")
