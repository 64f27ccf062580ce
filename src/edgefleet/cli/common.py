"""What every sub-command shares: the extra check, JSON output, the broker options."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgefleet.devices.profiles import list_profiles

DEFAULT_BROKER = "localhost:1883"
DEFAULT_KEY = "keys/signing.key"
F = TypeVar("F", bound=Callable[..., Any])


def bundle_options(command: F) -> F:
    """The options every command that writes a bundle takes: signing key, name, version, target."""
    options = [
        click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=Path(DEFAULT_KEY),
                     show_default=True, help="Private signing key (edgefleet keys generate)."),
        click.option("--unsigned", is_flag=True,
                     help="No signature, for development: agents take it only with [trust] "
                          "allow_unsigned = true."),
        click.option("--name", help="Model name in the manifest (default: the model file's stem)."),
        click.option("--version", "version", default="1", show_default=True, help="Model version."),
        click.option("--target", help=f"Board profile ({', '.join(list_profiles())}); default: the "
                                      "generic one for this machine's architecture."),
    ]
    for option in reversed(options):  # decorators apply bottom-up: keep the order above in --help
        command = option(command)
    return command


def need(extra: str, *modules: str) -> None:
    """Fail with an install hint when a module of an optional extra is missing.

    find_spec looks without importing: TensorFlow alone takes seconds to import.
    """
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a missing parent package, e.g. paho for paho.mqtt
            found = False
        if not found:
            raise click.ClickException(
                f"this command needs the '{extra}' extra ({name} is missing): "
                f"pip install 'edgefleet[{extra}]'"
            )


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at PATH (None when it can): checked before hours of work,
    as a sentence that names the part of the path at fault."""
    if path.is_dir():
        return f"{path} is a folder; give a file name"
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"{blocker} is not a folder (it is a file), so nothing can be written under it"
    folder = next(p for p in path.parents if p.exists())
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _env_option(name: str, env: str, help: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(name, envvar=f"EDGEFLEET_MQTT_{env}", show_envvar=True, help=help, **kwargs)


_FILE = click.Path(dir_okay=False)
_SECURITY_OPTIONS = [
    click.option("--broker", default=lambda: os.environ.get("EDGEFLEET_BROKER", DEFAULT_BROKER),
                 show_default=f"$EDGEFLEET_BROKER or {DEFAULT_BROKER}",
                 help="MQTT broker as HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT (TLS, port 8883 "
                      "by default)."),
    _env_option("--tls", "TLS", "TLS to the broker (also with an mqtts:// address, --ca-file or "
                "--client-cert); its certificate and name are always checked.", is_flag=True),
    _env_option("--ca-file", "CA_FILE", "PEM file of the CA that signed the broker's certificate "
                "(default: the system's).", type=_FILE),
    _env_option("--client-cert", "CLIENT_CERT", "Client certificate (PEM), for brokers that ask for one.",
                type=_FILE),
    _env_option("--client-key", "CLIENT_KEY", "The client certificate's private key (PEM).", type=_FILE),
    _env_option("--username", "USERNAME", "MQTT username."),
    _env_option("--password-file", "PASSWORD_FILE", "File whose first line is the MQTT password (or set "
                "$EDGEFLEET_MQTT_PASSWORD).", type=_FILE),
]


def broker_option(command: F) -> F:
    """--broker and the TLS and login options, handed to COMMAND as one BrokerTarget `broker`."""

    @functools.wraps(command)
    def with_target(*args: Any, **kwargs: Any) -> Any:
        need("device", "paho.mqtt")  # imported only now: `edgefleet --help` works without it
        from edgefleet.fleet.connection import BrokerError, target
        from edgefleet.mqtt_security import MqttSecurity

        security = MqttSecurity(
            tls=kwargs.pop("tls"), ca_file=kwargs.pop("ca_file") or "",
            cert_file=kwargs.pop("client_cert") or "", key_file=kwargs.pop("client_key") or "",
            username=kwargs.pop("username") or "", password_file=kwargs.pop("password_file") or "",
            password=os.environ.get("EDGEFLEET_MQTT_PASSWORD", ""))
        try:
            kwargs["broker"] = target(kwargs["broker"], security)
        except BrokerError as exc:
            raise click.BadParameter(str(exc), param_hint="--broker") from None
        return command(*args, **kwargs)

    for option in reversed(_SECURITY_OPTIONS):  # decorators apply bottom-up: keep the order above
        with_target = option(with_target)
    return with_target  # type: ignore[return-value]
prefix_option = click.option(
    "--prefix", default=lambda: os.environ.get("EDGEFLEET_PREFIX", "edgefleet"),
    show_default="$EDGEFLEET_PREFIX or edgefleet", help="Base topic of the fleet.")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in '90s', '10m', '1h', '2d' or '1h30m'."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise click.BadParameter(f"{text!r} is not a duration such as 30s, 10m, 1h or 2d")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def connect_or_fail(broker: Any, role: str) -> Any:
    """A connected client for ROLE (fleet/connection.py), or the broker's refusal as a click error."""
    from edgefleet.fleet.connection import BrokerError, connect

    try:
        return connect(broker, role)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
