"""Prompts of an exact token length, made of whole-word tokens of the model's own vocabulary.

Every prompt of a batch starts with a different token, so no two share a prefix: a
prefix cache cannot make the concurrency figures look better than the traffic they model.
"""

from __future__ import annotations

import random
import re
from typing import Any

# A vocabulary entry that is a space (GPT-2 byte-level "Ġ" or SentencePiece "▁") plus a
# lowercase word: such tokens decode and re-encode to themselves.
_WORD_TOKEN = re.compile(r"^[Ġ▁][a-z]{3,}$")


class PromptMaker:
    """Random word prompts whose length is counted with the server's own tokenizer.

    Prompts depend only on their arguments, so every server of a run (and every run) is
    asked the same things: greedy output, and so its length, is then comparable too.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.words = sorted(i for token, i in vocab.items() if _WORD_TOKEN.match(token))
        if len(self.words) < 16:
            raise ValueError(f"only {len(self.words)} word tokens in this vocabulary")

    def count(self, text: str) -> int:
        """Tokens of `text` as inferd's /completions encodes it (special tokens included)."""
        return len(self.tokenizer.encode(text))

    def make(self, length: int, seed: str = "", first: int | None = None) -> str:
        """A prompt of `length` tokens (or as close as the tokenizer allows, ±1)."""
        rng = random.Random(f"{seed}/{length}/{first}")
        ids = [first if first is not None else rng.choice(self.words)]
        ids += rng.choices(self.words, k=max(0, length - 1))
        for _ in range(8):  # special tokens and merges make the first guess a little off
            text = self.tokenizer.decode(ids)
            surplus = self.count(text) - length
            if surplus == 0 or len(ids) <= 1:
                break
            ids = ids[:-surplus] if surplus > 0 else ids + rng.choices(self.words, k=-surplus)
        return text

    def batch(self, count: int, length: int, seed: str = "") -> list[str]:
        """`count` prompts of `length` tokens, each starting with a different token."""
        firsts = random.Random(f"{seed}/{count}/{length}").sample(
            self.words, k=min(count, len(self.words))
        )
        return [self.make(length, seed, firsts[i % len(firsts)]) for i in range(count)]
