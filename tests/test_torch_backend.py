"""Tests for backends/torch_backend.py: real stories260K text, a tiny templated Qwen2,
sampling behaviour, and load failures."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inferd.backends.base import BackendError, ChatMessage, SamplingParams
from inferd.backends.chat_template import render_plain_chat
from inferd.backends.torch_backend import (
    EngineOptions,
    TorchBackend,
    pick_device,
    pick_quantization,
)
from tests.batching import run_alone

# Tiny models gain nothing from intra-op threads (see conftest.single_torch_thread).
pytestmark = pytest.mark.usefixtures("single_torch_thread")

STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in "
    "the park. One day, she saw a big, red ball. She wanted to play with it, but it was too "
    "high.\nLily's mom said"
)
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)
ONE_THREAD = EngineOptions(threads=1, kv_cache_tokens=4096)


@pytest.fixture(scope="module")
def stories(stories_path: Path) -> TorchBackend:
    backend = TorchBackend(str(stories_path), quantization="fp32", options=ONE_THREAD)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def stories_model(stories_path: Path):
    return AutoModelForCausalLM.from_pretrained(stories_path).eval()


@pytest.fixture(scope="module")
def tiny_qwen(tiny_qwen_model_dir: Path) -> TorchBackend:
    backend = TorchBackend(str(tiny_qwen_model_dir), quantization="fp32", options=ONE_THREAD)
    backend.load()
    return backend


def generate(backend: TorchBackend, prompt: list[int], params: SamplingParams, n: int) -> list[int]:
    return run_alone(backend.batcher(1), prompt, params, n)


def reference(model, prompt: list[int], n: int, **kwargs) -> list[int]:
    """Greedy ids from transformers' own generate()."""
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
        **kwargs,
    )
    return out[0, len(prompt) :].tolist()


# --- stories260K: real text -------------------------------------------------------------


@pytest.mark.real_model
def test_stories_model_info(stories_path: Path):
    info = TorchBackend(str(stories_path), options=ONE_THREAD).load()
    assert info.context_length == 512
    assert info.eos_token_ids == frozenset({2})
    assert not info.has_chat_template


@pytest.mark.real_model
def test_context_length_override(stories_path: Path):
    backend = TorchBackend(str(stories_path), context_length=128, options=ONE_THREAD)
    assert backend.load().context_length == 128


@pytest.mark.real_model
def test_greedy_tells_the_known_story_and_matches_generate(stories, stories_model):
    prompt = stories.encode_text("Once upon a time")
    assert prompt == [1, 403, 407, 261, 378]
    ids = generate(stories, prompt, GREEDY, 128)
    assert stories.decode(prompt + ids[:64]) == STORY
    assert ids == reference(stories_model, prompt, 128)


@pytest.mark.real_model
def test_repeat_penalty_matches_generate_and_changes_the_output(stories, stories_model):
    prompt = stories.encode_text("Once upon a time")
    params = SamplingParams(temperature=0.0, repeat_penalty=1.3, max_tokens=8)
    # max_tokens is a hint only: the history grows past it when the engine allows.
    penalised = generate(stories, prompt, params, 48)
    assert penalised == reference(stories_model, prompt, 48, repetition_penalty=1.3)
    assert penalised != generate(stories, prompt, GREEDY, 48)


@pytest.mark.real_model
def test_sampling_with_a_seed_is_reproducible(stories):
    prompt = stories.encode_text("Once upon a time")
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=1234)
    first = generate(stories, prompt, params, 32)
    assert first == generate(stories, prompt, params, 32)
    other = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=4321)
    assert first != generate(stories, prompt, other, 32)


@pytest.mark.real_model
def test_top_k_one_is_greedy(stories):
    prompt = stories.encode_text("Once upon a time")
    top1 = SamplingParams(temperature=0.8, top_k=1, top_p=0.95)
    assert generate(stories, prompt, top1, 32) == generate(stories, prompt, GREEDY, 32)


@pytest.mark.real_model
def test_steps_may_run_on_another_thread(stories):
    # The engine loads on its model-owner thread and steps there.
    prompt = stories.encode_text("Once upon a time")
    ids: list[int] = []
    worker = threading.Thread(
        target=lambda: ids.extend(run_alone(stories.batcher(1), prompt, GREEDY, 8))
    )
    worker.start()
    worker.join()
    assert ids == generate(stories, prompt, GREEDY, 8)


@pytest.mark.real_model
def test_plain_chat_fallback_for_an_untemplated_model(stories):
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]
    ids = stories.encode_chat(messages)
    assert ids == stories.encode_text(render_plain_chat(messages))
    assert stories.decode(ids) == "System: Be brief.\nUser: Hi\nAssistant:"


@pytest.mark.real_model
def test_weight_dtype_override(stories_path: Path):
    backend = TorchBackend(str(stories_path), quantization="bf16", options=ONE_THREAD)
    info = backend.load()
    assert backend.dtype == torch.bfloat16
    assert info.quantization == "bf16"
    assert len(generate(backend, [1, 403], GREEDY, 4)) == 4


