"""Randomly initialised Qwen2 models with the real Qwen2.5 tokenizer, for benchmarks.

Decode speed does not depend on weight values, so a random model of a real shape
stands in for the checkpoint (no model hub needed). The full 151,936-token vocabulary
keeps the output projection as heavy as in the real models of this family.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import Qwen2Config, Qwen2ForCausalLM

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
QWEN25_05B = {"hidden": 896, "intermediate": 4864, "layers": 24, "heads": 14, "kv_heads": 2}
SMALL = {"hidden": 512, "intermediate": 2048, "layers": 8, "heads": 8, "kv_heads": 2}


def build_random_qwen(folder: Path, shape: dict[str, int], context: int = 32768) -> Path:
    """Save a random Qwen2 of `shape` (QWEN25_05B, SMALL, ...) plus the tokenizer in `folder`."""
    config = Qwen2Config(
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        vocab_size=151936,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        eos_token_id=151645,
        bos_token_id=151643,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    for file in (SHARED / "qwen2.5-tokenizer").iterdir():
        if file.suffix in {".json", ".txt"}:
            shutil.copy(file, folder / file.name)
    return folder


def cached_random_qwen(folder: Path, shape: dict[str, int], context: int = 32768) -> Path:
    """build_random_qwen into `folder` unless an earlier run finished building it there."""
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        build_random_qwen(folder, shape, context)
        done.touch()
    return folder


def weight_count(folder: Path) -> int:
    """Parameters stored in a model folder's safetensors files (tied weights stored once)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 - safe_open is not a dict
                total += math.prod(weights.get_slice(name).get_shape())
    return total
