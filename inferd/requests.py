"""Reading request bodies with errors a client can act on."""

from __future__ import annotations

import json
from typing import Any

from sanic import Request

from inferd.errors import BadRequest


def decode_json(raw: str | bytes, what: str = "body") -> Any:
    """Decoded JSON, or a 400 that says what is wrong with it."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"malformed JSON {what}: {error}") from None
    except RecursionError:  # e.g. thousands of nested brackets
        raise BadRequest(f"malformed JSON {what}: nested too deeply") from None


def read_json(request: Request, default: Any = None) -> Any:
    """The decoded JSON body; `default` for an empty body; 400 for malformed JSON."""
    if not request.body:
        if default is not None:
            return default
        raise BadRequest("request body is empty; send a JSON object")
    return decode_json(request.body)
