"""The `inferd` command: `inferd serve [--config FILE | --model PATH_OR_HUB_ID]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inferd import logs
from inferd.compile_cache import use_compile_cache
from inferd.config import (
    Config,
    ConfigError,
    ModelConfig,
    default_config_text,
    load_config,
    parse_config,
    tomllib,
)


def _single_model_config(model: str, base: Config, device: str | None) -> Config:
    """Serve one model without a config file: id and name from the path or hub id."""
    is_dir = Path(model).expanduser().is_dir()
    path = str(Path(model).expanduser().resolve()) if is_dir else model
    name = Path(path).name if is_dir else model
    # A directory is named after its resolved path, so "." and ".." get a real name.
    model_id = name if is_dir else Path(model.rstrip("/")).name
    entry = ModelConfig(id=model_id, name=name, path=path, preload=True, device=device or "cpu")
    return base.model_copy(update={"models": [entry]})


def build_config(args: argparse.Namespace) -> Config:
    if args.config:
        config = load_config(args.config)
    elif args.model:
        config = parse_config({})
    elif Path("config.toml").is_file():
        config = load_config("config.toml")
    else:
        config = parse_config(tomllib.loads(default_config_text()))
    if args.model:
        config = _single_model_config(args.model, config, args.device)
    server = config.server.model_copy(
        update={k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    )
    return config.model_copy(update={"server": server})


def serve(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
        use_compile_cache(config.server.compile_cache)
        from inferd.app import create_app

        app = create_app(config, name="inferd")
    except ConfigError as error:
        print(f"inferd: {error}", file=sys.stderr)
        return 2
    from inferd.server import serve as run_server

    run_server(app, config, sanic_access_log=args.access_log)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inferd", description="LLM inference server")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="start the HTTP/SSE/WebSocket server")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--config", help="config file (default: ./config.toml, else built-in)")
    source.add_argument("--model", help="serve one model: a local directory or a hub id")
    run.add_argument("--device", choices=["cpu", "cuda", "metal"], help="device for --model")
    run.add_argument("--host", help="override [server] host")
    run.add_argument("--port", type=int, help="override [server] port")
    run.add_argument(
        "--access-log",
        action="store_true",
        help="Sanic's own access log too (inferd logs one line per request anyway)",
    )
    args = parser.parse_args(argv)
    logs.configure("text")  # until the config is read (it may ask for JSON)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
