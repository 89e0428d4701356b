"""backends/torch_int8_embedding.py: the input embedding table in int8 rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from inferd.backends.torch_int8_embedding import Int8Embedding, quantize_input_embeddings
from tests.tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_each_row_comes_back_within_half_a_step_of_its_own_scale():
    torch.manual_seed(0)
    table = nn.Embedding(50, 16)
    with torch.no_grad():
        table.weight[7] *= 1000  # one loud row must not coarsen the others
    int8 = Int8Embedding(table)
    ids = torch.tensor([[3, 7, 3, 49]])
    got = int8(ids)
    expected = table(ids)
    assert got.shape == expected.shape and got.dtype == torch.float32
    half_step = expected.abs().amax(dim=-1, keepdim=True) / 254
    assert torch.all((got - expected).abs() <= half_step * 1.0001)
    assert int8.weight.dtype == torch.int8 and int8.weight.element_size() == 1
    assert (int8.num_embeddings, int8.embedding_dim) == (50, 16)


def test_a_plain_table_is_replaced_and_the_model_still_reads_it():
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config, attention="eager")
    ids = torch.tensor([[5, 9, 2, 11]])
    with torch.inference_mode():
        before = model(ids).logits
    assert quantize_input_embeddings(model)
    assert isinstance(model.get_input_embeddings(), Int8Embedding)
    with torch.inference_mode():
        after = model(ids).logits
    assert (after - before).norm() / before.norm() < 0.02  # a wrong row would be ~1


def test_a_table_of_its_own_kind_is_left_alone():
    class ScaledEmbedding(nn.Embedding):  # as Gemma's, which multiplies its rows
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return super().forward(input_ids) * 2

    model = tiny_model(Qwen2ForCausalLM, Qwen2Config, attention="eager")
    scaled = ScaledEmbedding(*model.get_input_embeddings().weight.shape)
    model.set_input_embeddings(scaled)
    assert not quantize_input_embeddings(model)
    assert model.get_input_embeddings() is scaled
