"""The input embedding table in int8, for the int8 format: a scale per token's row.

A step reads one row of the table per token, so its dtype costs no speed; what it costs
is memory. Qwen2.5-0.5B's fp32 table (151,936 x 896) is 545 MB -- more than all its
int8 Linears together (494 MB, the tied output projection included, which int8 stores
as a copy of its own) -- and int8 rows take 136 MB. llama.cpp's q8_0 quantizes the
token embeddings too.

Each row keeps its own absmax scale, so a token's vector comes back within half a step
(|row| max / 254) of the float one, and a row's value never depends on the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from inferd.backends.torch_int8 import quantize_rows


class Int8Embedding(nn.Module):
    """nn.Embedding's lookup over int8 rows, each multiplied back by its own scale."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        rows, scale = quantize_rows(embedding.weight)
        self.num_embeddings, self.embedding_dim = rows.shape
        self.register_buffer("weight", rows)
        self.register_buffer("scale", scale[:, None])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # float32: the int8 format's activations (backends/torch_quant.py)
        rows = F.embedding(input_ids, self.weight).to(torch.float32)
        return rows.mul_(F.embedding(input_ids, self.scale))


def quantize_input_embeddings(model: PreTrainedModel) -> bool:
    """Replace the model's input embedding table by an Int8Embedding, if it is a plain
    nn.Embedding (not a subclass that scales or offsets its rows); whether it was."""
    embedding = model.get_input_embeddings()
    if type(embedding) is not nn.Embedding:
        return False
    model.set_input_embeddings(Int8Embedding(embedding))
    return True
