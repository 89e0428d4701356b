"""inferd/remote/context.py: fitting a history without the upstream's tokenizer."""

from __future__ import annotations

from transformers import AutoTokenizer

from inferd.backends.base import ChatMessage, ModelInfo
from inferd.remote.context import fit_history, token_bound


def test_the_bound_is_above_what_a_real_template_and_tokenizer_make(qwen_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_path)
    conversations = [
        [ChatMessage("user", "hi")],
        [ChatMessage("system", "Be brief."), ChatMessage("user", "What is Rust?")],
        [ChatMessage("user", "你好 世界 こんにちは 🦀🦀🦀"), ChatMessage("assistant", "ok")],
        [ChatMessage("user", "x" * 2000), ChatMessage("assistant", " ".join(["token"] * 300))],
    ]
    for messages in conversations:
        ids = tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
        )
        assert token_bound(messages) >= len(ids)


def _turn(n: int, size: int = 100) -> list[ChatMessage]:
    return [ChatMessage("user", f"q{n} " + "x" * size), ChatMessage("assistant", "a" * size)]


def test_a_history_that_fits_is_sent_whole():
    messages = [ChatMessage("system", "rules"), *_turn(1), ChatMessage("user", "now")]
    fitted, dropped = fit_history(messages, ModelInfo(4096, frozenset(), True), 100)
    assert (fitted, dropped) == (messages, 0)


def test_the_oldest_turns_go_first_never_the_system_prompt_or_the_new_message():
    messages = [ChatMessage("system", "rules"), *_turn(1), *_turn(2), *_turn(3)]
    messages.append(ChatMessage("user", "now"))
    info = ModelInfo(512, frozenset(), True)  # room for about two turns of ~230 bytes
    fitted, dropped = fit_history(messages, info, 64)
    assert fitted[0] == ChatMessage("system", "rules")
    assert fitted[-1] == ChatMessage("user", "now")
    assert dropped == 4
    assert fitted[1:-1] == _turn(3)
    assert token_bound(fitted) <= 512 - 64


def test_a_message_too_long_by_the_bound_is_still_sent_for_the_upstream_to_judge():
    messages = [*_turn(1), ChatMessage("user", "y" * 1000)]
    fitted, _ = fit_history(messages, ModelInfo(256, frozenset(), True), 16)
    assert fitted == [ChatMessage("user", "y" * 1000)]


def test_a_system_message_alone_is_sent_once():
    messages = [ChatMessage("system", "rules")]
    assert fit_history(messages, ModelInfo(4096, frozenset(), True), 100) == (messages, 0)
