"""Torch backend: a Hugging Face transformers causal LM on the CPU or a CUDA GPU.

TorchBackend loads the model and tokenizer, turns prompts into ids, and starts
generations (backends/torch_decoding.py: a KV cache plus a sampler per request). It is
a BatchingBackend: step_many() decodes several requests in one forward pass. The engine
does everything else (EOS, budgets, stop strings, detokenisation, cancellation).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
)

from inferd.backends.base import (
    BackendError,
    ChatMessage,
    Decoding,
    ModelInfo,
    SamplingParams,
)
from inferd.backends.chat_template import render_plain_chat
from inferd.backends.torch_decoding import DecodeBatch, TorchDecoding

DEVICES = ("cpu", "cuda")
QUANTIZATIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
# Tokenizers without a limit report a huge sentinel (int(1e30)) as model_max_length.
_MAX_SANE_CONTEXT = 10_000_000
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def pick_device(device: str, cuda_available: bool) -> torch.device:
    """The torch device for an inferd device name; fails when CUDA is asked for but absent."""
    if device not in DEVICES:
        raise BackendError(f"torch backend: unsupported device {device!r}; use one of {DEVICES}")
    if device == "cuda" and not cuda_available:
        raise BackendError(
            "torch backend: device 'cuda' requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}); use device 'cpu' or install a CUDA build of torch"
        )
    return torch.device(device)


def pick_dtype(device: torch.device, quantization: str | None, bf16_supported: bool) -> torch.dtype:
    """Weight dtype: the quantization override, else fp32 on CPU and bf16 (or fp16) on CUDA."""
    if quantization is not None:
        if quantization not in QUANTIZATIONS:
            allowed = ", ".join(repr(q) for q in [None, *QUANTIZATIONS])
            raise BackendError(
                f"torch backend: unsupported quantization {quantization!r}; allowed: {allowed}"
            )
        return QUANTIZATIONS[quantization]
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if bf16_supported else torch.float16


class TorchBackend:
    """A transformers causal LM and its tokenizer, loaded on one device."""

    def __init__(
        self,
        path: str,
        device: str = "cpu",
        quantization: str | None = None,
        context_length: int | None = None,
    ) -> None:
        self.path = path
        # Validate eagerly so a bad config fails before any weights are read.
        self.device = pick_device(device, torch.cuda.is_available())
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.dtype = pick_dtype(self.device, quantization, bf16)
        if context_length is not None and context_length < 1:
            raise BackendError(f"context_length must be positive, got {context_length}")
        self._context_length = context_length
        self._model: PreTrainedModel | None = None
        self._tokenizer: Any = None
        self._cache_arg = "cache"
        self._forward_kwargs: dict[str, Any] = {}
        self._batch: DecodeBatch | None = None  # the decodings step_many() last packed

    def load(self) -> ModelInfo:
        _check_local_path(self.path)
        try:
            # The model first: its config errors say more than the tokenizer's would.
            model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype)
            model.to(self.device).eval()
            tokenizer = AutoTokenizer.from_pretrained(self.path)
        except Exception as e:  # OSError, ValueError, KeyError, ...: whatever transformers raises
            raise BackendError(f"cannot load model {self.path!r}: {_one_line(e)}") from e
        self._model, self._tokenizer = model, tokenizer
        self._cache_arg, self._forward_kwargs = _forward_kwargs(model)
        return ModelInfo(
            context_length=self._context_length or _context_length(model, tokenizer, self.path),
            eos_token_ids=_eos_token_ids(model, tokenizer),
            has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        )

    def encode_text(self, text: str) -> list[int]:
        return list(self._loaded_tokenizer().encode(text))

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        tokenizer = self._loaded_tokenizer()
        if not getattr(tokenizer, "chat_template", None):
            return self.encode_text(render_plain_chat(messages))
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        try:
            # transformers 5 returns a BatchEncoding unless return_dict=False.
            ids = tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except Exception as e:  # jinja errors: templates raise on unsupported roles/orders
            raise BackendError(f"chat template of {self.path!r} failed: {_one_line(e)}") from e
        return _as_id_list(ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._loaded_tokenizer().decode(list(token_ids), skip_special_tokens=True)

    def start(self, prompt_ids: Sequence[int], params: SamplingParams) -> TorchDecoding:
        if self._model is None:
            raise BackendError(f"model {self.path!r} is not loaded; call load() first")
        if not prompt_ids:
            raise BackendError("cannot generate from an empty prompt")
        return TorchDecoding(self._model, prompt_ids, params, self._cache_arg, self._forward_kwargs)

    def step_many(self, decodings: Sequence[Decoding]) -> list[int]:
        """One token for each decoding, the decode steps of all of them in one forward pass.

        Prefills (first steps) still run one sequence at a time. The decoding sequences'
        caches are packed into one left-padded batch that stays packed while the same
        decodings keep coming back, so a steady batch copies no cache between steps; a
        changed set (one joined, finished or was cancelled) is unpacked and packed anew.
        """
        tokens: dict[int, int] = {}
        rows: list[int] = []
        for i, decoding in enumerate(decodings):
            if isinstance(decoding, TorchDecoding) and decoding.batchable:
                rows.append(i)
            else:
                tokens[i] = decoding.step()  # a prefill, or a cache that cannot be batched
        if len(rows) == 1:
            tokens[rows[0]] = decodings[rows[0]].step()
        elif rows:
            members = [decodings[i] for i in rows]
            if self._batch is None or self._batch.members != members:
                if self._batch is not None:
                    self._batch.dissolve()
                self._batch = DecodeBatch(
                    self._model, members, self._cache_arg, self._forward_kwargs
                )
            for i, token in zip(rows, self._batch.step(), strict=True):
                tokens[i] = token
        return [tokens[i] for i in range(len(decodings))]

    def _loaded_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise BackendError(f"model {self.path!r} is not loaded; call load() first")
        return self._tokenizer


def _forward_kwargs(model: PreTrainedModel) -> tuple[str, dict[str, Any]]:
    """The cache argument's name (renamed in transformers 5.x) and constant forward() args."""
    names = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in names else "past_key_values"
    kwargs: dict[str, Any] = {"use_cache": True}
    if "logits_to_keep" in names:
        # the prefill only needs the last position's logits, not prompt x vocab of them
        kwargs["logits_to_keep"] = 1
    return cache_arg, kwargs


