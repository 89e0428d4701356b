"""Reading request bodies with errors a client can act on."""

from __future__ import annotations

import json
from typing import Any

from sanic import Request

from inferd.errors import BadRequest


def read_json(request: Request, default: Any = None) -> Any:
    """The decoded JSON body; `default` for an empty body; 400 for malformed JSON."""
    if not request.body:
        if default is not None:
            return default
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"malformed JSON body: {error}") from None
