"""An OpenAI-protocol upstream that answers at once: every streamed chat completion is
`--tokens` one-token chunks written in one go. Through it, bench_remote.py measures what
the gateway itself costs, with no engine time to hide it.

    python benchmarks/instant_upstream.py PORT [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def answer(tokens: int) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]}
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": tokens}}
    return _event(chunk) * tokens + _event(end) + _event(usage) + b"data: [DONE]\n\n"


async def serve(port: int, tokens: int) -> None:
    stream = answer(tokens)
    models = json.dumps({"data": [{"id": "instant", "context_length": 4096}]}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                body, kind = (models, b"application/json")
                if head.startswith(b"POST"):
                    body, kind = (stream, b"text/event-stream")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind)
                writer.write(b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.tokens))
