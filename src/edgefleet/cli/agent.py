"""`edgefleet agent run`: the on-device daemon."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from edgefleet.cli.common import need


@click.group()
def agent() -> None:
    """The on-device daemon.

    \b
    Example:
      edgefleet agent run --config /etc/edgefleet/agent.toml
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

    \b
    Example:
      edgefleet agent run --config /etc/edgefleet/agent.toml --log-level DEBUG
    """
    need("device", "paho.mqtt", "psutil", "cryptography")
    from edgefleet.agent.config import ConfigError, load_config
    from edgefleet.agent.daemon import Agent, AgentStartError

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        Agent(load_config(config_path)).run()
    except (ConfigError, AgentStartError) as exc:
        raise click.ClickException(str(exc)) from None