@pytest.mark.real_model
def test_the_cpu_default_is_int8(stories_path: Path):
    backend = TorchBackend(str(stories_path), options=ONE_THREAD)
    assert backend.load().quantization == "int8"
    assert len(generate(backend, [1, 403], GREEDY, 4)) == 4


@pytest.mark.real_model
def test_bad_requests_raise(stories):
    batcher = stories.batcher(1)
    with pytest.raises(BackendError, match="empty prompt"):
        batcher.add(0, [], GREEDY)
    with pytest.raises(BackendError, match="top_p"):
        batcher.add(0, [1], SamplingParams(top_p=1.5))
    batcher.finish(0)  # never added: nothing to do
    with pytest.raises(BackendError, match="kv_cache_tokens"):
        batcher.add(1, [1] * 5000, GREEDY)  # more than the 4096-token cache


# --- tiny Qwen2 with the real Qwen2.5 tokenizer and chat template -------------------------


@pytest.mark.real_model
def test_qwen_model_info_collects_every_eos_id(tiny_qwen):
    info = tiny_qwen.load()
    # config 151643 (<|endoftext|>), generation config + tokenizer 151645 (<|im_end|>)
    assert info.eos_token_ids == frozenset({151643, 151645})
    assert info.context_length == 256
    assert info.has_chat_template


@pytest.mark.real_model
def test_chat_template_ends_with_the_assistant_generation_prompt(tiny_qwen, tiny_qwen_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen_model_dir)
    ids = tiny_qwen.encode_chat([ChatMessage("user", "What is 2+2?")])
    assert isinstance(ids, list)
    assert all(type(i) is int for i in ids)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are Qwen")
    assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.real_model
def test_qwen_generation_steps(tiny_qwen):
    prompt = tiny_qwen.encode_chat([ChatMessage("user", "Hi")])
    ids = generate(tiny_qwen, prompt, GREEDY, 5)
    assert ids == generate(tiny_qwen, prompt, GREEDY, 5)
    assert all(0 <= i < 151665 for i in ids)
    sampled = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, repeat_penalty=1.1, seed=3)
    assert generate(tiny_qwen, prompt, sampled, 5) == generate(tiny_qwen, prompt, sampled, 5)


# --- load failures and device / dtype choice -----------------------------------------------


def test_missing_directory(tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(BackendError, match="no such directory") as err:
        TorchBackend(str(missing)).load()
    assert str(missing) in str(err.value)


def test_directory_without_a_model(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(BackendError, match="not a model directory") as err:
        TorchBackend(str(tmp_path)).load()
    assert str(tmp_path) in str(err.value)


def test_broken_model_files_give_one_line_with_the_reason(tmp_path: Path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(BackendError, match="cannot load model") as err:
        TorchBackend(str(tmp_path)).load()
    message = str(err.value)
    assert str(tmp_path) in message
    assert "\n" not in message
    assert "model_type" in message


def test_bad_quantization_lists_the_allowed_values():
    with pytest.raises(BackendError, match="'int3'") as err:
        TorchBackend("unused", quantization="int3")
    assert all(q in str(err.value) for q in ("'fp32'", "'fp16'", "'bf16'", "'int8'", "'int4'"))


def test_cuda_requested_but_unavailable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="cuda"):
        TorchBackend("unused", device="cuda")


def test_unknown_device():
    with pytest.raises(BackendError, match="'metal'"):
        pick_device("metal", cuda_available=True)


def test_device_and_weight_format_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pick_device("cuda", cuda_available=True) == cuda
    assert pick_device("cpu", cuda_available=False) == cpu
    assert pick_quantization(cpu, None, bf16=False) == "int8"
    assert pick_quantization(cuda, None, bf16=True) == "bf16"
    assert pick_quantization(cuda, None, bf16=False) == "fp16"
    assert pick_quantization(cuda, "fp32", bf16=True) == "fp32"
    assert pick_quantization(cpu, "fp16", bf16=False) == "fp16"
    with pytest.raises(BackendError, match="CPU only"):
        pick_quantization(cuda, "int8", bf16=True)


def test_methods_before_load_raise():
    backend = TorchBackend("unused")
    with pytest.raises(BackendError, match="not loaded"):
        backend.encode_text("hi")
    with pytest.raises(BackendError, match="not loaded"):
        backend.batcher(1)


@pytest.mark.real_model
def test_presence_and_frequency_penalties_change_greedy_output(stories):
    prompt = stories.encode_text("Once upon a time")
    greedy = generate(stories, prompt, GREEDY, 48)
    for fields in ({"presence_penalty": 1.5}, {"frequency_penalty": 1.0}):
        penalised = SamplingParams(temperature=0.0, repeat_penalty=1.0, **fields)
        assert generate(stories, prompt, penalised, 48) != greedy, fields
    # A negative penalty makes repeating more likely: never less repetitive than greedy.
    repetitive = SamplingParams(temperature=0.0, repeat_penalty=1.0, frequency_penalty=-2.0)
    tokens = generate(stories, prompt, repetitive, 48)
    assert len(set(tokens)) <= len(set(greedy))
