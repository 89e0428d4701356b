"""inferd/engine.py: the ModelWorker and its model-owner thread, driven directly."""

from __future__ import annotations

import asyncio
import threading

import pytest

from inferd.engine import ModelWorker
from inferd.testing.fakes import REPLY, FakeBackend, FakeDecoding
from tests.engine_doubles import (
    LABEL,
    THREAD,
    LabelledBackend,
    RecordingObserver,
    collect,
    encoding,
    open_during_a_step,
    prompt_ids,
    sampling,
)
from tests.streams import wait_for


async def test_ready_loads_the_backend_on_the_owner_thread(make_worker):
    backend = FakeBackend(context_length=99)
    worker = make_worker(backend)
    assert worker.state == "unloaded"
    info = await worker.ready()
    assert info.context_length == 99
    assert worker.state == "ready"
    assert worker.info == info
    assert backend.threads == {THREAD}


async def test_start_is_idempotent():
    made = []

    def make_backend() -> FakeBackend:
        made.append(1)
        return FakeBackend()

    worker = ModelWorker(LABEL, make_backend, max_concurrent=1)
    try:
        worker.start()
        worker.start()
        await worker.ready()
        await worker.ready()
    finally:
        worker.stop()
    assert made == [1]


async def test_a_stream_yields_the_reply_and_stops_at_eos(make_worker):
    worker = make_worker(FakeBackend())
    await worker.ready()
    stream = worker.submit(prompt_ids("Hi"), sampling())
    text, last = await collect(stream)
    assert text == REPLY
    assert last.finish_reason == "stop"
    assert last.error is None
    assert stream.stats.generated_tokens == len(REPLY)  # EOS is not counted
    assert stream.stats.prompt_tokens == 2


async def test_max_tokens_and_the_context_window_bound_the_answer(make_worker):
    worker = make_worker(FakeBackend(context_length=20, endless=True))
    await worker.ready()
    text, last = await collect(worker.submit(prompt_ids("Hi"), sampling(max_tokens=4)))
    assert (text, last.finish_reason) == (REPLY[:4], "length")
    # 15 prompt tokens in a 20-token context leave room for 5, whatever max_tokens says.
    stream = worker.submit(prompt_ids("x" * 15), sampling(max_tokens=100))
    text, last = await collect(stream)
    assert (len(text), last.finish_reason) == (5, "length")


async def test_a_stop_sequence_split_over_tokens_is_never_emitted(make_worker):
    worker = make_worker(FakeBackend())
    await worker.ready()
    text, last = await collect(worker.submit(prompt_ids("Hi"), sampling(stop=("How can",))))
    assert text == "Hello there!\n"
    assert last.finish_reason == "stop"


async def test_two_streams_are_decoded_round_robin(make_worker):
    backend = LabelledBackend()
    worker = make_worker(backend)
    # Both requests are queued before the thread starts, so they are admitted together.
    first = worker.submit(prompt_ids("A"), sampling())
    second = worker.submit(prompt_ids("B"), sampling())
    worker.start()
    results = await asyncio.gather(collect(first), collect(second))
    assert [text for text, _ in results] == [REPLY, REPLY]
    # One step each per turn (the reply, then EOS): neither ever waits two steps.
    assert backend.schedule == ["A", "B"] * (len(REPLY) + 1)


async def test_a_long_answer_does_not_starve_a_short_one(make_worker):
    backend = LabelledBackend(endless=True)
    worker = make_worker(backend)
    long = worker.submit(prompt_ids("L"), sampling(max_tokens=200))
    short = worker.submit(prompt_ids("S"), sampling(max_tokens=3))
    worker.start()
    text, last = await collect(short)
    assert (text, last.finish_reason) == ("Hel", "length")
    # The short one finished within its first three turns, the long one barely began.
    assert backend.schedule[:6] == ["L", "S"] * 3
    assert backend.schedule.count("S") == 3
    long.cancel()


async def test_requests_beyond_max_concurrent_wait_in_fifo_order(make_worker):
    backend = LabelledBackend(step_delay=0.03)
    worker = make_worker(backend, max_concurrent=1)
    streams = [worker.submit(prompt_ids(label), sampling(max_tokens=3)) for label in "ABC"]
    worker.start()
    await wait_for(lambda: worker.running == 1 and worker.waiting == 2)
    results = await asyncio.gather(*(collect(stream) for stream in streams))
    assert [text for text, _ in results] == ["Hel"] * 3
    assert backend.schedule == ["A"] * 3 + ["B"] * 3 + ["C"] * 3
    await wait_for(lambda: (worker.running, worker.waiting) == (0, 0))  # just after the last event


