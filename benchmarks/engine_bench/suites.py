"""One benchmark run's server-side suites: inferd per precision (load levels, prefill
interference, prefix reuse) and inferd against mlx_lm.server. bench_engine.py drives them."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from random_models import QWEN25_05B, SHARED, cached_random_qwen
from transformers import AutoConfig, AutoTokenizer

from . import baselines, phases
from .kernel_floor import int8_layers, matmul_pass_seconds
from .machine import rss_mib
from .prompts import PromptMaker
from .servers import (
    MODEL_ID,
    ServerFailed,
    ServerProcess,
    inferd_config,
    inferd_server,
    mlx_lm_server,
)
from .stats import percentile, ratio, summarize_interference, summarize_load


def model_dir(args: argparse.Namespace) -> Path:
    if args.model == "qwen":
        return cached_random_qwen(args.model_cache / "qwen2.5-0.5b-random", QWEN25_05B)
    if args.model == "stories":
        return SHARED / "stories260K"
    return Path(args.model).expanduser().resolve()


class Run:
    """One benchmark run: its settings, model, prompts and the folder for servers' files."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.model = model_dir(args)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        config = AutoConfig.from_pretrained(self.model)
        self.context: int | None = getattr(config, "max_position_embeddings", None)
        self.prompts = PromptMaker(self.tokenizer)  # the same prompts for every server
        self.env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}

    def server(self, label: str, precision: str | None, device: str) -> ServerProcess:
        """An inferd server; servers with the same precision share a session store."""
        largest = max([*self.args.clients, self.args.interference_streams + 1])
        config = inferd_config(
            self.model,
            quantization=precision,
            device=device,
            max_concurrent=largest,
            sessions_dir=self.workdir / f"sessions-{precision or device}",
            model_options=self.args.model_option,
        )
        return inferd_server(self.workdir, label, config, self.args.start_timeout, self.env)

    def load_levels(self, endpoint: phases.Endpoint, levels: list[int]) -> list[dict[str, Any]]:
        rows = []
        for streams in levels:
            prompts = self.prompts.batch(streams, self.args.prompt_tokens, "load")
            records = asyncio.run(
                phases.concurrent_streams(
                    endpoint, prompts, self.args.new_tokens, self.args.phase_timeout
                )
            )
            rows.append(asdict(summarize_load(records)))
            print(f"  {streams:>3} streams: {rows[-1]['aggregate_tok_s']:.1f} tok/s", flush=True)
        return rows


def warm_up(endpoint: phases.Endpoint, prompt: str) -> None:
    """One short request: the first forward passes of a process are slow, so none is timed."""
    asyncio.run(phases.concurrent_streams(endpoint, [prompt], 4, 300))


