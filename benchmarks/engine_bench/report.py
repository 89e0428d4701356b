"""The markdown report of one run, from the results dict that is also saved as JSON."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .stats import ratio
from .targets import evaluate


def num(value: Any, spec: str = ".1f", unit: str = "") -> str:
    """A number formatted by `spec`, or a dash for a missing value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return f"{value:{spec}}{unit}"


def ms(seconds: Any) -> str:
    return num(seconds * 1000 if isinstance(seconds, (int, float)) else None, ".0f")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _spread_ms(spread: dict[str, Any]) -> str:
    return " / ".join(ms(spread.get(key)) for key in ("p50", "p95", "p99"))


def _meta(meta: dict[str, Any]) -> str:
    others = meta.get("others_cpu_share")
    lines = [
        f"Model: {meta['model']} ({meta['weights'] / 1e6:.1f} M weights), "
        f"device {meta['device']}, torch threads {meta['threads']}; "
        f"prompts {meta['prompt_tokens']} tokens, {meta['new_tokens']} new tokens, "
        f"greedy. Commit {meta['commit']}, {meta['date']}.",
        f"Machine: {meta['cpu']}, {meta['cores']} cores; load average {meta['load_before']:.1f} "
        f"before the run; other processes used {num(others, '.0%')} of its CPU during it.",
        f"Command: `{meta['command']}`",
    ]
    if isinstance(others, float) and others > 0.1:
        lines.insert(0, f"**Other work used {others:.0%} of the machine during this run: "
                     "its figures are noisy, compare only ratios from a quiet run.**")  # fmt: skip
    return "\n".join(lines)


def _bandwidth(results: dict[str, Any]) -> str:
    bw = results["bandwidth"]
    bounds = results["bounds"]
    lines = [
        f"Memory bandwidth ({bw['threads']} threads): copy {bw['copy']:.1f}, triad "
        f"{bw['triad']:.1f}, read {bw['read']:.1f} GB/s. The batch-1 bound is weight bytes "
        f"per token / the read rate ({bw['for_decode']:.1f} GB/s): a decode step streams "
        "every weight in once (int4 counted at 4.5 bits with its scales).",
        "",
        table(["", *bounds], [["batch-1 bound tok/s", *(num(v) for v in bounds.values())]]),
    ]
    return "\n".join(lines)


def _generate(results: dict[str, Any]) -> str:
    generate = results["generate"]
    fp32 = generate.get("fp32")
    rows = []
    for precision, rate in generate.items():
        bound = results["bounds"].get(precision)
        share = rate / bound if isinstance(rate, float) and bound else None
        times = rate / fp32 if isinstance(rate, float) and isinstance(fp32, float) else None
        shown = num(rate) if isinstance(rate, float) else str(rate)
        rows.append([precision, shown, num(times, ".2f", "x"), num(share, ".0%")])
    return "Plain `model.generate`:\n\n" + table(
        ["precision", "tok/s", "vs fp32", "of bound"], rows
    )


def _load_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for server in results["servers"]:
        if server["status"] != "ok":
            continue
        for row in server["load"]:
            rows.append(
                [
                    server["precision"],
                    str(row["streams"]),
                    num(row["aggregate_tok_s"]),
                    num(row.get("x_generate_fp32"), ".2f", "x"),
                    num(row.get("of_bound"), ".0%"),
                    _spread_ms(row["ttft"]),
                    _spread_ms(row["itl"]),
                    str(row["errors"]),
                ]
            )
    return rows


def _servers(results: dict[str, Any]) -> str:
    header = ["precision", "streams", "aggregate tok/s", "x generate fp32", "of bound"]
    header += ["TTFT p50/p95/p99 ms", "inter-token p50/p95/p99 ms", "errors"]
    parts = [
        "inferd under concurrent streaming clients (SSE):",
        "",
        table(header, _load_rows(results)),
    ]
    for server in results["servers"]:
        if server["status"] == "ok" and server.get("one_stream"):
            parts.append("\n- " + _one_stream(server))
        if server["status"] == "ok" and server.get("resident_mib"):
            parts.append(
                f"\n- {server['precision']}: the server resident at "
                f"{server['resident_mib']:,.0f} MiB after its last load level"
            )
    refused = [s for s in results["servers"] if s["status"] != "ok"]
    for server in refused:
        parts.append(f"\n- {server['precision']}: {server['status']}")
    return "\n".join(parts)


def _one_stream(server: dict[str, Any]) -> str:
    """What was measured around the one-stream level, and its share of each rate."""
    around = server["one_stream"]
    precision, bound = server["precision"], around["bound"]
    row = next(row for row in server["load"] if row["streams"] == 1)
    text = (
        f"{precision}, 1 stream: between reads of {around['read_before']:.1f} and "
        f'{around["read_after"]:.1f} GB/s; its "of bound" is of the bound at their mean, '
        f"{num(bound)} tok/s"
    )
    matmuls = around.get("int8_matmuls_tok_s")
    if matmuls:
        text += (
            f". The int8 matmuls alone (one row, every weight once, just before it): "
            f"{matmuls:.1f} tok/s, {num(ratio(matmuls, bound), '.0%')} of that bound; the "
            f"stream reached {num(ratio(row['aggregate_tok_s'], matmuls), '.0%')} of their rate"
        )
    return text


