"""Where log lines go and how they look: readable text, or one JSON object per line.

`[server] log_format = "json"` gives every line -- inferd's own, the per-request lines
of access_log.py (their fields as keys) and Sanic's -- as JSON for log shippers.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Sanic's loggers: with JSON output they must not print their own text format.
SANIC_LOGGERS = ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets")


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        timestamp="time",
        rename_fields={"levelname": "level", "name": "logger"},
    )


def configure(log_format: str) -> None:
    """inferd's logger prints to stderr in `log_format`; "json" switches Sanic's too.

    Call it after the app is built: Sanic configures its loggers when an app is made.
    """
    formatter = json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    logger = logging.getLogger("inferd")
    logger.handlers = [h for h in logger.handlers if not getattr(h, "inferd", False)]
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    handler.inferd = True  # type: ignore[attr-defined]  # ours: replaced, not stacked
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    if log_format == "json":
        for name in SANIC_LOGGERS:
            for sanic_handler in logging.getLogger(name).handlers:
                sanic_handler.setFormatter(formatter)
