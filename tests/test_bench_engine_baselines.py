"""benchmarks/engine_bench: what a run measures besides inferd's servers -- the servers'
generated config, the machine (bandwidth, its load, resident sizes), the int8 matmuls
alone, llama.cpp, the commit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inferd.config import parse_config, tomllib

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from engine_bench import baselines, kernel_floor, machine  # noqa: E402
from engine_bench.servers import inferd_config  # noqa: E402

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"
needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason=f"{STORIES} is absent")


def test_generated_config_is_one_that_inferd_accepts(tmp_path: Path) -> None:
    text = inferd_config(
        tmp_path / "model",
        quantization="bf16",
        device="cpu",
        max_concurrent=33,
        sessions_dir=tmp_path / "sessions",
        model_options={"context_length": "4096"},
    )
    config = parse_config(tomllib.loads(text))
    (model,) = config.models
    assert (model.quantization, model.max_concurrent, model.context_length) == ("bf16", 33, 4096)
    assert model.preload and config.plugins.enabled == []
    assert config.sessions.path == tmp_path / "sessions"
    default = inferd_config(
        tmp_path, quantization=None, device="metal", max_concurrent=2, sessions_dir=tmp_path
    )
    assert "quantization" not in default


def test_bandwidth_bound_is_bytes_per_token_over_bandwidth() -> None:
    bounds = baselines.bandwidth_bounds(weights=500_000_000, gigabytes_per_s=20.0)
    assert bounds["fp32"] == pytest.approx(10.0)
    assert bounds["bf16"] == pytest.approx(20.0) and bounds["int8"] == pytest.approx(40.0)
    assert bounds["int4"] == pytest.approx(20e9 / (500e6 * 4.5 / 8))


def test_the_commit_says_when_the_measured_code_has_uncommitted_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bench_engine

    outputs = {"rev-parse": "abc1234\n", "status": ""}

    def git(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(command, 0, stdout=outputs[command[3]])

    monkeypatch.setattr(bench_engine.subprocess, "run", git)
    assert bench_engine._commit() == "abc1234"
    outputs["status"] = " M backends/torch_int8.py\n"
    assert bench_engine._commit() == "abc1234+changes"


def test_read_rate_alone_is_measured_as_the_bandwidth_read() -> None:
    assert baselines.measure_read("cpu", megabytes=8, repeats=2) > 0


@needs_stories
def test_the_int8_matmul_floor_calls_every_int8_linear_of_the_engine_model() -> None:
    layers = kernel_floor.int8_layers(STORIES)
    # stories260K: 5 layers of q/k/v (stacked), o, gate/up (stacked), down; the output
    # projection
    assert len(layers) == 5 * 4 + 1
    assert {(layer.in_features, layer.out_features) for layer in layers} == {
        (64, 64 + 2 * 32), (64, 64), (64, 2 * 172), (172, 64), (64, 512)
    }  # fmt: skip
    assert 0 < kernel_floor.matmul_pass_seconds(layers, repeats=3) < 1


def test_llama_cpp_comparison_says_why_it_was_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert baselines.llama_cpp_rate(None, "x", 4, 2) == "skipped: no --gguf given"
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    skipped = baselines.llama_cpp_rate(tmp_path / "m.gguf", "x", 4, 2)
    assert isinstance(skipped, str) and "not installed" in skipped


def test_others_share_is_the_machine_time_this_run_did_not_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = iter([(100.0, 400.0), (110.0, 420.0)])  # (busy, total) seconds of all cores
    monkeypatch.setattr(machine, "_machine_seconds", lambda: next(readings))
    own = iter([50.0, 54.0])
    monkeypatch.setattr(machine, "_own_seconds", lambda: next(own))
    others = machine.OthersLoad()
    # 10 s busy of 20 s, 4 s of them ours: others used 6 s of 20.
    assert others.share() == pytest.approx(0.3)


def test_resident_size_of_this_process_and_none_for_a_process_that_is_gone() -> None:
    assert machine.rss_mib(os.getpid()) > 10  # this interpreter with torch imported
    assert machine.rss_mib(None) is None and machine.rss_mib(2**22 + 12345) is None
