"""`edgefleet agent run | check-config | install-service`: the on-device daemon and its unit."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from edgefleet.accelerators import NAMES
from edgefleet.cli.common import emit_json, need

UNIT_DIR = Path("/etc/systemd/system")


@click.group()
def agent() -> None:
    """The on-device daemon.

    \b
    Examples:
      edgefleet agent check-config /etc/edgefleet/agent.toml
      sudo edgefleet agent install-service --config /etc/edgefleet/agent.toml
      edgefleet agent run --config /etc/edgefleet/agent.toml
      edgefleet agent bench model.tflite --runs 500
    """


@agent.command("run")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The agent's TOML file (systemd/agent.example.toml explains every key).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="The least severe log messages to print on stderr.")
def agent_run(config_path: Path, log_level: str) -> None:
    """Follow the desired state, install bundles, serve inference, report telemetry.

    Under systemd (Type=notify) it says READY=1 once serving, STATUS= on each change, and
    pets the watchdog from its main loop. A config it cannot use exits with status 78,
    which the unit does not restart.

    \b
    Example:
      edgefleet agent run --config /etc/edgefleet/agent.toml --log-level DEBUG
    """
    need("device", "paho.mqtt", "nacl")
    from edgefleet.agent import heap
    from edgefleet.agent.config import ConfigError, load_config
    from edgefleet.agent.daemon import Agent, AgentStartError
    from edgefleet.agent.service_unit import EXIT_CONFIG

    heap.one_arena()  # before any thread starts (edgefleet.agent.heap says why)

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        error = click.ClickException(f"{exc}\n(edgefleet agent check-config {config_path} lists them all)")
        error.exit_code = EXIT_CONFIG  # restarting cannot fix a config (RestartPreventExitStatus=)
        raise error from None
    try:
        Agent(cfg).run()
    except AgentStartError as exc:
        raise click.ClickException(str(exc)) from None


@agent.command("bench")
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--runs", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Timed inferences (after the warm-up).")
@click.option("--warmup", type=click.IntRange(0, 10_000), default=10, show_default=True,
              help="Untimed inferences first, as litert-benchmark's --warmup_runs.")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Interpreter threads, as litert-benchmark's --num_threads.")
@click.option("--delegate", type=click.Choice(NAMES), default="cpu", show_default=True,
              help="The accelerator: cpu (XNNPACK), edgetpu (libedgetpu.so.1), an external delegate "
                   "(vx, ethos-u, teflon, armnn, or external with --delegate-library) or LiteRT's "
                   "litert-gpu / litert-npu; refused when it does not load (docs/runtime.md).")
@click.option("--delegate-library", default="", metavar="PATH",
              help="The delegate's .so instead of its known default.")
@click.option("--api", type=click.Choice(["interpreter", "compiled"]), default="interpreter",
              show_default=True,
              help="LiteRT's Interpreter (what the agent runs) or its CompiledModel API (what "
                   "litert-benchmark runs).")
@click.option("--profile", default="", help="Board profile for the power estimate (default: detected).")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON.")
def agent_bench(model_path: Path, runs: int, warmup: int, threads: int, delegate: str, delegate_library: str,
                api: str, profile: str, as_json: bool) -> None:
    """Time MODEL (.tflite or bundle) on this board as litert-benchmark does, plus its memory
    and its power and energy per inference (measured where the board has a sensor, else the
    profile's estimate, labelled).

    \b
    Example:
      edgefleet agent bench digits-1.efb --runs 500 --threads 2
      litert-benchmark --model model.tflite --num_runs 500 --num_threads 2   # to compare
    """
    need("device", "psutil")
    from edgefleet.agent.bench import BenchOptions, bench, bench_text
    from edgefleet.agent.config import BoardSettings
    from edgefleet.devices.profiles import list_profiles
    from edgefleet.protocol.bundle import BundleError
    from edgefleet.runtime import RuntimeLoadError

    if profile and profile not in list_profiles():
        raise click.BadParameter(f"{profile!r} is not a board profile; choose one of {list_profiles()}",
                                 param_hint="--profile")
    options = BenchOptions(runs, warmup, threads, delegate, BoardSettings(profile=profile), api,
                           delegate_library)
    try:
        result = bench(model_path, options)
    except (RuntimeLoadError, BundleError, ValueError) as exc:
        raise click.ClickException(f"{model_path}: {exc}") from None
    if as_json:
        emit_json(result)
    else:
        click.echo("\n".join(bench_text(result)))


@agent.command("check-config")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON (exit status as without).")
def check_config(config_path: Path, as_json: bool) -> None:
    """Check an agent config before the agent runs on it; exit 1 if it cannot.

    Beyond what `agent run` refuses at start (unknown keys, wrong types, bad values):
    the trust folder and its keys, the state folder, the broker's address, the local
    API's address, the runtime and delegate libraries. Relative paths resolve against
    the config file's folder. Warnings do not fail the check.

    \b
    Examples:
      edgefleet agent check-config /etc/edgefleet/agent.toml
      edgefleet agent check-config agent.toml --json
    """
    need("device", "nacl")
    from edgefleet.agent.config_check import check_config as run_checks

    report = run_checks(config_path)
    if as_json:
        emit_json(report.as_json())
    else:
        _print_report(report)
    if not report.ok:
        sys.exit(1)


def _print_report(report: Any) -> None:
    errors = sum(p.level == "error" for p in report.problems)
    warnings = len(report.problems) - errors
    if not report.problems:
        cfg = report.config
        mqtt = cfg.mqtt
        click.echo(f"{report.path}: OK (device {cfg.device_id}, broker {mqtt.host}:{mqtt.broker_port}"
                   f"{' over TLS' if mqtt.security.uses_tls else ''}, state {cfg.state_dir}, "
                   f"trust {cfg.trust_dir})")
        return
    verdict = f"{errors} error(s), the agent would not work" if errors else "OK"
    click.echo(f"{report.path}: {verdict}, {warnings} warning(s)", err=not report.ok)
    for problem in report.problems:
        click.echo(f"  {problem}", err=not report.ok)


def _exec_start(config: Path) -> list[str]:
    """The command the unit runs: this installation's own `edgefleet`, not whichever is first
    on root's PATH. The venv's path is kept as is (resolving its python's symlink would
    leave the venv)."""
    script = Path(sys.executable).with_name("edgefleet")
    prefix = [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "edgefleet"]
    return [*prefix, "agent", "run", "--config", str(config)]


def _sandbox_problems(cfg: Any, config: Path, exec_start: list[str]) -> list[str]:
    from edgefleet.agent.service_unit import hidden_by_sandbox

    places = {"the edgefleet command": exec_start[0], "the config": config,
              "state_dir": cfg.state_dir, "trust_dir": cfg.trust_dir}
    if cfg.serve.http.startswith("unix:"):
        places["[serve] http's socket"] = cfg.serve.http[len("unix:"):]
    problems = [f"{what} ({path}) is hidden from the service by {setting}: move it (e.g. to /opt, "
                "/etc/edgefleet or /var/lib/edgefleet)" for what, path in places.items()
                if (setting := hidden_by_sandbox(path))]
    problems += [f"{what} ({path}) holds white space, which unit paths cannot"
                 for what, path in places.items() if any(c.isspace() for c in str(path))]
    return problems


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(args)} failed ({done.returncode}): "
                                   f"{(done.stderr or done.stdout).strip()}\n"
                                   "see: journalctl -u edgefleet-agent -e")


@agent.command("install-service")
@click.option("--config", "config_path", default="/etc/edgefleet/agent.toml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The agent's TOML file for the unit.")
@click.option("--user", default="edgefleet", show_default=True,
              help="The system user the agent runs as (in the accelerators' groups: plugdev, apex, video).")
@click.option("--dry-run", is_flag=True, help="Print the unit instead of installing it (no root needed).")
def install_service(config_path: Path, user: str, dry_run: bool) -> None:
    """Check the config, write the systemd unit, then daemon-reload and enable --now.

    The unit (systemd/edgefleet-agent.service has the defaults) runs this installation's
    edgefleet as USER, Type=notify with a watchdog, in a sandbox: read-only system, no
    capabilities, only the accelerators' devices (docs/operations.md). It refuses when the
    config has errors, when a path the agent needs is hidden by the sandbox, when USER
    does not exist, and when not run as root.

    \b
    Examples:
      edgefleet agent install-service --dry-run
      sudo edgefleet agent install-service --config /etc/edgefleet/agent.toml --user edgefleet
    """
    need("device", "nacl")
    import pwd

    from edgefleet.agent.config_check import check_config as run_checks
    from edgefleet.agent.durable import atomic_write
    from edgefleet.agent.service_unit import UNIT_NAME, render_unit, uses_state_directory

    if not dry_run and os.geteuid() != 0:
        raise click.ClickException("install-service writes /etc/systemd/system and runs systemctl: run it as "
                                   "root (sudo edgefleet agent install-service ...), or add --dry-run to "
                                   "print the unit")
    config = config_path.absolute()
    report = run_checks(config)
    if not report.ok:
        _print_report(report)
        what = "printed" if dry_run else "installed"
        raise click.ClickException(f"fix the config first; the unit was not {what}")
    for problem in report.problems:  # warnings: worth seeing, not worth refusing
        click.echo(f"{config}: {problem}", err=True)
    cfg = report.config
    exec_start = _exec_start(config)
    problems = _sandbox_problems(cfg, config, exec_start)
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        account = None
        problems.append(f"user {user!r} does not exist; create it: useradd --system --home-dir "
                        f"/var/lib/edgefleet --shell /usr/sbin/nologin {user} (then usermod -aG "
                        f"plugdev,apex,video {user} for the groups this board has)")
    if problems and not dry_run:
        raise click.ClickException("cannot install the unit:\n  " + "\n  ".join(problems))
    for problem in problems:
        click.echo(f"note: {problem}", err=True)
    socket = cfg.serve.http[len("unix:"):] if cfg.serve.http.startswith("unix:") else None
    unit = render_unit(exec_start, user, cfg.state_dir, socket)
    if dry_run:
        click.echo(unit, nl=False)
        return
    if shutil.which("systemctl") is None:
        raise click.ClickException("systemctl not found: this system does not run systemd")
    if not uses_state_directory(cfg.state_dir):  # ReadWritePaths= needs it to exist, owned by USER
        assert account is not None  # a missing user was refused above
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        os.chown(cfg.state_dir, account.pw_uid, account.pw_gid)
    path = UNIT_DIR / UNIT_NAME
    atomic_write(path, unit.encode())
    path.chmod(0o644)
    click.echo(f"wrote {path}")
    _run("systemctl", "daemon-reload")
    _run("systemctl", "enable", "--now", UNIT_NAME)  # Type=notify: returns once the agent says READY=1
    status = subprocess.run(["systemctl", "show", "-p", "StatusText", "--value", UNIT_NAME],
                            capture_output=True, text=True).stdout.strip()
    click.echo(f"{UNIT_NAME} enabled and running: {status or 'no status yet'}\n"
               "follow it: journalctl -u edgefleet-agent -f")
