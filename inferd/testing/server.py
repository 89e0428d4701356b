"""A real `inferd` server process that serves FakeBackend: for process-level tests.

    python -m inferd.testing.server CONFIG [--step-delay S] [--load-delay S]
                                           [--load-error TEXT] [--endless] [--port N]
                                           [--context-length N]

CONFIG is an ordinary config file; every model in it is served by one FakeBackend (no
weights, deterministic text), and the process runs exactly as `inferd serve` does --
signals, drain, protocol limits, logs -- so tests can send it SIGTERM and slow bytes.
"""

from __future__ import annotations

import argparse
import logging

from inferd.app import create_app
from inferd.config import ModelConfig, load_config
from inferd.server import serve
from inferd.testing.fakes import FakeBackend


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inferd.testing.server")
    parser.add_argument("config", help="config file; its models are served by FakeBackend")
    parser.add_argument("--step-delay", type=float, default=0.0, help="seconds per token")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds to load")
    parser.add_argument("--load-error", help="fail every load with this message")
    parser.add_argument("--endless", action="store_true", help="never end an answer")
    parser.add_argument("--context-length", type=int, default=256, help="the model's context")
    parser.add_argument("--port", type=int, help="override [server] port")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.port is not None:
        config = config.model_copy(
            update={"server": config.server.model_copy(update={"port": args.port})}
        )
    backend = FakeBackend(
        step_delay=args.step_delay,
        load_delay=args.load_delay,
        load_error=args.load_error,
        endless=args.endless,
        context_length=args.context_length,
    )

    def factory(model: ModelConfig, device: str) -> FakeBackend:
        return backend

    app = create_app(config, backend_factory=factory, devices=("cpu", "cuda"), name="inferd")
    serve(app, config)
    # For tests to check that shutting down closed the backend on its owner thread.
    logging.getLogger("inferd").info("fake backend closed on: %s", backend.closed_on)


if __name__ == "__main__":
    main()
