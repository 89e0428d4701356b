"""Torch backend: a Hugging Face transformers causal LM on the CPU or a CUDA GPU.

TorchBackend loads the model (in the weight format of backends/torch_quant.py) and the
tokenizer, turns prompts into ids, and hands the engine a Batcher
(backends/torch_batcher.py): continuous batching over a paged KV cache with chunked
prefill and prefix reuse. The engine does everything else (EOS, budgets, stop strings,
detokenisation, cancellation).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from inferd.backends import torch_attention
from inferd.backends.base import BackendError, ChatMessage, EngineOptions, ModelInfo
from inferd.backends.chat_template import render_plain_chat
from inferd.backends.torch_batcher import PREFILL_STAGES, TorchBatcher
from inferd.backends.torch_compiled_decode import AUTO_MIN_PARAMETERS
from inferd.backends.torch_kv_cache import KVCache
from inferd.backends.torch_malloc import keep_freed_memory
from inferd.backends.torch_quant import (
    DTYPES,
    check_quantization,
    default_quantization,
    kv_cache_dtype,
    quantize,
)
from inferd.backends.torch_runner import ModelRunner
from inferd.backends.torch_sampler import Sampler
from inferd.backends.torch_threads import CPU_COMPUTE, physical_cores, use_threads
from inferd.kv_blocks import BlockManager
from inferd.prefill_pacer import PrefillPacer
from inferd.scheduler import Scheduler

DEVICES = ("cpu", "cuda")
# A step with a long prompt's chunk takes at most this many times the decodes alone,
# unless configured. Beside 8 streams (Qwen2.5-0.5B, int8, 2 cores, in-process) a
# 2,000-token prompt in chunks computed in PREFILL_STAGES parts: at 2, the streams'
# inter-token p99 1.95x steady, first token after 7.9-8.1 s; at 2.25, 2.2x, 6.6 s; at
# 2.5, 2.0-2.7x, 5.8 s. Unstaged, at 2.5: 2.5x, 10.5 s (unpaced: 3.9-4.5x over HTTP).
DEFAULT_PREFILL_SLOWDOWN = 2.0
# Tokenizers without a limit report a huge sentinel (int(1e30)) as model_max_length.
_MAX_SANE_CONTEXT = 10_000_000
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
# from_pretrained is not thread-safe: it swaps process-wide state (the default device is
# "meta" while it builds the model), so two models loading at once break each other.
_LOADING = threading.Lock()


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


def pick_quantization(device: torch.device, quantization: str | None, bf16: bool) -> str:
    """The weight format: the configured one (checked against the device), else the default."""
    if quantization is None:
        return default_quantization(device, bf16)
    check_quantization(quantization, device)
    return quantization


class TorchBackend:
    """A transformers causal LM and its tokenizer, loaded on one device."""

    def __init__(
        self,
        path: str,
        device: str = "cpu",
        quantization: str | None = None,
        context_length: int | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        self.path = path
        # Validate eagerly so a bad config fails before any weights are read.
        self.device = pick_device(device, torch.cuda.is_available())
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.quantization = pick_quantization(self.device, quantization, bf16)
        self.dtype = DTYPES[self.quantization]
        if context_length is not None and context_length < 1:
            raise BackendError(f"context_length must be positive, got {context_length}")
        self.options = options or EngineOptions()
        self.threads = self.options.threads or physical_cores()
        self._context_length = context_length
        self._model: PreTrainedModel | None = None
        self._weight_count = 0  # the checkpoint's, whatever the format stores them as
        self._tokenizer: Any = None

    def load(self) -> ModelInfo:
        _check_local_path(self.path)
        try:
            # The model first: its config errors say more than the tokenizer's would.
            with _LOADING:
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype)
                tokenizer = AutoTokenizer.from_pretrained(self.path)
        except Exception as e:  # OSError, ValueError, KeyError, ...: whatever transformers raises
            raise BackendError(f"cannot load model {self.path!r}: {_one_line(e)}") from e
        _check_architecture(model, self.path)
        if self.device.type == "cpu":
            keep_freed_memory()
        model.set_attn_implementation(torch_attention.ATTENTION_NAME)
        # counted before quantizing: int8 and int4 keep their weights as buffers
        self._weight_count = model.num_parameters()
        model = quantize(model.to(self.device).eval(), self.quantization)
        self._model, self._tokenizer = model, tokenizer
        return ModelInfo(
            context_length=self._context_length or _context_length(model, tokenizer, self.path),
            eos_token_ids=_eos_token_ids(model, tokenizer),
            has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
            quantization=self.quantization,
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

    def batcher(self, max_running: int) -> TorchBatcher:
        """A batcher with its own KV cache (sized by the options) over the loaded model."""
        if self._model is None:
            raise BackendError(f"model {self.path!r} is not loaded; call load() first")
        options = self.options
        size = options.block_size
        num_blocks = max(1, -(-options.kv_cache_tokens // size))
        cache = KVCache.for_model(
            self._model.config,
            num_blocks=num_blocks + 1,  # block 0 is the cache's padding block
            block_size=size,
            dtype=kv_cache_dtype(self.quantization),
            device=self.device,
        )
        cached = options.prefix_cache_tokens
        blocks = BlockManager(
            num_blocks, size, num_blocks if cached is None else cached // size, first_block=1
        )
        sampler = Sampler(self.device, self._model.config.get_text_config().vocab_size)
        if self.device.type != "cpu":
            runner = ModelRunner(self._model, cache, self._compile_steps())
            return TorchBatcher(runner, sampler, self._scheduler(blocks, max_running, 1))
        # Compiled CPU kernels keep the thread count they were built with (and torch
        # recompiles at another): build them at this model's count, holding the CPU as
        # a step does -- so other CPU models pause while one compiles (torch_threads.py).
        with CPU_COMPUTE:
            use_threads(self.threads)
            runner = ModelRunner(self._model, cache, self._compile_steps())
        # a long prompt's chunk runs in stages where its pass runs apart from decode rows
        stages = PREFILL_STAGES if runner.compiled else 1
        scheduler = self._scheduler(blocks, max_running, stages)
        return TorchBatcher(runner, sampler, scheduler, CPU_COMPUTE, self.threads)

    def _scheduler(self, blocks: BlockManager, max_running: int, chunk_stages: int) -> Scheduler:
        options = self.options
        slowdown = options.prefill_slowdown or DEFAULT_PREFILL_SLOWDOWN
        return Scheduler(
            blocks,
            max(options.max_batch_tokens, max_running),
            options.max_prefill_tokens,
            PrefillPacer(slowdown, start_tokens=options.block_size),
            chunk_stages,
        )

    def _compile_steps(self) -> bool:
        """The `compile` option; by default CPU models of AUTO_MIN_PARAMETERS and more,
        where the steps' small operators cost most (compiling takes ~20-60 s at load)."""
        if self.options.compile is not None:
            return self.options.compile
        return self.device.type == "cpu" and self._weight_count >= AUTO_MIN_PARAMETERS

    def _loaded_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise BackendError(f"model {self.path!r} is not loaded; call load() first")
        return self._tokenizer


def _check_architecture(model: PreTrainedModel, path: str) -> None:
    """The paged engine needs transformers' attention interface and full attention only."""
    if not getattr(model, "_supports_attention_backend", False):
        raise BackendError(
            f"cannot serve {path!r}: its architecture ({type(model).__name__}) does not take "
            "a custom attention function in this transformers version"
        )
    layer_types = getattr(model.config.get_text_config(), "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        raise BackendError(
            f"cannot serve {path!r}: sliding-window or other non-full attention layers are "
            "not supported by the torch engine yet"
        )


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
