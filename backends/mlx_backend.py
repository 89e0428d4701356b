"""The MLX backend: a model loaded with mlx-lm, on Metal (Apple Silicon) or mlx's CPU backend.

MlxBackend loads the model (optionally quantized to 4 or 8 bits) and the tokenizer, turns
prompts into ids, and hands the engine a Batcher (mlx_batcher.py): continuous batching
over mlx-lm's batch caches, chunked prefill and prefix reuse through mlx-lm's prompt
cache. The same code runs on Metal and on the CPU: mlx picks its default device. mlx and
mlx-lm are imported lazily, so this module imports (and `mlx_available()` answers False)
where they are missing. MLX streams and random state are per thread, so load() and
every generation must run on the engine's one model-owner thread; nothing here starts
a thread.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferd.backends.base import BackendError, ChatMessage, EngineOptions, ModelInfo
from inferd.backends.chat_template import render_plain_chat

if TYPE_CHECKING:
    import mlx.nn as nn
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from inferd.backends.mlx_batcher import MlxBatcher

# Used when neither the caller nor config.json gives a context length.
DEFAULT_CONTEXT_LENGTH = 4096
QUANTIZATIONS = {"4bit": 4, "8bit": 8}
_QUANT_GROUP_SIZE = 64  # mlx-lm's default for affine quantization

log = logging.getLogger("inferd.mlx")


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
        self,
        path: str,
        quantization: str | None = None,
        context_length: int | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        if quantization is not None and quantization not in QUANTIZATIONS:
            allowed = ", ".join(["none", *QUANTIZATIONS])
            raise BackendError(f"unknown MLX quantization {quantization!r}; allowed: {allowed}")
        self.path = path
        self.quantization = quantization
        self.context_length = context_length
        self.options = options or EngineOptions()
        self._model: nn.Module | None = None
        self._tokenizer: TokenizerWrapper | None = None
        self._vocab_size = 0
        self._batcher: MlxBatcher | None = None

    def load(self) -> ModelInfo:
        if not mlx_available():
            raise BackendError(
                "the MLX backend needs mlx-lm: pip install 'inferd[mlx]' (on Linux also 'mlx[cpu]')"
            )
        from mlx_lm import load
        from mlx_lm.utils import maybe_set_recommended_wired_limit

        from inferd.backends import mlx_compiled_ops

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
        if mlx_compiled_ops.uses_compiled_ops():  # no fused norm and RoPE on the CPU backend
            swapped = mlx_compiled_ops.compile_ops(model)
            log.info("MLX on CPU: %d norm and RoPE layers of %s compiled", swapped, self.path)
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

    def batcher(self, max_running: int) -> MlxBatcher:
        """The batcher the engine drives (one per backend; max_running is the engine's)."""
        if self._model is None:
            raise BackendError("MLX model is not loaded; call load() first")
        from mlx_lm.models.cache import make_prompt_cache

        from inferd.backends.mlx_batcher import MlxBatcher

        # mlx-lm batches the cache types that can `merge` (the KV caches of most models).
        cache = make_prompt_cache(self._model)
        unbatched = {type(layer).__name__ for layer in cache if not hasattr(layer, "merge")}
        if unbatched:
            raise BackendError(
                f"cannot serve the MLX model at {self.path}: its KV cache "
                f"({', '.join(sorted(unbatched))}) has no batched form in mlx-lm yet"
            )
        self._batcher = MlxBatcher(self._model, self._vocab_size, self.options)
        return self._batcher

    @property
    def prefix_hit_tokens(self) -> int:
        """Prompt tokens taken from the prompt cache instead of computed, so far."""
        return self._batcher.prompt_cache.hit_tokens if self._batcher is not None else 0

    def close(self) -> None:
        """Drop the model and this thread's MLX streams: the owner thread's last MLX call.

        Not in the Backend protocol. mlx 0.32 wants `clear_streams()` before a thread that
        used MLX ends: without it the process can abort at exit ("terminate called without
        an active exception"). Finish every sequence first; this thread cannot run MLX after.
        """
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        self._model = self._tokenizer = None
        if mlx_available():
            import mlx.core as mx

            mx.clear_streams()
            mx.clear_cache()

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
