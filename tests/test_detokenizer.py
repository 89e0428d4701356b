"""Tests for inferd/detokenizer.py with the real Qwen2.5 (byte-level BPE) and stories260K
(SentencePiece with byte fallback) tokenizers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from inferd.detokenizer import IncrementalDetokenizer

pytestmark = pytest.mark.real_model

TEXTS = [
    "Hello, world!",
    "Emoji: 🙂🎉 and a family 👨‍👩‍👧 and flags 🇫🇷🇯🇵.",
    "中文测试：你好，世界！日本語のテキスト。한국어",  # noqa: RUF001 (real CJK punctuation)
    "Accents: café, naïve, Ångström, Øresund, São Paulo, façade.",
    "  leading spaces,\tTabs\nnew lines\n\n  and   runs   of spaces ",
    "Mixed: 🙂中é🙂 x²+y²=z² — “quotes” … done",
    "Rare, split over byte tokens: 🦩 龘 𝄞 🪿",
]


@pytest.fixture(scope="module", params=["qwen", "stories"])
def tokenizer(request, qwen_tokenizer_path: Path, stories_path: Path):
    path = qwen_tokenizer_path if request.param == "qwen" else stories_path
    return AutoTokenizer.from_pretrained(path)


def decoder(tokenizer):
    def decode(ids: Sequence[int]) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=True)

    return decode


def stream(detok: IncrementalDetokenizer, ids: Sequence[int]) -> list[str]:
    deltas = [detok.push(i) for i in ids]
    deltas.append(detok.flush())
    return deltas


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_add_up_to_the_full_decode_and_never_hold_half_characters(tokenizer, text):
    decode = decoder(tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas = stream(IncrementalDetokenizer(decode), ids)
    assert "".join(deltas) == decode(ids)
    assert not any("\ufffd" in d for d in deltas)


@pytest.mark.parametrize("text", TEXTS)
def test_with_a_prompt_the_deltas_are_what_follows_the_prompt(tokenizer, text):
    decode = decoder(tokenizer)
    prompt_text = "Once upon a time"
    all_ids = tokenizer.encode(f"{prompt_text} {text}")
    n = len(tokenizer.encode(prompt_text))
    prompt, generated = all_ids[:n], all_ids[n:]
    deltas = stream(IncrementalDetokenizer(decode, prompt), generated)
    assert "".join(deltas) == decode(all_ids)[len(decode(prompt)) :]
    assert not any("\ufffd" in d for d in deltas)


def test_sentencepiece_keeps_the_space_before_the_first_generated_word(stories_path):
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    decode = decoder(tokenizer)
    prompt = tokenizer.encode("Once upon a time")
    generated = tokenizer.encode("there was", add_special_tokens=False)
    deltas = stream(IncrementalDetokenizer(decode, prompt), generated)
    assert "".join(deltas) == " there was"


def test_split_multibyte_characters_are_held_until_complete(stories_path):
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    decode = decoder(tokenizer)
    ids = tokenizer.encode("🙂", add_special_tokens=False)
    # stories260K has no emoji pieces: byte fallback splits it over several byte tokens.
    assert len(ids) >= 4
    detok = IncrementalDetokenizer(decode)
    deltas = [detok.push(i) for i in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1)
    assert deltas[-1].endswith("🙂")


def test_flush_releases_a_cut_character_as_the_full_decode_does(qwen_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_path)
    decode = decoder(tokenizer)
    ids = tokenizer.encode("ok 🦩", add_special_tokens=False)
    cut = ids[:-1]  # generation ended inside the flamingo's bytes
    assert decode(cut).endswith("\ufffd")
    deltas = stream(IncrementalDetokenizer(decode), cut)
    assert "".join(deltas) == decode(cut)


def test_special_tokens_are_skipped(qwen_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_path)
    decode = decoder(tokenizer)
    ids = tokenizer.encode("<|im_start|>assistant\nHi!<|im_end|>")
    assert "".join(stream(IncrementalDetokenizer(decode), ids)) == "assistant\nHi!"


def test_each_push_decodes_a_short_window_however_long_the_output(stories_path):
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    base = decoder(tokenizer)
    sizes: list[int] = []

    def decode(ids: Sequence[int]) -> str:
        sizes.append(len(ids))
        return base(ids)

    ids = tokenizer.encode("Lily saw a big red ball, 你好 🙂. " * 100, add_special_tokens=False)
    assert len(ids) > 1000
    deltas = stream(IncrementalDetokenizer(decode), ids)
    assert "".join(deltas) == base(ids)
    assert max(sizes) <= 12
