"""Shared test fixtures: the real model files in ../shared/models and a tiny Qwen2 model.

Real-model tests skip with a clear reason when ../shared is absent. The tiny model has
random weights but the real Qwen2.5 tokenizer and chat template, for tests that need a
templated model without real text.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from inferd.engine import ModelWorker
from inferd.testing.fakes import FakeBackend
from tests.engine_doubles import LABEL
from tests.owner import Owner

# Python 3.11 formats a traceback's ^^^ markers with ast.parse, and CPython's AST
# converter keeps one recursion counter per interpreter (gh-106905): a traceback logged
# while Sanic compiles its router (ast.parse too) -- by a backend thread, or by a task
# collected mid-parse that logs its unretrieved exception -- fails start-up with
# "SystemError: AST constructor recursion depth mismatch". Tests start hundreds of apps
# among such tracebacks, so theirs go without the markers.
if hasattr(traceback, "_extract_caret_anchors_from_line_segment"):
    traceback._extract_caret_anchors_from_line_segment = lambda segment: None

# The module-scoped `browser` fixture of the web page's tests (tests/test_web_*.py).
pytest_plugins = ["tests.browser"]


@pytest.fixture(autouse=True)
def heap_left_collectable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model workers in this process do not freeze its heap (inferd/heap.py): the objects
    of tests that have ended would never be collected. tests/test_heap.py tests the
    freeze, tests/test_engine.py that a worker does it; servers started as processes do."""
    monkeypatch.setattr("inferd.engine.freeze_loaded_objects", lambda: 0)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    path = Path(__file__).parents[2] / "shared" / "models"
    if not path.is_dir():
        pytest.skip(f"shared model files not found at {path} (../shared/models beside the repo)")
    return path


@pytest.fixture(scope="session")
def stories_path(shared_models: Path) -> Path:
    path = shared_models / "stories260K"
    if not (path / "config.json").is_file():
        pytest.skip(f"stories260K model not found at {path}")
    return path


@pytest.fixture(scope="session")
def qwen_tokenizer_path(shared_models: Path) -> Path:
    path = shared_models / "qwen2.5-tokenizer"
    if not (path / "tokenizer_config.json").is_file():
        pytest.skip(f"Qwen2.5 tokenizer not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_qwen_model_dir(
    qwen_tokenizer_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A randomly initialised 2-layer Qwen2 saved with the real Qwen2.5 tokenizer files."""
    out = tmp_path_factory.mktemp("tiny-qwen")
    for file in qwen_tokenizer_path.iterdir():
        if file.name != "PROVENANCE.md":
            shutil.copy(file, out / file.name)
    vocab = len(AutoTokenizer.from_pretrained(out))
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151643,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    # Like Qwen2.5-Instruct: the generation config adds <|im_end|> to the config's EOS.
    model.generation_config = GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643])
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread for a module: tiny models gain nothing from more, and spinning
    OpenMP workers slow them down many times over on a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def owner() -> Iterator[Owner]:
    """One long-lived worker thread per module, like the engine's model-owner thread:
    MLX streams are thread-local, so a model must load and generate on one thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx-owner") as pool:
        yield lambda fn, *args: pool.submit(fn, *args).result(timeout=120)
        pool.submit(_release_mlx_streams).result(timeout=120)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server (with its append-only file) for the whole run."""
    from tests.servers import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def empty_redis(redis_url: str) -> str:
    """The run's Redis, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    return redis_url


def _release_mlx_streams() -> None:
    """What MlxBackend.close() does last: mlx 0.32 wants a thread's streams released
    before the thread ends (also where a test used MLX without a backend)."""
    from inferd.backends.mlx_backend import mlx_available

    if mlx_available():
        import mlx.core as mx

        mx.clear_streams()


@pytest.fixture
def make_worker():
    """ModelWorkers over a given fake backend (tests/test_engine*.py), stopped after."""
    workers: list[ModelWorker] = []

    def make(
        backend: FakeBackend, max_concurrent: int = 8, arrival_window: float = 0.0
    ) -> ModelWorker:
        worker = ModelWorker(LABEL, lambda: backend, max_concurrent, arrival_window)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()
