"""The `edgefleet` command. Each sub-command imports its heavy dependencies only when
it runs, and names the extra to install when one is missing."""

from __future__ import annotations

import importlib

import click

from edgefleet import __version__
from edgefleet.cli.common import emit_json, need

__all__ = ["emit_json", "main", "need"]

# command -> module in edgefleet.cli and the command's name there, imported when the command
# runs: a board running `edgefleet agent run` never loads the converter's or the fleet's CLI
COMMANDS = {"keys": ("keys", "keys"), "convert": ("convert", "convert"), "distill": ("convert", "distill"),
            "inspect": ("inspect", "inspect"), "publish": ("fleet", "publish"), "infer": ("fleet", "infer"),
            "pack": ("pack", "pack"), "agent": ("agent", "agent"), "monitor": ("fleet", "monitor"),
            "demo": ("demo", "demo"), "rollback": ("desired", "rollback"), "desired": ("desired", "desired"),
            "gc": ("desired", "gc"), "devices": ("devices", "devices"), "simulate": ("simulate", "simulate"),
            "rollout": ("rollout", "rollout"), "exporter": ("exporter", "exporter"),
            "report": ("report", "report")}


class _LazyGroup(click.Group):
    """click's documented pattern for lazily loaded sub-commands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, name = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(f"edgefleet.cli.{module}"), name)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
