"""The engine benchmark of issue #11: every target measured in one run, over real HTTP.

One run measures the machine's memory bandwidth (and from it the batch-1 bound per
precision), plain `model.generate`, then for each precision an `inferd serve` subprocess
under 1/8/32 concurrent SSE clients, a long prompt arriving during steady streams, and a
chat session's second turn on a long history. `--backend mlx` compares inferd on
`device = "metal"` with `mlx_lm.server` instead. It prints a markdown report and writes
the same figures as JSON. Everything it starts is stopped at the end, also on Ctrl-C.

    python benchmarks/bench_engine.py                          # ~15 min on 2 cores
    python benchmarks/bench_engine.py --quick                  # seconds: stories260K
    python benchmarks/bench_engine.py --quantization fp32,bf16,int8,int4
    python benchmarks/bench_engine.py --backend mlx
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from engine_bench import baselines, machine, report, targets
from engine_bench.suites import Run, mlx_comparison, serve_precision
from random_models import weight_count
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parents[1]
# Sizes of a full run (about 15 minutes for fp32 and bf16 on 2 cores) and of --quick.
FULL = {
    "model": "qwen",
    "clients": "1,8,32",
    "prompt_tokens": 64,
    "new_tokens": 128,
    "interference_streams": 8,
    "steady_tokens": 16,
    "long_prompt_tokens": 2000,
    "history_tokens": 1500,
    "answer_tokens": 16,
    "prefix_sessions": 2,
    "mlx_clients": "1,8",
    "bandwidth_mb": 1024,
}
QUICK = {
    "model": "stories",
    "clients": "1,2",
    "prompt_tokens": 16,
    "new_tokens": 16,
    "interference_streams": 2,
    "steady_tokens": 4,
    "long_prompt_tokens": 200,
    "history_tokens": 150,
    "answer_tokens": 4,
    "prefix_sessions": 1,
    "mlx_clients": "1,2",
    "bandwidth_mb": 64,
}
# Shares of a model's context that the long prompt and a session's history take when the
# defaults do not fit it (stories260K's 512 tokens: 350 and 300).
LONG_PROMPT_SHARE = 0.7
HISTORY_SHARE = 0.6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a sanity run in seconds (stories260K, few tokens)")
    add("--backend", choices=["torch", "mlx"], default="torch")
    add("--model", help="'qwen' (random Qwen2.5-0.5B shape), 'stories' or a model directory")
    add("--model-cache", type=Path, default=Path.home() / ".cache" / "inferd-bench")
    add("--quantization", default="fp32,bf16", help="precisions to serve, in order (torch)")
    add("--generate", help="precisions for plain generate (default: fp32 + those served)")
    add("--device", choices=["cpu", "cuda"], default="cpu", help="torch device")
    add("--clients", help="concurrent streams per level, e.g. 1,8,32")
    add("--prompt-tokens", type=int)
    add("--new-tokens", type=int)
    add("--interference-streams", type=int)
    add("--steady-tokens", type=int, help="tokens per stream in the steady window")
    add("--long-prompt-tokens", type=int)
    add("--history-tokens", type=int, help="first chat turn's length (prefix reuse)")
    add("--answer-tokens", type=int, help="max-token of each chat turn")
    add("--prefix-sessions", type=int, help="sessions timed for prefix reuse (medians)")
    add("--mlx-clients", help="concurrent streams per level in --backend mlx")
    add("--bandwidth-mb", type=int, help="size of each bandwidth array (past the L3 cache)")
    add("--skip", default="", help="comma list of: generate, interference, prefix")
    add("--threads", type=int, help="torch threads here and OMP_NUM_THREADS for the servers")
    add(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=TOML_VALUE",
        help="extra key for the servers' [[models]] table, e.g. threads=2 (repeatable)",
    )
    add("--gguf", type=Path, help="a GGUF file for the optional llama.cpp comparison")
    add("--phase-timeout", type=float, default=600.0, help="seconds one phase may take")
    add("--start-timeout", type=float, default=300.0, help="seconds a server may take to start")
    add("--json", type=Path, default=Path("bench_engine.json"), help="where to write results")
    args = parser.parse_args(argv)
    args.given = {key for key in FULL if getattr(args, key) is not None}
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.clients = _ints(args.clients)
    args.mlx_clients = _ints(args.mlx_clients)
    args.quantization = _words(args.quantization)
    args.skip = set(_words(args.skip))
    served = [q for q in args.quantization if q in ("fp32", "fp16", "bf16", "int8")]
    args.generate = (
        _words(args.generate) if args.generate else list(dict.fromkeys(["fp32", *served]))
    )
    args.model_option = dict(_option(o) for o in args.model_option)
    return args


def fit_to_context(args: argparse.Namespace, context: int) -> list[str]:
    """Shorten the long prompt and the history where they were not given and the model's
    context cannot hold them (the defaults are the Qwen shape's; stories260K holds 512
    tokens), so that `--model stories` measures every phase. Returns what changed."""
    changed = []
    for key, share in (
        ("long_prompt_tokens", LONG_PROMPT_SHARE),
        ("history_tokens", HISTORY_SHARE),
    ):
        fitting = int(context * share) // 50 * 50
        if key not in args.given and getattr(args, key) > fitting:
            changed.append(f"{key.replace('_', '-')} {getattr(args, key)} -> {fitting}")
            setattr(args, key, fitting)
    return changed


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _ints(text: str) -> list[int]:
    return [int(w) for w in _words(text)]


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SystemExit(f"--model-option wants KEY=TOML_VALUE, got {text!r}")
    return key.strip(), value.strip()


def _commit() -> str:
    """HEAD's short hash, with "+changes" when tracked files differ from it (the run
    measured code no commit holds)."""
    try:
        head, status = (
            subprocess.run(
                ["git", "-C", str(ROOT), *command],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            for command in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "-uno"])
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+changes" if status else head


def meta(args: argparse.Namespace, model: Path, weights: int) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": _commit(),
        "command": shlex.join(["python", "benchmarks/bench_engine.py", *sys.argv[1:]]),
        "cpu": machine.cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "backend": args.backend,
        "device": "metal" if args.backend == "mlx" else args.device,
        "model": args.model if args.model in ("qwen", "stories") else str(model),
        "weights": weights,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "interference_streams": args.interference_streams,
        "quick": args.quick,
        "load_before": os.getloadavg()[0],
        "others_cpu_share": None,
    }


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    others = machine.OthersLoad()
    run = Run(args, workdir)
    if run.context and (changed := fit_to_context(args, run.context)):
        print(f"to fit the model's {run.context}-token context: {', '.join(changed)}")
    weights = weight_count(run.model)
    results: dict[str, Any] = {"meta": meta(args, run.model, weights)}
    print(f"model {run.model} ({weights / 1e6:.1f} M weights); measuring bandwidth", flush=True)
    bandwidth = baselines.measure_bandwidth(
        "cpu" if args.backend == "mlx" else args.device, args.bandwidth_mb
    )
    results["bandwidth"] = {**asdict(bandwidth), "for_decode": bandwidth.for_decode}
    results["bounds"] = baselines.bandwidth_bounds(weights, bandwidth.for_decode)
    prompt = run.prompts.make(args.prompt_tokens, "generate")
    if args.backend == "torch":
        results["generate"] = {}
        for precision in [] if "generate" in args.skip else args.generate:
            print(f"plain generate at {precision}", flush=True)
            try:
                rate = baselines.generate_rate(
                    run.model, precision, prompt, args.new_tokens, args.device
                )
            except (ValueError, RuntimeError) as error:
                rate = f"unsupported: {error}"
            results["generate"][precision] = rate
        results["servers"] = [serve_precision(run, q, results) for q in args.quantization]
        results["llama_cpp"] = baselines.llama_cpp_rate(
            args.gguf, prompt, args.new_tokens, torch.get_num_threads()
        )
    else:
        results["mlx"] = mlx_comparison(run)
    results["meta"]["others_cpu_share"] = others.share()
    results["targets"] = [v.as_dict() for v in targets.evaluate(results)]
    return results


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every server is stopped by its `with` block."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _stop_on_sigterm()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
            results = benchmark(args, Path(tmp))
    except KeyboardInterrupt:
        print("interrupted: every server this run started has been stopped", file=sys.stderr)
        return 130
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.markdown(results))
    print(f"(results saved to {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
