"""RemoteWorker: a model that upstream engines generate, with ModelWorker's surface.

Where a ModelWorker owns a thread and a backend, a RemoteWorker owns an HTTP client,
its upstreams' health, and `max_concurrent` slots for requests in flight. Everything
runs on the event loop -- it only awaits sockets. `open()` returns the same Stream a
local model's submit() does, once the upstream has said something: every failure
before the first token is still an ApiError (400, 502, 503 or 504, naming the
upstreams), tried on the next upstream when another one might answer. Cancelling the
stream closes the upstream request at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Coroutine
from typing import Any

import httpx

from inferd.admission import RETRY_AFTER
from inferd.backends.base import ModelInfo, SamplingParams, TokenEvent
from inferd.config import ModelConfig
from inferd.engine import WorkerState
from inferd.errors import ApiError, Overloaded
from inferd.remote.context import fit_history
from inferd.remote.protocol import (
    Chunk,
    Prompt,
    UpstreamFailure,
    UpstreamRequest,
    failure_of_error,
    failure_of_status,
    request_for,
)
from inferd.remote.relay import UpstreamCall, relay
from inferd.remote.upstreams import Upstream, UpstreamPool
from inferd.stream import Admitted, GenerationObserver, Stream

log = logging.getLogger("inferd.remote")
# Seconds between health checks of every upstream (GET <url>/models).
HEALTH_INTERVAL = 5.0
# The longest a health check waits, whatever the model's `timeout`.
HEALTH_TIMEOUT = 5.0


def reported_context(models: Any, name: str) -> int | None:
    """The context length an upstream's /models reports for `name`, where it does:
    vLLM's `max_model_len`, or `context_length` (inferd, OpenRouter and others)."""
    for card in models.get("data", []) if isinstance(models, dict) else []:
        if isinstance(card, dict) and card.get("id") == name:
            for key in ("max_model_len", "context_length"):
                if isinstance(card.get(key), int):
                    return card[key]
    return None