async def test_cancel_stops_decoding_within_one_step_and_closes_the_decoding(make_worker):
    backend = FakeBackend(endless=True, step_delay=0.01)
    worker = make_worker(backend)
    await worker.ready()
    stream = worker.submit(prompt_ids("Hi"), sampling(max_tokens=10_000))
    for _ in range(3):
        await asyncio.wait_for(stream.next_event(), timeout=5)
    stream.cancel()
    steps_at_cancel = backend.steps
    await wait_for(lambda: backend.closed == 1)
    # At most the step that was already running when the flag was set.
    assert backend.steps <= steps_at_cancel + 1
    await asyncio.sleep(0.1)
    assert backend.steps <= steps_at_cancel + 1
    assert worker.running == 0
    assert stream.stats.finish_reason == "cancelled"


async def test_a_cancelled_stream_ends_its_iteration(make_worker):
    worker = make_worker(FakeBackend(endless=True, step_delay=0.005))
    await worker.ready()
    stream = worker.submit(prompt_ids("Hi"), sampling(max_tokens=10_000))
    received = []
    async for event in stream:
        received.append(event.text)
        if len(received) == 3:
            stream.cancel()
    assert len(received) == 3


async def test_a_request_cancelled_while_queued_never_starts(make_worker):
    backend = LabelledBackend(step_delay=0.002)
    worker = make_worker(backend, max_concurrent=1)
    first = worker.submit(prompt_ids("A"), sampling(max_tokens=5))
    queued = worker.submit(prompt_ids("B"), sampling(max_tokens=5))
    queued.cancel()
    worker.start()
    await collect(first)
    last = worker.submit(prompt_ids("C"), sampling(max_tokens=1))
    await collect(last)
    assert "B" not in backend.schedule
    assert prompt_ids("B") not in backend.prompts


async def test_calls_run_on_the_owner_thread_between_decoding_steps(make_worker):
    backend = FakeBackend(endless=True, step_delay=0.005)
    worker = make_worker(backend)
    await worker.ready()
    stream = worker.submit(prompt_ids("Hi"), sampling(max_tokens=10_000))
    await asyncio.wait_for(stream.next_event(), timeout=5)

    name = await asyncio.wait_for(worker.call(lambda b: threading.current_thread().name), timeout=5)
    assert name == THREAD
    assert await worker.call(lambda b: b.encode_text("ab")) == [97, 98]
    # The generation carried on around the calls.
    steps = backend.steps
    await wait_for(lambda: backend.steps > steps + 2)
    assert worker.running == 1
    stream.cancel()


async def test_a_failing_call_raises_in_the_caller_and_the_worker_lives_on(make_worker):
    worker = make_worker(FakeBackend())
    await worker.ready()

    def broken(backend):
        raise ValueError("tokenizer broke")

    with pytest.raises(ValueError, match="tokenizer broke"):
        await worker.call(broken)
    text, _ = await collect(worker.submit(prompt_ids("Hi"), sampling()))
    assert text == REPLY


async def test_an_error_in_one_sequence_does_not_stop_the_others(make_worker):
    backend = LabelledBackend(fail_label="bad")
    worker = make_worker(backend)
    bad = worker.submit(prompt_ids("bad"), sampling())
    good = worker.submit(prompt_ids("good"), sampling())
    worker.start()
    (bad_text, bad_last), (good_text, good_last) = await asyncio.gather(collect(bad), collect(good))
    assert bad_text == "He"
    assert (bad_last.finish_reason, bad_last.error) == ("error", "bad broke")
    assert (good_text, good_last.finish_reason) == (REPLY, "stop")
    assert backend.closed == 2  # the failed decoding was closed too
    assert worker.state == "ready"


async def test_an_internal_error_reaches_the_client_without_its_details(make_worker):
    class Crashing(FakeDecoding):
        def step(self) -> int:
            raise RuntimeError("CUDA error at /opt/torch/aten/src/kernel.cu:42")

    backend = FakeBackend()
    backend.start = lambda ids, params: Crashing(backend, params)
    worker = make_worker(backend)
    worker.start()
    _, last = await collect(worker.submit(prompt_ids("x"), sampling()))
    assert last.finish_reason == "error"
    assert last.error == "internal error (RuntimeError); see the server log"


async def test_the_backend_never_sees_max_tokens_beyond_the_context(make_worker):
    backend = FakeBackend(context_length=64, endless=True)
    seen: list[int] = []
    start = backend.start
    backend.start = lambda ids, params: seen.append(params.max_tokens) or start(ids, params)
    worker = make_worker(backend)
    worker.start()
    text, last = await collect(worker.submit(prompt_ids("0123456789"), sampling(max_tokens=2**62)))
    assert seen == [54]  # context 64 - 10 prompt tokens
    assert (len(text), last.finish_reason) == (54, "length")


async def test_a_request_the_backend_cannot_start_fails_alone(make_worker):
    backend = LabelledBackend(refuse_label="bad")
    worker = make_worker(backend)
    bad = worker.submit(prompt_ids("bad"), sampling())
    good = worker.submit(prompt_ids("good"), sampling())
    worker.start()
    (bad_text, bad_last), (good_text, _) = await asyncio.gather(collect(bad), collect(good))
    assert (bad_text, bad_last.finish_reason, bad_last.error) == ("", "error", "cannot start bad")
    assert good_text == REPLY