def context_length(base_url: str) -> int:
    try:
        return int(httpx.get(f"{base_url}/models/{MODEL_ID}", timeout=10).json()["context_length"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return 4096


def interference(run: Run, endpoint: phases.Endpoint) -> dict[str, Any]:
    args = run.args
    prompts = run.prompts.batch(args.interference_streams, args.prompt_tokens, "steady")
    long_prompt = run.prompts.make(args.long_prompt_tokens, "long")
    budget = context_length(endpoint.base_url) - args.prompt_tokens - 8
    found = asyncio.run(
        phases.interference(
            endpoint,
            prompts,
            long_prompt,
            steady_tokens=args.steady_tokens,
            stream_budget=budget,
            timeout=args.phase_timeout,
        )
    )
    summary = asdict(summarize_interference(found.streams, found.long_prompt, found.steady_from))
    return {**summary, "long_prompt_tokens": run.prompts.count(long_prompt), "notes": found.notes}


def prefix_reuse(
    run: Run, first_server: ServerProcess, precision: str | None, device: str | None = None
) -> dict[str, Any]:
    """Turn 2 of each session with its history cached (if the engine caches), then the
    identical requests on a freshly started server (same session store), which cannot have
    a cached prefix. Medians over `--prefix-sessions` sessions, each its own history."""
    args = run.args
    histories = [
        run.prompts.make(args.history_tokens, f"history-{i}") for i in range(args.prefix_sessions)
    ]
    visits = [
        asyncio.run(
            phases.first_visit(first_server.base_url, h, args.answer_tokens, args.phase_timeout)
        )
        for h in histories
    ]
    checks = [check for visit in visits for check in visit.checks]
    result: dict[str, Any] = {
        "sessions": len(visits),
        "history_tokens": run.prompts.count(histories[0]),
        "first_turn_ttft": _median(v.first_turn.ttft for v in visits),
        "cached_ttft": _median(v.second_turn.ttft for v in visits),
        "uncached_ttft": None,
        "ratio": None,
        "checks": checks,
    }
    first_server.stop()  # frees its memory; the fresh one reads the same session store
    if checks or any(v.session_id is None for v in visits):
        return result
    device = device or run.args.device
    with run.server(f"{precision or device}-fresh", precision, device) as fresh:
        endpoint = phases.Endpoint(fresh.base_url, "/completions", "inferd", MODEL_ID)
        warm_up(endpoint, run.prompts.make(args.prompt_tokens, "warm-up"))
        # The first server had compiled the chat template and opened the store by turn 2.
        asyncio.run(
            phases.chat_warm_up(fresh.base_url, run.prompts.make(8, "warm-up"), args.phase_timeout)
        )
        colds = [
            asyncio.run(
                phases.revisit(fresh.base_url, v.session_id, args.answer_tokens, args.phase_timeout)
            )
            for v in visits
            if v.session_id is not None
        ]
    result["uncached_ttft"] = _median(cold.ttft for cold in colds)
    result["ratio"] = ratio(result["cached_ttft"], result["uncached_ttft"])
    for cold in colds:
        if cold.failed:
            result["checks"].append(f"fresh-server turn failed: {cold.error or 'no tokens'}")
    return result


def _median(values: Iterable[float | None]) -> float | None:
    """The median of the measured values (None where a turn gave no token is left out)."""
    return percentile([v for v in values if v is not None], 50)


def serve_precision(run: Run, precision: str, results: dict[str, Any]) -> dict[str, Any]:
    """Every server-side phase at one precision; a server that refuses it is reported."""
    print(f"inferd at {precision}", flush=True)
    out: dict[str, Any] = {"precision": precision, "status": "ok"}
    # built before the server starts, so as not to compete with its start-up
    timed = precision == "int8" and run.args.device == "cpu" and 1 in run.args.clients
    matmuls = int8_layers(run.model) if timed else []
    try:
        with run.server(precision, precision, run.args.device) as server:
            endpoint = phases.Endpoint(server.base_url, "/completions", "inferd", MODEL_ID)
            warm_up(endpoint, run.prompts.make(run.args.prompt_tokens, "warm-up"))
            out["load"] = []
            for streams in run.args.clients:
                if streams == 1:
                    row, out["one_stream"] = one_stream(run, endpoint, precision, matmuls, results)
                    matmuls = []  # their weights, freed before the larger levels
                else:
                    row = run.load_levels(endpoint, [streams])[0]
                out["load"].append(row)
            out["resident_mib"] = rss_mib(server.pid)  # the model, its KV cache, the server
            for row in out["load"]:
                row["x_generate_fp32"] = ratio(
                    row["aggregate_tok_s"], results["generate"].get("fp32")
                )
                bound = results["bounds"].get(precision)
                if row["streams"] == 1:
                    bound = out["one_stream"]["bound"]
                row["of_bound"] = ratio(row["aggregate_tok_s"], bound)
            if "interference" not in run.args.skip:
                out["interference"] = interference(run, endpoint)
            if "prefix" not in run.args.skip:
                out["prefix"] = prefix_reuse(run, server, precision)
    except ServerFailed as error:
        out["status"] = f"refused at start-up: {error}"
    return out


def one_stream(
    run: Run,
    endpoint: phases.Endpoint,
    precision: str,
    int8_matmuls: list[Any],
    results: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one-stream level (its load row) between two reads of the memory, and what was
    measured around it: the bound at their mean read rate -- a shared machine's memory
    moves in the minutes since the run's first read -- and, given the int8 Linears
    (kernel_floor), the rate of their matmuls alone, timed just before."""
    device = run.args.device
    before = baselines.measure_read(device, run.args.bandwidth_mb)
    matmul_pass = matmul_pass_seconds(int8_matmuls) if int8_matmuls else None
    row = run.load_levels(endpoint, [1])[0]
    after = baselines.measure_read(device, run.args.bandwidth_mb)
    bounds = baselines.bandwidth_bounds(results["meta"]["weights"], (before + after) / 2)
    around = {
        "read_before": before,
        "read_after": after,
        "bound": bounds.get(precision),
        "int8_matmuls_tok_s": 1 / matmul_pass if matmul_pass else None,
    }
    return row, around


def mlx_comparison(run: Run) -> dict[str, Any]:
    """inferd on device metal against mlx_lm.server, same model, levels interleaved; then
    inferd's prefill interference and prefix reuse on metal (unless skipped)."""
    largest = max(run.args.mlx_clients)
    try:
        with (
            run.server("mlx", None, "metal") as ours,
            mlx_lm_server(run.workdir, run.model, run.args.start_timeout, largest) as theirs,
        ):
            ends = {
                "inferd": phases.Endpoint(ours.base_url, "/completions", "inferd", MODEL_ID),
                "mlx_lm": phases.Endpoint(
                    theirs.base_url, "/v1/completions", "openai", str(run.model)
                ),
            }
            for endpoint in ends.values():
                warm_up(endpoint, run.prompts.make(run.args.prompt_tokens, "warm-up"))
            levels = []
            for streams in run.args.mlx_clients:
                level: dict[str, Any] = {"streams": streams}
                for name, endpoint in ends.items():
                    print(f"{name} (MLX)", flush=True)
                    level[name] = run.load_levels(endpoint, [streams])[0]
                level["ratio"] = ratio(
                    level["inferd"]["aggregate_tok_s"], level["mlx_lm"]["aggregate_tok_s"]
                )
                levels.append(level)
            theirs.stop()  # the phases below are inferd's alone
            out: dict[str, Any] = {"status": "ok", "levels": levels}
            if "interference" not in run.args.skip:
                print("inferd (MLX): prefill interference", flush=True)
                out["interference"] = interference(run, ends["inferd"])
            if "prefix" not in run.args.skip:
                print("inferd (MLX): prefix reuse", flush=True)
                out["prefix"] = prefix_reuse(run, ours, None, "metal")
    except ServerFailed as error:
        return {"status": f"a server failed to start: {error}", "levels": []}
    return out
