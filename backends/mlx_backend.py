"""The MLX backend: a model loaded with mlx-lm, on Metal (Apple Silicon) or mlx's CPU backend.

The same code runs on both: mlx picks its default device. mlx and mlx-lm are imported
lazily, so this module imports (and `mlx_available()` answers False) where they are
missing. MLX streams and random state are per thread, so load() and every generation
must run on the engine's one model-owner thread; nothing here starts a thread.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferd.backends.base import (
    GREEDY_BELOW,
    OCCURRENCE_WINDOW,
    BackendError,
    ChatMessage,
    ModelInfo,
    SamplingParams,
)
from inferd.backends.chat_template import render_plain_chat

if TYPE_CHECKING:
    import mlx.nn as nn
    from mlx_lm.sample_utils import LogitsProcessor, Sampler
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from inferd.backends.mlx_batch import MlxDecodeBatch, MlxDecoding

# Used when neither the caller nor config.json gives a context length.
DEFAULT_CONTEXT_LENGTH = 4096
QUANTIZATIONS = {"4bit": 4, "8bit": 8}
_QUANT_GROUP_SIZE = 64  # mlx-lm's default for affine quantization
# Tokens the repeat penalty looks back over: llama.cpp's and Ollama's repeat_last_n.
_REPEAT_WINDOW = 64


@functools.cache
def mlx_available() -> bool:
    """Whether mlx and mlx-lm import on this machine."""
    try:
        import mlx.core  # noqa: F401
        import mlx_lm  # noqa: F401
    except (ImportError, OSError):  # OSError: mlx installed but its native library won't load
        return False
    return True


class MlxBackend:
    """A Backend over mlx-lm; `quantization` is None, "4bit" or "8bit" (applied on load)."""

    def __init__(
        self, path: str, quantization: str | None = None, context_length: int | None = None
    ) -> None:
        if quantization is not None and quantization not in QUANTIZATIONS:
            allowed = ", ".join(["none", *QUANTIZATIONS])
            raise BackendError(f"unknown MLX quantization {quantization!r}; allowed: {allowed}")
        self.path = path
        self.quantization = quantization
        self.context_length = context_length
        self._model: nn.Module | None = None
        self._tokenizer: TokenizerWrapper | None = None
        self._vocab_size = 0
        self._batch: MlxDecodeBatch | None = None  # created by the first step_many()

    def load(self) -> ModelInfo:
        if not mlx_available():
            raise BackendError(
                "the MLX backend needs mlx-lm: pip install 'inferd[mlx]' (on Linux also 'mlx[cpu]')"
            )
        from mlx_lm import load
        from mlx_lm.utils import maybe_set_recommended_wired_limit

        model_dir = Path(self.path)
        # mlx_lm.load treats a path that does not exist as a Hugging Face repo id and
        # would try to download it; inferd only serves local files.
        if not (model_dir / "config.json").is_file():
            raise BackendError(
                f"no MLX model at {self.path}: expected a directory with config.json, "
                "*.safetensors weights and tokenizer files"
            )
        try:
            model, tokenizer, config = load(str(model_dir), return_config=True)
        except Exception as exc:
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise BackendError(
                f"could not load MLX model from {self.path}: {type(exc).__name__}: {detail}"
            ) from exc
        if self.quantization is not None:
            model = self._quantize(model, config)
        maybe_set_recommended_wired_limit()  # what mlx-lm's server does; a no-op on CPU
        self._model, self._tokenizer = model, tokenizer
        text_config = config.get("text_config", {})  # multimodal configs nest the LM's
        self._vocab_size = (
            config.get("vocab_size") or text_config.get("vocab_size") or len(tokenizer)
        )
        eos = set(tokenizer.eos_token_ids) | _ids(config.get("eos_token_id"))
        eos |= _ids(_read_json(model_dir / "generation_config.json").get("eos_token_id"))
        return ModelInfo(
            context_length=self.context_length
            or config.get("max_position_embeddings")
            or text_config.get("max_position_embeddings")
            or DEFAULT_CONTEXT_LENGTH,
            eos_token_ids=frozenset(eos),
            has_chat_template=bool(tokenizer.has_chat_template),
            quantization=self.quantization,
        )

    def encode_text(self, text: str) -> list[int]:
        return list(self._loaded_tokenizer().encode(text))

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        tokenizer = self._loaded_tokenizer()
        if not tokenizer.has_chat_template:
            return self.encode_text(render_plain_chat(messages))
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        # mlx-lm's wrapper passes return_dict=False, so this is a plain list of ids.
        return list(tokenizer.apply_chat_template(conversation, add_generation_prompt=True))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._loaded_tokenizer().decode(list(token_ids), skip_special_tokens=True)

    def start(self, prompt_ids: Sequence[int], params: SamplingParams) -> MlxDecoding:
        if self._model is None:
            raise BackendError("MLX model is not loaded; call load() first")
        if not prompt_ids:
            raise BackendError("cannot generate from an empty prompt")
        from inferd.backends.mlx_batch import MlxDecoding

        return MlxDecoding(
            self._model,
            prompt_ids,
            self._sampler(params),
            _logits_processors(params),
            params.seed,
            history_window=max(_REPEAT_WINDOW, OCCURRENCE_WINDOW),
        )

    def step_many(self, decodings: Sequence[MlxDecoding]) -> list[int]:
        """The next id of each decoding; the batchable ones share one forward pass.

        One batch lives across turns (see MlxDecodeBatch), so the engine's usual turn --
        the same requests as last time, give or take a join or a close -- only merges in
        or filters out the rows that changed. Decodings whose caches have no batched
        form in mlx-lm step alone.
        """
        if self._model is None:
            raise BackendError("MLX model is not loaded; call load() first")
        from inferd.backends.mlx_batch import MlxDecodeBatch

        together = [d for d in decodings if d.batchable]
        if self._batch is None:
            self._batch = MlxDecodeBatch(self._model)
        if len(together) < 2:  # a batch of one is a plain step with extra bookkeeping
            together = []
            self._batch.release(self._batch.members)
        ids = self._batch.step(together) if together else []
        tokens = dict(zip(map(id, together), ids, strict=True))
        return [tokens[id(d)] if id(d) in tokens else d.step() for d in decodings]

    def close(self) -> None:
        """Drop the model and this thread's MLX streams: the owner thread's last MLX call.

        Not in the Backend protocol. mlx 0.32 wants `clear_streams()` before a thread that
        used MLX ends: without it the process can abort at exit ("terminate called without
        an active exception"). Close every Decoding first; this thread cannot run MLX after.
        """
        if self._batch is not None:
            self._batch.release(self._batch.members)
            self._batch = None
        self._model = self._tokenizer = None
        if mlx_available():
            import mlx.core as mx

            mx.clear_streams()
            mx.clear_cache()

    def _sampler(self, params: SamplingParams) -> Sampler:
        from mlx_lm.sample_utils import make_sampler

        # mlx-lm rejects top_k >= vocab size; keeping every token is no top-k at all.
        top_k = params.top_k if 0 < params.top_k < self._vocab_size else 0
        # A tiny temperature would overflow mlx-lm's logits * (1 / temp): it is greedy.
        temp = 0.0 if params.temperature < GREEDY_BELOW else params.temperature
        return make_sampler(temp=temp, top_p=params.top_p, top_k=top_k)

    def _quantize(self, model: nn.Module, config: dict[str, Any]) -> nn.Module:
        import mlx.core as mx
        from mlx_lm.utils import quantize_model

        if "quantization" in config:
            raise BackendError(
                f"MLX model at {self.path} is already quantized; leave quantization unset"
            )
        # quantize_model wraps mlx.nn.quantize, skipping layers whose width the group
        # size does not divide and any the model marks as not to be quantized.
        bits = QUANTIZATIONS[self.quantization or ""]
        model, _ = quantize_model(model, config, group_size=_QUANT_GROUP_SIZE, bits=bits)
        mx.eval(model.parameters())
        return model

    def _loaded_tokenizer(self) -> TokenizerWrapper:
        if self._tokenizer is None:
            raise BackendError("MLX model is not loaded; call load() first")
        return self._tokenizer


def _logits_processors(params: SamplingParams) -> list[LogitsProcessor]:
    """mlx-lm's repetition, presence and frequency penalties; [] when all are off."""
    if (params.repeat_penalty, params.presence_penalty, params.frequency_penalty) == (1, 0, 0):
        return []  # also spares the decoding from tracking the token history
    from mlx_lm.sample_utils import make_logits_processors

    return make_logits_processors(
        repetition_penalty=None if params.repeat_penalty == 1.0 else params.repeat_penalty,
        repetition_context_size=_REPEAT_WINDOW,
        presence_penalty=params.presence_penalty,
        presence_context_size=OCCURRENCE_WINDOW,
        frequency_penalty=params.frequency_penalty,
        frequency_context_size=OCCURRENCE_WINDOW,
    )


def _ids(value: int | list[int] | None) -> set[int]:
    """Token ids from a config field that may hold one id, a list of them, or nothing."""
    if value is None:
        return set()
    return {value} if isinstance(value, int) else set(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not read {path}: {exc}") from exc