async def test_load_failure_fails_ready_and_everything_queued(make_worker):
    worker = make_worker(FakeBackend(load_error="no weights", load_delay=0.05))
    stream = worker.submit(prompt_ids("Hi"), sampling())
    call = asyncio.ensure_future(worker.call(lambda b: "never"))
    with pytest.raises(RuntimeError, match="no weights"):
        await worker.ready()
    assert (worker.state, worker.error) == ("failed", "no weights")
    text, last = await collect(stream)
    assert (text, last.finish_reason, last.error) == ("", "error", "no weights")
    with pytest.raises(RuntimeError, match="no weights"):
        await asyncio.wait_for(call, timeout=5)
    # Asking again gives the same error, without a second load.
    with pytest.raises(RuntimeError, match="no weights"):
        await worker.ready()


async def test_a_waiter_cancelled_during_the_load_does_not_break_the_worker(make_worker):
    # A client that goes away while the model loads cancels its ready(); the load must
    # carry on for everybody else.
    backend = FakeBackend(load_delay=0.1)
    worker = make_worker(backend)
    waiter = asyncio.ensure_future(worker.ready())
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    info = await asyncio.wait_for(worker.ready(), timeout=5)
    assert info.context_length == backend.context_length
    assert worker.state == "ready"
    text, _ = await collect(worker.submit(prompt_ids("Hi"), sampling()))
    assert text == REPLY


async def test_observer_sees_the_lifecycle_once(make_worker):
    worker = make_worker(FakeBackend())
    await worker.ready()
    observer = RecordingObserver()
    stream = worker.submit(prompt_ids("Hi"), sampling(max_tokens=4), observer)
    await collect(stream)
    stream.cancel()  # after the end: no second "finished"
    assert observer.calls == ["admitted", "token", "token", "token", "token", "finished"]
    stats = observer.finished
    assert stats is not None
    assert (stats.prompt_tokens, stats.generated_tokens, stats.finish_reason) == (2, 4, "length")
    assert stats.queued_at <= stats.started_at <= stats.first_token_at <= stats.finished_at


async def test_an_observer_hears_of_a_cancellation(make_worker):
    worker = make_worker(FakeBackend(endless=True, step_delay=0.005))
    await worker.ready()
    observer = RecordingObserver()
    stream = worker.submit(prompt_ids("Hi"), sampling(max_tokens=10_000), observer)
    await asyncio.wait_for(stream.next_event(), timeout=5)
    stream.cancel()
    assert observer.calls[-1] == "finished"
    assert observer.finished is not None
    assert observer.finished.finish_reason == "cancelled"


async def test_open_encodes_on_the_owner_thread_and_joins_the_next_step(make_worker):
    backend, _, first, opening = await open_during_a_step(make_worker, max_tokens=3)
    backend.hold.set()
    second = await asyncio.wait_for(opening, 5)
    assert second.stats.prompt_tokens == 1
    assert (await collect(first))[0] == (await collect(second))[0] == REPLY[:3]
    # B was encoded and queued in one turn of the owner thread: it is in the very next step
    assert backend.schedule[:4] == ["A", "encode B", "A", "B"]


async def test_open_raises_what_encoding_raises_and_queues_nothing(make_worker):
    backend = LabelledBackend()
    worker = make_worker(backend)
    await worker.ready()

    def too_long(backend: LabelledBackend) -> list[int]:
        raise ValueError("prompt too long")

    with pytest.raises(ValueError, match="too long"):
        await worker.open(too_long, sampling())
    assert worker.waiting == worker.running == 0
    text, last = await collect(await worker.open(encoding("C"), sampling(max_tokens=2)))
    assert (text, last.finish_reason) == (REPLY[:2], "length")


async def test_a_request_cancelled_while_it_is_encoded_never_runs(make_worker):
    backend, worker, first, opening = await open_during_a_step(make_worker, max_tokens=2)
    opening.cancel()  # the client went away while its prompt waited to be encoded
    with pytest.raises(asyncio.CancelledError):
        await opening
    backend.hold.set()
    await collect(first)
    await wait_for(lambda: worker.waiting == worker.running == 0)
    assert "B" not in backend.schedule


async def test_the_loaded_model_is_kept_out_of_garbage_collection_before_it_serves(
    make_worker, monkeypatch
):
    states: list[str] = []

    def freeze() -> int:
        states.append(worker.state)
        return 1

    monkeypatch.setattr("inferd.engine.freeze_loaded_objects", freeze)
    worker = make_worker(FakeBackend())
    await worker.ready()
    assert states == ["loading"]  # once, after the load, before requests are let in
