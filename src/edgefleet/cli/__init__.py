"""The `edgefleet` command. Each sub-command imports its heavy dependencies only when
it runs, and names the extra to install when one is missing."""

from __future__ import annotations

import click

from edgefleet import __version__
from edgefleet.cli import agent, convert, demo, fleet, inspect, keys, pack
from edgefleet.cli.common import emit_json, need

__all__ = ["emit_json", "main", "need"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefleet")
def main() -> None:
    """Convert models for edge boards, ship them over MQTT, run and watch them.

    \b
    Examples:
      edgefleet keys generate
      edgefleet convert model.keras --calib calib.npz --eval eval.npz --out digits-1.efb
      edgefleet publish digits-1.efb --group kitchen --broker 127.0.0.1:1883
      edgefleet monitor --once --broker 127.0.0.1:1883
    """


for command in (keys.keys, convert.convert, convert.distill, inspect.inspect, fleet.publish, fleet.infer,
                pack.pack, agent.agent, fleet.monitor, demo.demo):
    main.add_command(command)