def _phase_servers(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The servers whose interference and prefix phases ran: inferd per precision, and
    inferd on metal in an MLX run (named "metal (MLX)")."""
    servers = list(results.get("servers", []))
    mlx = results.get("mlx") or {}
    if mlx.get("status") == "ok" and ("interference" in mlx or "prefix" in mlx):
        phases = {key: mlx[key] for key in ("interference", "prefix") if key in mlx}
        servers.append({"precision": "metal (MLX)", "status": "ok", **phases})
    return servers


def _interference(results: dict[str, Any]) -> str:
    rows, notes = [], []
    for server in _phase_servers(results):
        found = server.get("interference")
        if server["status"] != "ok" or not found:
            continue
        if found.get("max_gap_held"):
            notes.append(
                f"- {server['precision']}: the max gap ended in U+FFFD: the detokenizer held"
                " back byte tokens that formed no character (a random model emits them)"
                " until the next token; the steps went on"
            )
        rows.append(
            [
                server["precision"],
                str(found["long_prompt_tokens"]),
                ms(found["steady"]["p99"]),
                ms(found["during"]["p99"]),
                ms(found["during"]["max"]),
                num(found["p99_ratio"], ".1f", "x"),
                ms(found["prefill_seconds"]),
                found["long_prompt_error"] or "",
            ]
        )
    header = ["precision", "long prompt tokens", "steady p99 ms", "during prefill p99 ms"]
    header += ["max gap ms", "ratio", "long prompt TTFT ms", "error"]
    text = (
        f"Prefill interference ({results['meta']['interference_streams']} steady streams, "
        "then one long prompt):\n\n" + table(header, rows)
    )
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def _prefix(results: dict[str, Any]) -> str:
    rows = []
    for server in _phase_servers(results):
        found = server.get("prefix")
        if server["status"] != "ok" or not found:
            continue
        rows.append(
            [
                server["precision"],
                str(found["history_tokens"]),
                ms(found["first_turn_ttft"]),
                ms(found["cached_ttft"]),
                ms(found["uncached_ttft"]),
                num(found["ratio"], ".2f", "x"),
                "; ".join(found["checks"]) or "ok",
            ]
        )
    header = ["precision", "history tokens", "turn 1 TTFT ms", "turn 2 TTFT ms (cached)"]
    header += ["turn 2 TTFT ms (fresh server)", "ratio", "history checks"]
    return (
        "Prefix reuse: a session's second turn (medians over sessions). Baseline: the "
        "identical request (same history, rolled back) on a freshly started server, which "
        "has no cached prefix.\n\n" + table(header, rows)
    )


def _mlx(results: dict[str, Any]) -> str:
    mlx = results["mlx"]
    if mlx.get("status") != "ok":
        return f"MLX: {mlx.get('status')}"
    rows = []
    for level in mlx["levels"]:
        ours, theirs = level["inferd"], level["mlx_lm"]
        rows.append(
            [
                str(level["streams"]),
                num(ours["aggregate_tok_s"]),
                ms(ours["ttft"]["p50"]) + " / " + ms(ours["ttft"]["p95"]),
                num(theirs["aggregate_tok_s"]),
                ms(theirs["ttft"]["p50"]) + " / " + ms(theirs["ttft"]["p95"]),
                num(level["ratio"], ".2f", "x"),
                f"{ours['errors']} / {theirs['errors']}",
            ]
        )
    header = ["streams", "inferd tok/s", "inferd TTFT p50/p95 ms", "mlx_lm tok/s"]
    header += ["mlx_lm TTFT p50/p95 ms", "inferd / mlx_lm", "errors"]
    return "MLX: inferd (device metal) vs `mlx_lm.server`, same model:\n\n" + table(header, rows)


def _targets(results: dict[str, Any]) -> str:
    marks = {True: "met", False: "NOT met", None: "not measured"}
    rows = [[v.target, v.measured, marks[v.met]] for v in evaluate(results)]
    return "Issue #11 targets (ratios from this run):\n\n" + table(["target", "measured", ""], rows)


def markdown(results: dict[str, Any]) -> str:
    """The whole report; sections for parts this run skipped are left out."""
    sections = [
        f"## inferd engine benchmark ({results['meta']['backend']})",
        _meta(results["meta"]),
    ]
    sections.append(_bandwidth(results))
    if results.get("generate"):
        sections.append(_generate(results))
    if results.get("servers"):
        sections += [_servers(results), _interference(results), _prefix(results)]
    if results.get("mlx"):
        sections.append(_mlx(results))
        if not results.get("servers") and len(_phase_servers(results)):
            sections += [_interference(results), _prefix(results)]
    if "llama_cpp" in results:
        found = results["llama_cpp"]
        shown = num(found, ".1f", " tok/s") if isinstance(found, float) else found
        sections.append(f"llama.cpp in-process (`--gguf`): {shown}")
    sections.append(_targets(results))
    return "\n\n".join(sections) + "\n"
