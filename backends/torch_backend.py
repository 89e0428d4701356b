"""Torch backend: a Hugging Face transformers causal LM on the CPU or a CUDA GPU.

TorchBackend loads the model and tokenizer and turns prompts into ids; TorchDecoding is
one generation, a KV cache plus a sampler, that yields one token id per step(). The
engine does everything else (EOS, budgets, stop strings, detokenisation, cancellation).
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
    DynamicCache,
    PreTrainedModel,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from inferd.backends.base import BackendError, ChatMessage, ModelInfo, SamplingParams
from inferd.backends.chat_template import render_plain_chat

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

    def _loaded_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise BackendError(f"model {self.path!r} is not loaded; call load() first")
        return self._tokenizer


class TorchDecoding:
    """One generation: its KV cache, the ids the penalty needs, and its sampler."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        cache_arg: str = "cache",
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """cache_arg names forward()'s cache argument; forward_kwargs are its other constants."""
        self._model = model
        self._prompt = list(prompt_ids)
        self._capacity = len(self._prompt) + max(params.max_tokens, 1)
        self._cache: DynamicCache | None = DynamicCache(config=model.config)
        self._kwargs = {**(forward_kwargs or {}), cache_arg: self._cache}
        self._input: torch.Tensor | None = None  # ids of the next forward
        self._history: torch.Tensor | None = None  # prompt + generated, for the penalty
        self._length = 0
        self._penalty, self._warpers = _make_processors(params)
        self._generator: torch.Generator | None = None
        if self._warpers:
            self._generator = torch.Generator(device=model.device)
            if params.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(params.seed)

    def step(self) -> int:
        if self._cache is None:
            raise BackendError("this generation is closed")
        # inference_mode is thread-local, so it is entered here on the caller's thread.
        with torch.inference_mode():
            if self._input is None:
                self._prefill_inputs()
            # forward only the new ids; the cache holds the keys/values of all before them
            out = self._model(input_ids=self._input, **self._kwargs)
            # logits of the last position, in fp32 like generate() for identical argmax
            scores = out.logits[:, -1, :].float()
            del out
            if self._penalty is not None:
                # make tokens already in the prompt or the output less likely
                scores = self._penalty(self._history[:, : self._length], scores)
            if not self._warpers:
                # temperature 0: greedy
                token = torch.argmax(scores, dim=-1)
            else:
                # scale by temperature, keep top-k, keep top-p, sample from the rest
                for warp in self._warpers:
                    scores = warp(None, scores)
                probs = torch.softmax(scores, dim=-1)
                token = torch.multinomial(probs, 1, generator=self._generator).squeeze(1)
            # the sampled token is the only input of the next step
            self._input = token.view(1, 1)
            if self._history is not None:
                self._append(token)
            return int(token.item())

    def close(self) -> None:
        self._cache = None
        self._kwargs.clear()
        self._input = self._history = None

    def _prefill_inputs(self) -> None:
        """First step: the whole prompt goes in; the penalty's history starts as the prompt."""
        device = self._model.device
        self._input = torch.tensor([self._prompt], dtype=torch.long, device=device)
        if self._penalty is not None:
            # Preallocated so each step writes one id instead of concatenating the history.
            self._history = torch.empty((1, self._capacity), dtype=torch.long, device=device)
            self._history[:, : len(self._prompt)] = self._input
            self._length = len(self._prompt)

    def _append(self, token: torch.Tensor) -> None:
        if self._length == self._history.shape[1]:  # the engine let it run past max_tokens
            self._history = torch.cat([self._history, torch.empty_like(self._history)], dim=1)
        self._history[:, self._length] = token
        self._length += 1


def _make_processors(
    params: SamplingParams,
) -> tuple[RepetitionPenaltyLogitsProcessor | None, list[Any]]:
    """The repetition penalty (None when 1.0) and the sampling warpers ([] for greedy)."""
    _check_params(params)
    penalty = None
    if params.repeat_penalty != 1.0:
        penalty = RepetitionPenaltyLogitsProcessor(params.repeat_penalty)
    if params.temperature == 0:
        return penalty, []
    warpers: list[Any] = [TemperatureLogitsWarper(params.temperature)]
    if params.top_k > 0:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(params.top_p))
    return penalty, warpers


def _check_params(params: SamplingParams) -> None:
    problems = []
    if params.temperature < 0:
        problems.append(f"temperature must be >= 0, got {params.temperature}")
    if params.top_k < 0:
        problems.append(f"top_k must be >= 0 (0 disables it), got {params.top_k}")
    if not 0 < params.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {params.top_p}")
    if params.repeat_penalty <= 0:
        problems.append(
            f"repeat_penalty must be > 0 (1.0 disables it), got {params.repeat_penalty}"
        )
    if problems:
        raise BackendError("invalid sampling parameters: " + "; ".join(problems))


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