class RemoteWorker:
    """Serves one `backend = "openai"` model from its upstreams."""

    def __init__(
        self, label: str, model: ModelConfig, *, health_interval: float = HEALTH_INTERVAL
    ) -> None:
        self.label = label
        self.state: WorkerState = "unloaded"
        self.error: str | None = None
        self.info: ModelInfo | None = None
        self.pool = UpstreamPool(model.url)
        self._model = model
        self._upstream_model = model.upstream_model or model.name
        self._health_interval = health_interval
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._running = 0
        self._waiting = 0
        self._error_status = 503
        self._probe_failures: dict[str, UpstreamFailure] = {}  # the last, by upstream URL
        self._background: set[asyncio.Task[Any]] = set()

    # -- ModelWorker's surface ----------------------------------------------------------
    def start(self) -> None:
        """Begin discovering the upstreams in the background (idempotent; on the loop)."""
        if self._client is not None:
            return
        timeout = httpx.Timeout(self._model.timeout, connect=min(self._model.timeout, 10.0))
        # Keep-alive connections: a new TCP connection per request would cost every TTFT.
        limits = httpx.Limits(max_keepalive_connections=self._model.max_concurrent + 4)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits)
        self._slots = asyncio.Semaphore(self._model.max_concurrent)
        self.state = "loading"
        if self._model.context_length is not None:
            # Nothing to learn from the upstreams: whether they answer is each request's
            # business (and the health checks').
            self._ready(self._model.context_length)
        else:
            self._rediscover()
        self._health = asyncio.get_running_loop().create_task(self._check_health())

    async def ready(self) -> ModelInfo:
        """The model's info once an upstream has answered; raises while none does."""
        self.start()
        if self.info is None:
            assert self._discovery is not None
            if self._discovery.done():
                self._rediscover()  # the last attempt failed: one may be up by now
            await asyncio.shield(self._discovery)
        if self.info is None:
            raise ApiError(self.error or "no upstream answered", status=self._error_status)
        return self.info

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def stop(self) -> None:
        for task in (self._health, self._discovery):
            if task is not None:
                task.cancel()
        if self._client is not None:
            client, self._client = self._client, None
            self._in_background(client.aclose())

    def join(self, timeout: float | None = None) -> bool:
        """Nothing to wait for: no thread (ModelWorker's surface)."""
        return True

    # -- generating -----------------------------------------------------------------------
    async def open(
        self, prompt: Prompt, params: SamplingParams, observer: GenerationObserver | None = None
    ) -> Stream:
        """Start generating `prompt` (a completion's text or a chat's messages) upstream.

        Returns once the upstream has said something; raises an ApiError naming the
        upstreams when none could."""
        info = await self.ready()
        if not isinstance(prompt, str):
            prompt, _ = fit_history(prompt, info, params.max_tokens)
        request = request_for(
            self._upstream_model,
            prompt,
            params,
            context_length=info.context_length,
            extensions=self._model.sampling_extensions,
        )
        stream = Stream([], params, observer)
        await self._take_slot()
        try:
            stream.stats.started_at = time.monotonic()
            stream.push_on_loop(Admitted())
            call, first = await self._first_answer(request)
        except BaseException:
            self._release_slot()
            raise
        task = asyncio.get_running_loop().create_task(self._relay(call, first, stream))
        task.add_done_callback(functools.partial(self._relayed, call))
        stream.when_cancelled(functools.partial(self._cancel, call, task))
        return stream

    @staticmethod
    def _cancel(call: UpstreamCall, task: asyncio.Task[None]) -> None:
        """The client went away: close the upstream request, unless it has already
        answered in full (its connection is then being readied for the next request)."""
        if not call.answered:
            task.cancel()

    async def _take_slot(self) -> None:
        """One of `max_concurrent` places; a 503 after `queue_timeout` seconds of waiting,
        as a local model's queue answers (inferd/admission.py)."""
        assert self._slots is not None
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self._model.queue_timeout)
        except asyncio.TimeoutError:
            raise Overloaded(
                f"model {self._model.name!r} is busy: the request waited "
                f"{self._model.queue_timeout:g} s for one of its {self._model.max_concurrent} "
                "places upstream; retry shortly",
                retry_after=RETRY_AFTER,
            ) from None
        finally:
            self._waiting -= 1
        self._running += 1

    def _release_slot(self) -> None:
        assert self._slots is not None
        self._running -= 1
        self._slots.release()

    async def _first_answer(self, request: UpstreamRequest) -> tuple[UpstreamCall, Chunk | None]:
        """Try the upstreams in order until one says something."""
        failures: list[tuple[Upstream, UpstreamFailure]] = []
        for upstream in self.pool.order():
            call = UpstreamCall(self._http(), upstream, self._model.timeout)
            upstream.in_flight += 1
            try:
                return call, await call.open(request, self._headers())
            except UpstreamFailure as failure:
                failures.append((upstream, failure))
                if failure.retry:
                    self.pool.mark_down(upstream, failure.reason)
                    log.warning("upstream %s %s", upstream.url, failure.reason)
                upstream.in_flight -= 1
                await call.close()
                if not failure.retry:
                    break
            except BaseException:  # cancelled: the client went away while we waited
                upstream.in_flight -= 1
                await asyncio.shield(call.close())
                raise
        raise self._failed(failures)

    def _failed(self, failures: list[tuple[Upstream, UpstreamFailure]]) -> ApiError:
        last_upstream, last = failures[-1]
        if len(failures) == 1 or not last.retry:  # a verdict on the request itself
            return ApiError(
                f"upstream {last_upstream.url} {last.reason}", status=last.status, code=last.code
            )
        said = "; ".join(f"upstream {upstream.url} {f.reason}" for upstream, f in failures)
        # The worst of them: a timeout (504) over unreachable (503) over failed (502).
        status = max(failure.status for _, failure in failures)
        return ApiError(
            f"model {self._model.name!r}: no upstream could answer: {said}", status=status
        )

    async def _relay(self, call: UpstreamCall, first: Chunk | None, stream: Stream) -> None:
        try:
            await relay(call, first, stream)
        except UpstreamFailure as failure:
            self.pool.mark_down(call.upstream, failure.reason)
            log.warning("upstream %s %s in mid-answer", call.upstream.url, failure.reason)
        except Exception:  # a bug here must still end the stream, never hang the client
            log.exception("relaying from upstream %s failed", call.upstream.url)
            error = "internal error while relaying the upstream's answer; see the server log"
            stream.push_on_loop(TokenEvent(finish_reason="error", error=error))
        finally:  # cancelled (the client went away) or done: unread, the upstream stops
            await call.close()

    def _relayed(self, call: UpstreamCall, task: asyncio.Task[None]) -> None:
        call.upstream.in_flight -= 1
        self._release_slot()
        if task.cancelled():  # maybe before it ever ran, so before its `finally`
            self._in_background(call.close())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the upstreams --------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise ApiError(f"model {self._model.name!r} is shutting down", status=503)
        return self._client

    def _headers(self) -> dict[str, str]:
        env = self._model.api_key_env
        if env is None:
            return {}
        key = os.environ.get(env)
        if not key:
            raise ApiError(
                f"model {self._model.name!r}: the environment variable {env} "
                "(its api_key_env) is not set",
                status=500,
            )
        return {"Authorization": f"Bearer {key}"}

    def _rediscover(self) -> None:
        self._discovery = asyncio.get_running_loop().create_task(self._discover())

    async def _discover(self) -> None:
        """Ask every upstream's /models at once: the first answer makes the model ready."""
        try:
            answers = await asyncio.gather(*(self._probe(u) for u in self.pool.upstreams))
        except ApiError as error:  # e.g. the api_key_env variable is missing
            self._fail(error.message, error.status)
            return
        reachable = [models for models in answers if models is not None]
        if not reachable:
            failures = [(u, self._probe_failures[u.url]) for u in self.pool.upstreams]
            error = self._failed(failures)
            self._fail(error.message, error.status)
            return
        context = self._model.context_length or next(
            (c for c in (reported_context(m, self._upstream_model) for m in reachable) if c),
            None,
        )
        if context is None:
            self._fail(
                f"model {self._model.name!r}: its upstreams do not report a context length "
                f"for {self._upstream_model!r}; set context_length in its [[models]] table",
                500,
            )
            return
        self._ready(context)

    def _ready(self, context_length: int) -> None:
        if self.info is None:
            log.info("remote model %s ready (context %d)", self.label, context_length)
        self.info = ModelInfo(context_length, frozenset(), has_chat_template=True)
        self.state, self.error = "ready", None

    def _fail(self, message: str, status: int) -> None:
        self.state, self.error, self._error_status = "failed", message, status
        log.error("%s", message)

    async def _probe(self, upstream: Upstream) -> Any:
        """GET <url>/models: the parsed answer, or None (and the upstream marked down)."""
        timeout = min(self._model.timeout, HEALTH_TIMEOUT)
        try:
            response = await self._http().get(
                upstream.url + "/models", headers=self._headers(), timeout=timeout
            )
            if response.status_code != 200:
                raise failure_of_status(response.status_code, response.content)
            models = response.json()
        except ValueError:
            failure = UpstreamFailure(502, "answered /models with something not JSON", retry=True)
        except UpstreamFailure as status_failure:
            failure = status_failure
        except httpx.HTTPError as error:
            failure = failure_of_error(error, timeout)
        else:
            self.pool.mark_up(upstream)
            return models
        self.pool.mark_down(upstream, failure.reason)
        self._probe_failures[upstream.url] = failure
        return None

    async def _check_health(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            with contextlib.suppress(ApiError):
                await asyncio.gather(*(self._probe(u) for u in self.pool.upstreams))
                if self.info is None and self._discovery is not None and self._discovery.done():
                    self._rediscover()
