"""Issue #11's targets, checked against one run's results (the dict bench_engine writes).

Each target is a ratio measured in the same run, so the verdict holds on the machine that
ran it; a target whose inputs this run did not measure is listed as not measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: this run did not measure it

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "measured": self.measured, "met": self.met}


def _load_row(server: dict[str, Any], streams: int) -> dict[str, Any] | None:
    return next((row for row in server.get("load", []) if row["streams"] == streams), None)


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) else None


def _missing(target: str) -> Verdict:
    return Verdict(target, "not measured", None)


def _single_stream(results: dict[str, Any], server: dict[str, Any]) -> list[Verdict]:
    precision = server["precision"]
    row = _load_row(server, 1)
    verdicts = []
    if precision == "int8":
        # the bound at the read rate measured around the stream, where the run has it
        around = server.get("one_stream", {}).get("bound")
        bound = _number(around) or _number(results.get("bounds", {}).get("int8"))
        target = "1 stream int8 >= 80% of the int8 bandwidth bound"
        if row and bound:
            share = row["aggregate_tok_s"] / bound
            verdicts.append(
                Verdict(target, f"{share:.0%} ({row['aggregate_tok_s']:.1f} tok/s)", share >= 0.8)
            )
        else:
            verdicts.append(_missing(target))
    generate = _number(results.get("generate", {}).get(precision))
    if row and generate:
        times = row["aggregate_tok_s"] / generate
        target = f"1 stream {precision} >= 1.0x plain generate {precision}"
        verdicts.append(Verdict(target, f"{times:.2f}x", times >= 1.0))
    return verdicts


def _many_streams(
    results: dict[str, Any], server: dict[str, Any], streams: int, times: float, ttft_p95: float
) -> Verdict:
    target = (
        f"{streams} streams {server['precision']}: aggregate >= {times:g}x generate fp32, "
        f"TTFT p95 <= {ttft_p95:g} s, no errors"
    )
    row = _load_row(server, streams)
    generate = _number(results.get("generate", {}).get("fp32"))
    if row is None or not generate:
        return _missing(target)
    ratio = row["aggregate_tok_s"] / generate
    p95 = row["ttft"]["p95"]
    measured = (
        f"{ratio:.1f}x, TTFT p95 {p95 if p95 is None else round(p95, 2)} s, {row['errors']} errors"
    )
    met = ratio >= times and p95 is not None and p95 <= ttft_p95 and row["errors"] == 0
    return Verdict(target, measured, met)


def _interference(server: dict[str, Any]) -> Verdict:
    target = f"{server['precision']}: streams' inter-token p99 during a long prefill <= 3x steady"
    interference = server.get("interference") or {}
    ratio = _number(interference.get("p99_ratio"))
    # a long prompt that failed (refused, timed out) interfered with nothing
    if ratio is None or interference.get("long_prompt_error"):
        return _missing(target)
    return Verdict(target, f"{ratio:.1f}x", ratio <= 3.0)


def _prefix(server: dict[str, Any]) -> Verdict:
    target = f"{server['precision']}: second turn TTFT <= 0.2x without a cached prefix"
    ratio = _number((server.get("prefix") or {}).get("ratio"))
    if ratio is None:
        return _missing(target)
    return Verdict(target, f"{ratio:.2f}x", ratio <= 0.2)


def _mlx(results: dict[str, Any]) -> list[Verdict]:
    verdicts = []
    for streams, times in ((1, 1.0), (8, 1.5)):
        target = f"MLX {streams} stream(s): inferd >= {times:g}x mlx_lm.server tok/s"
        level = next((lv for lv in results["mlx"]["levels"] if lv["streams"] == streams), None)
        ratio = _number(level and level.get("ratio"))
        verdicts.append(
            Verdict(target, f"{ratio:.2f}x", ratio >= times) if ratio else _missing(target)
        )
    return verdicts


def evaluate(results: dict[str, Any]) -> list[Verdict]:
    """Every target this run can speak to, server by server."""
    verdicts: list[Verdict] = []
    for server in results.get("servers", []):
        if server.get("status") != "ok":
            continue
        verdicts += _single_stream(results, server)
        verdicts.append(_many_streams(results, server, 8, 12, 0.5))
        verdicts.append(_many_streams(results, server, 32, 25, 2.0))
        verdicts.append(_interference(server))
        verdicts.append(_prefix(server))
    if results.get("mlx"):
        verdicts += _mlx(results)
        mlx = {"precision": "metal (MLX)", **results["mlx"]}
        if "interference" in mlx:
            verdicts.append(_interference(mlx))
        if "prefix" in mlx:
            verdicts.append(_prefix(mlx))
    return verdicts