def _check_local_path(path: str) -> None:
    """Fail clearly on local paths that cannot hold a model, before transformers guesses."""
    expanded = os.path.expanduser(path)
    looks_local = os.path.isabs(expanded) or path.startswith((".", "~")) or os.path.exists(path)
    if not looks_local:
        return  # a hub id such as "Qwen/Qwen2.5-0.5B-Instruct"
    if not os.path.isdir(expanded):
        raise BackendError(f"cannot load model {path!r}: no such directory")
    if not os.path.isfile(os.path.join(expanded, "config.json")):
        raise BackendError(
            f"cannot load model {path!r}: not a model directory (no config.json); "
            "point it at a Hugging Face model folder"
        )


def _context_length(model: PreTrainedModel, tokenizer: Any, path: str) -> int:
    config = model.config.get_text_config()
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _MAX_SANE_CONTEXT:
        return limit
    raise BackendError(f"cannot tell the context length of {path!r}; set context_length")


def _eos_token_ids(model: PreTrainedModel, tokenizer: Any) -> frozenset[int]:
    """Every id the model declares as end of sequence (generation config, config, tokenizer)."""
    sources = [
        getattr(model.generation_config, "eos_token_id", None),
        getattr(model.config.get_text_config(), "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ]
    ids: set[int] = set()
    for source in sources:
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(i for i in source if isinstance(i, int))
    return frozenset(ids)


def _as_id_list(ids: Any) -> list[int]:
    """A flat list of ints from what apply_chat_template returned (list, dict or tensor)."""
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # batched
        ids = ids[0]
    return [int(i) for i in ids]


def _one_line(error: BaseException) -> str:
    """An exception's message on one short line (its type name when it has none)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
