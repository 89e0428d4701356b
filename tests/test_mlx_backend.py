"""Tests for backends/mlx_backend.py against the real stories260K model (mlx's CPU backend).

As in inferd's engine, the model is loaded and run on one long-lived non-main thread:
MLX streams and random state belong to the thread that uses them.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inferd.backends.base import BackendError, ChatMessage, ModelInfo, SamplingParams
from inferd.backends.chat_template import render_plain_chat
from inferd.backends.mlx_backend import MlxBackend
from tests.batching import run_alone, run_together
from tests.mlx_support import require_stories
from tests.owner import Owner

STORIES = require_stories()
QWEN_TOKENIZER = STORIES.parent / "qwen2.5-tokenizer"

pytestmark = pytest.mark.real_model

# 64 greedy tokens after "Once upon a time" (stories260K/PROVENANCE.md, HF and MLX agree).
GREEDY_64 = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
    "\nLily's mom said"
)
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)
Loaded = tuple[MlxBackend, ModelInfo]


@pytest.fixture(scope="module")
def loaded(owner: Owner) -> Iterator[Loaded]:
    backend = MlxBackend(str(STORIES))
    info = owner(backend.load)
    yield backend, info
    owner(backend.close)  # before the owner thread ends (see MlxBackend.close)


def generate(
    backend: MlxBackend, prompt: Sequence[int], params: SamplingParams, n: int
) -> list[int]:
    """n tokens of one generation, alone in a fresh batcher (on the calling thread)."""
    batcher = backend.batcher(1)
    try:
        return run_alone(batcher, prompt, params, n)
    finally:
        batcher.close()


def test_model_info(loaded: Loaded) -> None:
    _, info = loaded
    assert info == ModelInfo(512, frozenset({2}), has_chat_template=False)


def test_greedy_matches_reference_text(owner: Owner, loaded: Loaded) -> None:
    backend, _ = loaded

    def run() -> str:
        prompt = backend.encode_text("Once upon a time")
        assert prompt == [1, 403, 407, 261, 378]
        tokens = generate(backend, prompt, GREEDY, 64)
        assert all(isinstance(t, int) for t in tokens)
        return backend.decode(prompt + tokens)

    assert owner(run) == GREEDY_64


def test_greedy_ids_match_torch_transformers(owner: Owner, loaded: Loaded) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    backend, _ = loaded
    prompt = owner(backend.encode_text, "Once upon a time")
    mlx_ids = owner(generate, backend, prompt, GREEDY, 32)

    model = transformers.AutoModelForCausalLM.from_pretrained(STORIES)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=32,
            repetition_penalty=1.0,
            pad_token_id=0,
        )
    assert mlx_ids == out[0, len(prompt) :].tolist()


def test_seeded_sampling_is_reproducible(owner: Owner, loaded: Loaded) -> None:
    backend, _ = loaded
    prompt = owner(backend.encode_text, "Once upon a time")
    seeded = SamplingParams(temperature=1.0, top_p=0.95, top_k=40, seed=7)
    first = owner(generate, backend, prompt, seeded, 24)
    assert owner(generate, backend, prompt, seeded, 24) == first
    other = SamplingParams(temperature=1.0, top_p=0.95, top_k=40, seed=8)
    assert owner(generate, backend, prompt, other, 24) != first

    def interleaved() -> list[int]:
        # Another generation stepping beside it must not disturb the seeded one.
        batcher = backend.batcher(2)
        out = run_together(batcher, [prompt, prompt], [seeded, other], [0, 0], [24, 24])
        batcher.close()
        return out[0]

    assert owner(interleaved) == first


def test_top_k_beyond_vocab_means_no_top_k(owner: Owner, loaded: Loaded) -> None:
    backend, _ = loaded
    prompt = owner(backend.encode_text, "Once upon a time")
    params = SamplingParams(temperature=0.8, top_k=100_000, seed=1)
    assert len(owner(generate, backend, prompt, params, 8)) == 8


def test_repeat_penalty_changes_output(owner: Owner, loaded: Loaded) -> None:
    backend, _ = loaded
    prompt = owner(backend.encode_text, "Once upon a time")
    plain = owner(generate, backend, prompt, GREEDY, 48)
    penalised = SamplingParams(temperature=0.0, repeat_penalty=1.3)
    assert owner(generate, backend, prompt, penalised, 48) != plain


def test_chat_without_template_uses_plain_rendering(owner: Owner, loaded: Loaded) -> None:
    backend, _ = loaded
    messages = [ChatMessage("system", "Tell stories."), ChatMessage("user", "A story, please.")]
    expected = owner(backend.encode_text, render_plain_chat(messages))
    assert owner(backend.encode_chat, messages) == expected
    assert owner(backend.decode, expected).endswith("Assistant:")


def test_chat_template_and_every_eos_id(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    if not (QWEN_TOKENIZER / "vocab.json").is_file():
        pytest.skip(f"qwen2.5-tokenizer not found at {QWEN_TOKENIZER}")
    # stories260K's weights with Qwen's templated tokenizer: only encoding is exercised.
    for name in ("config.json", "model.safetensors"):
        shutil.copy(STORIES / name, tmp_path)
    for name in ("tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copy(QWEN_TOKENIZER / name, tmp_path)
    backend = MlxBackend(str(tmp_path), context_length=256)
    info = backend.load()
    assert info == ModelInfo(256, frozenset({2, 151645}), has_chat_template=True)
    ids = backend.encode_chat([ChatMessage("user", "Hi there")])
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    conversation = [{"role": "user", "content": "Hi there"}]
    text = hf.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert ids == hf.encode(text, add_special_tokens=False)
    assert backend.decode(ids).endswith("user\nHi there\nassistant\n")  # specials skipped


def test_load_on_a_fresh_thread_then_generate_there() -> None:
    result: dict[str, object] = {}

    def run() -> None:
        backend = MlxBackend(str(STORIES), quantization="8bit")
        try:
            backend.load()
            prompt = backend.encode_text("Once upon a time")
            result["text"] = backend.decode(generate(backend, prompt, GREEDY, 12))
            result["main"] = threading.current_thread() is threading.main_thread()
        except BaseException as exc:
            result["error"] = exc
        finally:
            backend.close()

    thread = threading.Thread(target=run, name="mlx-test-owner")
    thread.start()
    thread.join(timeout=120)
    assert "error" not in result, result.get("error")
    assert result["main"] is False
    assert str(result["text"]).startswith(", there was a little girl")


def test_missing_model_is_a_backend_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendError, match=str(missing)):
        MlxBackend(str(missing)).load()


def test_broken_model_dir_is_a_backend_error(tmp_path: Path) -> None:
    shutil.copy(STORIES / "config.json", tmp_path)  # no weights
    with pytest.raises(BackendError, match=f"could not load MLX model from {tmp_path}"):
        MlxBackend(str(tmp_path)).load()


def test_unknown_quantization_lists_the_allowed_values() -> None:
    with pytest.raises(BackendError, match="allowed: none, 4bit, 8bit"):
        MlxBackend(str(STORIES), quantization="3bit")


def test_batcher_before_load_is_an_error() -> None:
    with pytest.raises(BackendError, match="not loaded"):
        MlxBackend(str(STORIES)).batcher(1)


def test_presence_and_frequency_penalties_change_output(owner: Owner, loaded: Loaded) -> None:
    backend, _ = loaded
    prompt = owner(backend.encode_text, "Once upon a time")
    plain = owner(generate, backend, prompt, GREEDY, 48)
    for fields in ({"presence_penalty": 1.5}, {"frequency_penalty": 1.0}):
        penalised = SamplingParams(temperature=0.0, **fields)
        assert owner(generate, backend, prompt, penalised, 48) != plain, fields


def test_a_tiny_temperature_is_greedy(owner: Owner, loaded: Loaded) -> None:
    # 1 / 1e-40 overflows float32: sampling at it would be inf and NaN, not a token.
    backend, _ = loaded
    prompt = owner(backend.encode_text, "Once upon a time")
    tiny = SamplingParams(temperature=1e-40, seed=1)
    assert owner(generate, backend, prompt, tiny, 16) == owner(
        generate, backend, prompt, GREEDY, 16
    )


def test_a_model_whose_cache_cannot_be_batched_is_refused(owner: Owner, loaded: Loaded) -> None:
    backend, _ = loaded

    def run() -> None:
        from mlx_lm.models.cache import ConcatenateKVCache

        model = backend.batcher(1).model
        original = getattr(model, "make_cache", None)
        model.make_cache = lambda: [ConcatenateKVCache() for _ in model.layers]
        try:
            with pytest.raises(BackendError, match="ConcatenateKVCache"):
                backend.batcher(1)
        finally:
            if original is None:
                del model.make_cache
            else:
                model.make_cache = original

    owner(run)


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_models_batch_like_the_others(quantization: str) -> None:
    def run() -> tuple[ModelInfo, list[list[int]], list[list[int]]]:
        backend = MlxBackend(str(STORIES), quantization=quantization)
        try:
            info = backend.load()
            prompts = [backend.encode_text(p) for p in ("Once upon a time", "Tom had a dog")]
            alone = [generate(backend, p, GREEDY, 16) for p in prompts]
            together = run_together(backend.batcher(2), prompts, [GREEDY] * 2, [0, 2], [16] * 2)
            return info, alone, together
        finally:
            backend.close()  # the thread's last MLX call: it gets a thread of its own

    with ThreadPoolExecutor(max_workers=1) as pool:
        info, alone, together = pool.submit(run).result(timeout=120)
    assert info.quantization == quantization
    assert together == alone
