"""``meshlens serve``: the OTLP/HTTP trace receiver (POST /v1/traces) in front of the lake.

The command replays what an earlier run left in the spool, prints one line with the address
it listens on (``meshlens serve: listening on http://HOST:PORT/v1/traces``; with ``--port 0``
the port is chosen free), and serves until SIGTERM or Ctrl-C, which publish everything pending
before exiting 0. Spans have no rollups: readers take them from the ``spans`` table directly.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import click

from meshlens.cli.common import data_option, load_settings
from meshlens.errors import ConfigError
from meshlens.lake import Lake


@click.command("serve")
@data_option
@click.option("--host", default=None, help="Address to bind (default: setting receiver_host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: setting receiver_port, 4318; 0 = any free port).")
@click.option("--token", default=None, help="Require 'Authorization: Bearer TOKEN' (default: setting receiver_token).")
def serve(data: str | None, host: str | None, port: int | None, token: str | None) -> None:
    """Receive OTLP/HTTP traces (protobuf or JSON, gzip) into the spans table."""
    from ingest.receiver import Receiver, ReceiverConfig, make_server

    settings = load_settings(data, receiver_host=host, receiver_port=port, receiver_token=token)
    lake = Lake(settings["data"])
    receiver = Receiver(lake, config=ReceiverConfig.from_settings(settings),
                        workers=min(2, os.cpu_count() or 1))
    try:
        server = make_server(receiver, host=settings["receiver_host"], port=int(settings["receiver_port"]))
    except OSError as exc:
        receiver.close()
        raise ConfigError(f"cannot listen on {settings['receiver_host']}:{settings['receiver_port']}: {exc.strerror}") from None
    replayed = receiver.replay()
    receiver.start()
    bound_host, bound_port = str(settings["receiver_host"]), server.server_address[1]
    if replayed:
        click.echo(f"meshlens serve: replayed {replayed} spans from the spool", err=True)
    _stop_on_signals(server)
    click.echo(f"meshlens serve: listening on http://{bound_host}:{bound_port}/v1/traces", err=False)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        receiver.close()
    click.echo(f"meshlens serve: stopped; {receiver.published_spans} spans published", err=True)


def _stop_on_signals(server: Any) -> None:
    """SIGTERM and SIGINT stop serving; the caller then publishes what is pending."""
    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


COMMANDS = [serve]
