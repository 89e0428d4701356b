"""Request ids: the one each request is logged under, echoed as `X-Request-Id`.

A client's or proxy's own id is kept when it is well-formed -- 1 to 128 visible ASCII
characters, no spaces (the access log's text format is `key=value` pairs) -- so one id
follows a request through every hop; anything else gets a fresh UUID, so a hostile
header cannot forge log lines. The id goes back on every response (errors and streams
included), where the `openai` client reads it as `completion._request_id`.
"""

from __future__ import annotations

import re
import uuid

from sanic import Request

REQUEST_ID_HEADER = "X-Request-Id"
_WELL_FORMED = re.compile(r"[\x21-\x7e]{1,128}")


def well_formed(request_id: str) -> bool:
    return _WELL_FORMED.fullmatch(request_id) is not None


class IdentifiedRequest(Request):
    """Sanic's Request with inferd's rule for its id (Sanic's takes any header value
    and turns what parses into a UUID or an int; this one keeps the client's text)."""

    __slots__ = ()

    @property
    def id(self) -> str:  # type: ignore[override]
        if not self._id:
            given = self.headers.getone(REQUEST_ID_HEADER, "")
            self._id = given if well_formed(given) else str(uuid.uuid4())
        return self._id  # type: ignore[return-value]
