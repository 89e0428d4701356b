"""benchmarks/bench_engine.py: its pure parts (statistics, SSE timing, report,
targets) and a smoke run of the whole script in its quickest mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from engine_bench import phases, report, sse_timing, targets  # noqa: E402
from engine_bench.sse_timing import StreamRecord, TokenTimer  # noqa: E402
from engine_bench.stats import (  # noqa: E402
    Spread,
    percentile,
    ratio,
    summarize_interference,
    summarize_load,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
STORIES = SHARED / "stories260K"
needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason=f"{STORIES} is absent")


def record(sent: float, times: list[float], error: str | None = None) -> StreamRecord:
    return StreamRecord(sent_at=sent, token_times=times, status=200, error=error)


# --- statistics -------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99
    assert percentile([1, 2], 0) == 1 and percentile([1, 2], 100) == 2
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1], 101)


def test_spread_of_durations() -> None:
    spread = Spread.of([0.1, 0.2, 0.3, 0.4, 10.0])
    assert (spread.p50, spread.max, spread.n) == (0.3, 10.0, 5)
    assert spread.p95 == pytest.approx(8.08)
    assert Spread.of([]) == Spread(None, None, None, None, 0)


def test_ratio_only_of_measured_numbers() -> None:
    assert ratio(3.0, 2) == 1.5
    assert ratio(None, 2.0) is None and ratio(1.0, 0.0) is None
    assert ratio(1.0, "unsupported: no recipe") is None


def test_load_summary_aggregates_all_streams_and_counts_failures() -> None:
    streams = [
        record(0.0, [0.5, 1.0, 1.5]),
        record(0.0, [1.0, 2.0]),
        record(0.0, [], error="HTTP 500: boom"),
    ]
    summary = summarize_load(streams)
    assert summary.tokens == 5
    assert summary.seconds == 2.0 and summary.aggregate_tok_s == 2.5
    assert (summary.ttft.p50, summary.ttft.n) == (0.75, 2)  # the failed stream has no TTFT
    assert (summary.itl.p50, summary.itl.max, summary.itl.n) == (0.5, 1.0, 3)
    assert summary.errors == 1 and summary.error_samples == ("HTTP 500: boom",)


def test_load_summary_counts_the_tokens_the_server_generated() -> None:
    # Three tokens of a held-back character arrived as one event; the server said so.
    held = record(0.0, [0.5, 1.0])
    held.usage_tokens = 4
    summary = summarize_load([held, record(0.0, [1.0])])
    assert summary.tokens == 5 and summary.aggregate_tok_s == 5.0
    assert summary.itl.n == 1  # the gaps stay what the client saw


def test_interference_separates_steady_gaps_from_gaps_during_the_prefill() -> None:
    # Steady gaps of 0.1 s; the long prompt is sent at 1.0 and answers at 3.0, and one
    # gap per stream spans the whole prefill.
    steady = [0.2 + 0.1 * i for i in range(9)]  # 0.2 .. 1.0
    streams = [record(0.0, [*steady, 3.05, 3.15]), record(0.0, [*steady, 3.1])]
    long_prompt = record(1.0, [3.0])
    found = summarize_interference(streams, long_prompt, steady_from=0.25)
    assert found.steady.n == 14 and found.steady.p99 == pytest.approx(0.1)
    assert found.during.n == 2 and found.during.max == pytest.approx(2.1)
    assert found.p99_ratio == pytest.approx(found.during.p99 / 0.1)
    assert found.prefill_seconds == 2.0 and found.long_prompt_error is None


def test_interference_tells_a_held_back_character_from_a_stall() -> None:
    # The longest gap ends in U+FFFD: the detokenizer held byte tokens that made no
    # character; a stall ends in ordinary text.
    held = record(0.0, [0.1, 0.2, 1.5, 1.6])
    held.pieces = ["a", "b", "\ufffd\ufffd c", "d"]
    plain = record(0.0, [0.1, 0.2, 1.0])
    plain.pieces = ["a", "b", "c"]
    long_prompt = record(0.15, [1.55])
    assert summarize_interference([held, plain], long_prompt, 0.0).max_gap_held
    assert not summarize_interference([plain], long_prompt, 0.0).max_gap_held
    measured = results()
    measured["servers"][0]["interference"]["max_gap_held"] = True
    assert "- int8: the max gap ended in U+FFFD: the detokenizer held" in report.markdown(measured)
    assert "U+FFFD" not in report.markdown(results())


def test_interference_reports_a_long_prompt_that_never_answered() -> None:
    found = summarize_interference([record(0.0, [0.1, 0.2])], record(1.0, []), 0.0)
    assert found.long_prompt_error == "no tokens" and found.prefill_seconds is None


# --- SSE timing ----------------------------------------------------------------------------


def test_inferd_stream_timing_across_chunk_boundaries() -> None:
    timed = StreamRecord(sent_at=0.0, status=200)
    timer = TokenTimer(timed, "inferd")
    timer.feed(0.5, ": keepalive\n\ndata: Hel")
    timer.feed(0.6, "lo\n\ndata: a\ndata: b\n\ndata:  c\n\n")
    timer.feed(0.9, "event: error\ndata: engine failed\n\n")
    assert timed.token_times == [0.6, 0.6, 0.6]  # "Hello" completes in the second chunk
    assert timed.text == "Helloa\nb c" and timed.pieces == ["Hello", "a\nb", " c"]
    assert timed.ttft == 0.6 and timed.gaps() == [(0.6, 0.6), (0.6, 0.6)]
    assert timed.error == "engine failed" and timed.failed


def test_openai_stream_timing_text_delta_usage_and_done() -> None:
    timed = StreamRecord(sent_at=1.0, status=200)
    timer = TokenTimer(timed, "openai")
    chunk = {"choices": [{"text": "Hi", "finish_reason": None}]}
    delta = {"choices": [{"delta": {"content": " there"}}]}
    final = {"choices": [{"text": "", "finish_reason": "length"}]}
    usage = {"choices": [], "usage": {"completion_tokens": 2}}
    timer.feed(1.5, f"data: {json.dumps(chunk)}\n\n")
    timer.feed(1.7, f"data: {json.dumps(delta)}\n\ndata: {json.dumps(final)}\n\n")
    assert not timer.done
    timer.feed(1.8, f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n")
    assert timed.token_times == [1.5, 1.7] and timed.text == "Hi there"
    assert timed.usage_tokens == 2 and timer.done and not timed.failed


def test_inferd_stream_usage_comment_gives_the_generated_count() -> None:
    timed = StreamRecord(sent_at=0.0, status=200)
    timer = TokenTimer(timed, "inferd")
    timer.feed(0.2, "data: a\n\n: keepalive\n\n")
    timer.feed(0.4, "data: \ufffd b\n\n: usage " + json.dumps({"completion_tokens": 5}) + "\n\n")
    assert timed.tokens == 2 and timed.usage_tokens == 5 and timed.generated == 5
    assert StreamRecord(token_times=[0.1]).generated == 1  # no usage: the events


async def test_each_wire_asks_for_the_servers_token_count() -> None:
    inferd = phases.Endpoint("http://x", "/completions", "inferd", "m").body("Hi", 4)
    openai = phases.Endpoint("http://x", "/v1/completions", "openai", "m").body("Hi", 4)
    assert "stream_options" not in inferd  # inferd's is a header: X-Include-Usage
    assert openai["stream_options"] == {"include_usage": True}
    headers: dict[str, httpx.Headers] = {}

    def serve(request: httpx.Request) -> httpx.Response:
        headers[request.url.path] = request.headers
        usage = json.dumps({"completion_tokens": 3})
        return httpx.Response(200, text=f"data: abc\n\n: usage {usage}\n\n")

    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as client:
        found = await sse_timing.stream_request(client, "http://x/completions", inferd, "inferd")
        await sse_timing.stream_request(client, "http://x/v1/completions", openai, "openai")
    assert headers["/completions"]["x-include-usage"] == "true" and found.generated == 3
    assert "x-include-usage" not in headers["/v1/completions"]


def test_openai_stream_errors_are_recorded() -> None:
    timed = StreamRecord(status=200)
    TokenTimer(timed, "openai").feed(0.1, 'data: {"error": "model not found"}\n\n')
    assert timed.error == "model not found"
    garbled = StreamRecord(status=200)
    TokenTimer(garbled, "openai").feed(0.1, "data: {not json\n\n")
    assert garbled.error is not None and garbled.error.startswith("not a JSON chunk")


# --- report and targets ------------------------------------------------------------------------


def load_row(streams: int, tok_s: float, ttft_p95: float, errors: int = 0) -> dict:
    spread = {"p50": ttft_p95 / 2, "p95": ttft_p95, "p99": ttft_p95, "max": ttft_p95, "n": 1}
    return {
        "streams": streams,
        "tokens": 128 * streams,
        "aggregate_tok_s": tok_s,
        "ttft": spread,
        "itl": spread,
        "errors": errors,
        "x_generate_fp32": tok_s / 10,
        "of_bound": tok_s / 40,
    }


def results() -> dict:
    spread = {"p50": 0.05, "p95": 0.08, "p99": 0.1, "max": 0.2, "n": 100}
    return {
        "meta": {
            "backend": "torch",
            "model": "qwen",
            "weights": 494e6,
            "device": "cpu",
            "threads": 2,
            "prompt_tokens": 64,
            "new_tokens": 128,
            "commit": "abc1234",
            "date": "2026-01-01T00:00:00",
            "cpu": "Xeon",
            "cores": 2,
            "load_before": 1.0,
            "others_cpu_share": 0.5,
            "command": "python benchmarks/bench_engine.py",
            "interference_streams": 8,
        },
        "bandwidth": {"copy": 20.0, "triad": 25.0, "read": 23.5, "threads": 2, "for_decode": 23.5},
        "bounds": {"fp32": 11.9, "bf16": 23.8, "int8": 40.0, "int4": 85.0},
        "generate": {"fp32": 10.0, "int8": 20.0, "int4": "unsupported: no recipe"},
        "servers": [
            {
                "precision": "int8",
                "status": "ok",
                "load": [load_row(1, 35.0, 0.1), load_row(8, 130.0, 0.4), load_row(32, 200.0, 3.0)],
                "resident_mib": 1312.4,
                "interference": {
                    "steady": spread,
                    "during": {**spread, "p99": 0.5, "max": 0.6},
                    "p99_ratio": 5.0,
                    "prefill_seconds": 2.5,
                    "long_prompt_error": None,
                    "long_prompt_tokens": 2000,
                    "notes": [],
                },
                "prefix": {
                    "history_tokens": 1500,
                    "first_turn_ttft": 3.0,
                    "cached_ttft": 0.3,
                    "uncached_ttft": 3.1,
                    "ratio": 0.3 / 3.1,
                    "checks": [],
                },
            },
            {"precision": "int3", "status": "refused at start-up: quantization 'int3'"},
        ],
        "llama_cpp": "skipped: no --gguf given",
    }


def test_targets_are_judged_from_ratios_of_one_run() -> None:
    verdicts = {v.target: v for v in targets.evaluate(results())}
    bound = verdicts["1 stream int8 >= 80% of the int8 bandwidth bound"]
    assert bound.met is True and bound.measured.startswith("88%")
    assert verdicts["1 stream int8 >= 1.0x plain generate int8"].met is True
    eight = next(v for k, v in verdicts.items() if k.startswith("8 streams int8"))
    assert eight.met is True and eight.measured.startswith("13.0x")
    thirty_two = next(v for k, v in verdicts.items() if k.startswith("32 streams int8"))
    assert thirty_two.met is False  # 20x and TTFT p95 3 s miss 25x and 2 s
    assert (
        verdicts["int8: streams' inter-token p99 during a long prefill <= 3x steady"].met is False
    )
    assert verdicts["int8: second turn TTFT <= 0.2x without a cached prefix"].met is True
    assert not any("int3" in target for target in verdicts)  # refused: nothing to judge


def test_one_stream_is_judged_by_the_bound_at_the_read_rate_around_it() -> None:
    measured = results()
    int8 = measured["servers"][0]
    int8["one_stream"] = {
        "read_before": 28.0,
        "read_after": 30.0,
        "bound": 50.0,  # the memory read faster than at the run's start (bound 40)
        "int8_matmuls_tok_s": 40.0,
    }
    verdicts = {v.target: v for v in targets.evaluate(measured)}
    bound = verdicts["1 stream int8 >= 80% of the int8 bandwidth bound"]
    assert bound.met is False and bound.measured.startswith("70%")  # 35 of 50 tok/s
    text = report.markdown(measured)
    assert "int8, 1 stream: between reads of 28.0 and 30.0 GB/s" in text
    assert "the bound at their mean, 50.0 tok/s" in text
    assert "matmuls alone (one row, every weight once, just before it): 40.0 tok/s, 80%" in text
    assert "the stream reached 88% of their rate" in text


def test_targets_not_measured_when_the_run_lacks_the_level() -> None:
    partial = results()
    partial["servers"][0]["load"] = [load_row(1, 35.0, 0.1)]
    partial["generate"] = {}
    verdicts = targets.evaluate(partial)
    assert [v.met for v in verdicts if v.target.startswith("8 streams")] == [None]


def test_markdown_report_has_every_section_and_the_refusal() -> None:
    text = report.markdown(results())
    assert "| batch-1 bound tok/s | 11.9 | 23.8 | 40.0 | 85.0 |" in text
    assert "| int8 | 20.0 | 2.00x | 50% |" in text  # generate: tok/s, vs fp32, of bound
    assert "| int4 | unsupported: no recipe | — | — |" in text
    assert "| int8 | 8 | 130.0 | 13.00x | 325% | 200 / 400 / 400 |" in text
    assert "- int3: refused at start-up: quantization 'int3'" in text
    assert "- int8: the server resident at 1,312 MiB after its last load level" in text
    assert "| int8 | 2000 | 100 | 500 | 600 | 5.0x | 2500 |" in text
    assert "| int8 | 1500 | 3000 | 300 | 3100 | 0.10x | ok |" in text
    assert "llama.cpp in-process (`--gguf`): skipped: no --gguf given" in text
    assert "| 32 streams int8: aggregate >= 25x generate fp32" in text and "NOT met" in text
    assert text.count("Other work used 50% of the machine during this run") == 1


def test_missing_numbers_show_as_a_dash() -> None:
    assert report.num(None) == "—" and report.num(True) == "—"
    assert report.num(0.123, ".0%") == "12%" and report.ms(0.0456) == "46"


# --- sizes -----------------------------------------------------------------------------------


def test_default_lengths_shrink_to_a_small_models_context_and_given_ones_stay() -> None:
    import bench_engine

    args = bench_engine.parse_args(["--model", "stories"])
    assert bench_engine.fit_to_context(args, 512) == [
        "long-prompt-tokens 2000 -> 350",
        "history-tokens 1500 -> 300",
    ]
    assert (args.long_prompt_tokens, args.history_tokens) == (350, 300)
    given = bench_engine.parse_args(["--long-prompt-tokens", "400"])
    assert bench_engine.fit_to_context(given, 512) == ["history-tokens 1500 -> 300"]
    assert given.long_prompt_tokens == 400  # the server's 400 says why, as asked
    assert bench_engine.fit_to_context(bench_engine.parse_args([]), 32768) == []


# --- the whole script, quickest mode -----------------------------------------------------------


def run_script(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    command = [sys.executable, str(BENCHMARKS / "bench_engine.py"), "--quick", "--json", str(out)]
    done = subprocess.run(
        [*command, "--model-cache", str(tmp_path / "cache"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.real_model
@needs_stories
def test_quick_run_measures_every_phase_and_reports_an_unknown_precision(tmp_path: Path) -> None:
    found, printed = run_script(tmp_path, "--quantization", "fp32,int3", "--clients", "1,2")
    assert found["bandwidth"]["read"] > 0 and found["bounds"]["fp32"] > 0
    assert found["generate"]["fp32"] > 0
    fp32, int3 = found["servers"]
    assert fp32["status"] == "ok"
    assert [row["streams"] for row in fp32["load"]] == [1, 2]
    for row in fp32["load"]:
        assert row["errors"] == 0 and row["tokens"] > 0 and row["ttft"]["n"] == row["streams"]
    assert fp32["interference"]["steady"]["n"] > 0 and fp32["interference"]["during"]["n"] > 0
    assert fp32["prefix"]["checks"] == [] and fp32["prefix"]["uncached_ttft"] > 0
    assert fp32["resident_mib"] > 50  # read from the server's /proc entry on Linux
    around = fp32["one_stream"]  # read before and after the one-stream level
    assert around["read_before"] > 0 and around["read_after"] > 0 and around["bound"] > 0
    assert around["int8_matmuls_tok_s"] is None  # timed for int8 only
    assert int3["status"].startswith("refused at start-up") and "int3" in int3["status"]
    assert "| fp32 | 2 |" in printed and "- int3: refused at start-up" in printed


@pytest.mark.real_model
@needs_stories
def test_quick_mlx_run_compares_inferd_with_mlx_lm_server(tmp_path: Path) -> None:
    pytest.importorskip("mlx_lm")
    found, printed = run_script(tmp_path, "--backend", "mlx", "--mlx-clients", "1")
    (level,) = found["mlx"]["levels"]
    assert level["inferd"]["errors"] == 0 and level["mlx_lm"]["errors"] == 0
    assert level["inferd"]["tokens"] > 0 and level["mlx_lm"]["tokens"] > 0
    assert level["ratio"] > 0 and "| 1 |" in printed
    mlx = found["mlx"]  # then inferd's own phases on metal
    assert mlx["interference"]["steady"]["n"] > 0 and mlx["interference"]["during"]["n"] > 0
    assert mlx["prefix"]["checks"] == [] and mlx["prefix"]["uncached_ttft"] > 0
    assert "| metal (MLX) |" in printed


def test_interference_is_not_measured_when_the_long_prompt_failed() -> None:
    # gaps beside a refused prompt are steady gaps: judging them would call the target met
    failed = results()
    interference = failed["servers"][0]["interference"]
    interference.update(p99_ratio=1.2, long_prompt_error="HTTP 400: prompt too long")
    verdicts = {v.target: v for v in targets.evaluate(failed)}
    verdict = verdicts["int8: streams' inter-token p99 during a long prefill <= 3x steady"]
    assert (verdict.met, verdict.measured) == (None, "not measured")
