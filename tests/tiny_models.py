"""Tiny randomly initialised decoders for tests of the torch engine's model code."""

from __future__ import annotations

import torch
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from inferd.backends.torch_attention import ATTENTION_NAME

TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 300,
}

# (model class, config class, config extras): Qwen2, and Qwen3 with its q/k norms
QWEN_FAMILIES = [
    (Qwen2ForCausalLM, Qwen2Config, {}),
    (Qwen3ForCausalLM, Qwen3Config, {"head_dim": 16}),
]


def tiny_model(
    kind: type[PreTrainedModel],
    config_class: type[PretrainedConfig],
    attention: str = ATTENTION_NAME,
    **extra: object,
) -> PreTrainedModel:
    """A seeded model of `kind` (TINY_SHAPE, changed by `extra`) in eval mode, on inferd's
    paged attention unless `attention` names another of transformers' implementations
    ("eager", ...)."""
    torch.manual_seed(0)
    model = kind(config_class(**{**TINY_SHAPE, **extra})).eval()
    model.set_attn_implementation(attention)
    return model
