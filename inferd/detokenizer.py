"""Incremental detokenisation: turn a stream of token ids into a stream of text deltas.

Decoding one token at a time is wrong twice over: a multi-byte character split over
several byte tokens decodes to U+FFFD halves, and SentencePiece decoders drop the
leading space of whatever comes first in the decoded ids. Decoding everything so far on
each token is right but costs O(total) per token. Like vLLM and TGI, decode a short
window instead: the ids already emitted last time (the prefix, for context) plus the new
ids, and emit the part of the window's text that extends past the prefix's text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Prompt ids that seed the window, so the first generated token decodes in context.
_PROMPT_CONTEXT = 5
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Text deltas of generated ids whose concatenation is the text of all of them.

    With prompt ids, the deltas add up to decode(prompt + generated) minus
    decode(prompt), which is what a completion should append to its prompt (for
    SentencePiece that keeps the space before the first word). Without, they add up to
    decode(generated).
    """

    def __init__(
        self, decode: Callable[[Sequence[int]], str], prompt_ids: Sequence[int] = ()
    ) -> None:
        self._decode = decode
        tail = list(prompt_ids[-_PROMPT_CONTEXT:]) if len(prompt_ids) else []
        # The window: ids[:read] were emitted already (context only), ids[read:] are pending.
        self._ids: list[int] = tail
        self._read = len(tail)
        self._prefix_text = decode(tail) if tail else ""

    def push(self, token_id: int) -> str:
        """Add one generated id; return the new text it completes (possibly "")."""
        self._ids.append(token_id)
        text = self._decode(self._ids)
        # Hold back while the window ends in half a character, or adds no text yet.
        if text.endswith(_REPLACEMENT) or len(text) <= len(self._prefix_text):
            return ""
        return self._emit(text)

    def flush(self) -> str:
        """Release held-back text at the end of the stream (U+FFFD if a character was cut)."""
        if self._read == len(self._ids):
            return ""
        text = self._decode(self._ids)
        return self._emit(text) if len(text) > len(self._prefix_text) else ""

    def _emit(self, text: str) -> str:
        delta = text[len(self._prefix_text) :]
        # The pending ids become the next prefix; older ids are dropped so the window,
        # and the cost of every push, stays small however long the generation runs.
        del self._ids[: self._read]
        self._read = len(self._ids)
        self._prefix_text = self._decode(self._ids)
        return delta
