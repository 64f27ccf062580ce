"""`edgefleet exporter`: the fleet's metrics for Prometheus, without a screen."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from edgefleet.cli.common import broker_option, connect_or_fail, need, prefix_option

if TYPE_CHECKING:
    from edgefleet.fleet.connection import BrokerTarget


@click.command()
@click.option("--listen", default=":9108", show_default=True, metavar="[HOST]:PORT",
              help="Where to serve /metrics (no host: every interface).")
@click.option("--share", metavar="NAME",
              help="Take telemetry through $share/NAME/..., so that exporters with the same NAME each "
                   "serve part of the fleet's telemetry (docs/operations.md).")
@click.option("--publish-alerts", is_flag=True,
              help="Publish the alerts, retained, on <prefix>/alerts/<device>/<kind> while they last "
                   "(checked every --alert-interval seconds).")
@click.option("--alert-interval", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between two checks of the alerts.")
@broker_option
@prefix_option
def exporter(listen: str, share: str | None, publish_alerts: bool, alert_interval: float,
             broker: BrokerTarget, prefix: str) -> None:
    """Serve the fleet's metrics for Prometheus at http://LISTEN/metrics: device status and last
    seen, latency (a histogram from the devices' own buckets, native in OpenMetrics 2.0), power,
    energy per inference, temperature, throttling, CPU fallback, failed installs, and
    per-version figures across the fleet. docs/prometheus/ holds alert rules and a Grafana
    dashboard for them.

    \\b
    Examples:
      edgefleet exporter --broker 127.0.0.1:1883
      edgefleet exporter --listen 127.0.0.1:9108 --share exporters --broker 127.0.0.1:1883
    """
    need("fleet", "prometheus_client")
    from edgefleet.fleet.connection import close
    from edgefleet.fleet.exporter import serve
    from edgefleet.fleet.fleet_view import FleetView
    from edgefleet.fleet.monitor import attach
    from edgefleet.protocol.topics import Topics

    client = connect_or_fail(broker, "exporter")
    view = FleetView(Topics(prefix))
    attach(client, view, share)
    try:
        server = serve(view, listen)
    except (OSError, ValueError) as exc:
        close(client)
        raise click.ClickException(f"cannot serve on {listen}: {exc}") from None
    host, port = server.server_address[:2]
    click.echo(f"serving the fleet's metrics at http://{host}:{port}/metrics (Ctrl-C stops)")
    book = None
    if publish_alerts:
        from edgefleet.fleet.alerts import evaluate, publishing_book
        from edgefleet.fleet.fleet_view import versions

        book = publishing_book(client, prefix)
    try:
        while True:
            time.sleep(alert_interval if book else 3600)
            if book is not None:
                book.update(evaluate(view, versions(view)))
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        close(client)
