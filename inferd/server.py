"""Running the app as a server process: what only a real server needs.

create_app (app.py) builds an app that tests also drive without a socket; serve() adds
the process-level parts: log output, the guarded connection protocol (slow clients,
the connection cap; protocol.py), the drain and clean exit on SIGTERM/SIGINT
(lifecycle.py), and the run itself -- one process, since workers must not share an
accelerator.
"""

from __future__ import annotations

from sanic import Sanic

from inferd import logs
from inferd.config import Config
from inferd.lifecycle import exit_on_second_signal
from inferd.protocol import GuardedProtocol


def serve(app: Sanic, config: Config, *, sanic_access_log: bool = False) -> None:
    """Serve `app` until SIGTERM/SIGINT, then drain and return (exit status 0)."""
    logs.configure(config.server.log_format)
    lifecycle = app.ctx.lifecycle

    async def drain(app: Sanic) -> None:
        exit_on_second_signal()  # first: a second signal must work during the drain
        await lifecycle.begin_drain(app)
        await lifecycle.finish_in_flight(app)  # still listening: probes see "draining"

    # Stop listeners run in reverse priority order: the drain goes before any other
    # (a plugin's may wait for its own work), so no new request is taken meanwhile.
    app.before_server_stop(drain, priority=-100)
    app.after_server_stop(lifecycle.shut_down)
    app.run(
        host=config.server.host,
        port=config.server.port,
        single_process=True,  # one process per accelerator: workers must not share a GPU
        access_log=sanic_access_log,
        motd=False,
        protocol=GuardedProtocol,
    )
