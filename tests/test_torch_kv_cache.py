"""backends/torch_kv_cache.py: the cache's tensors, written and gathered by slot."""

from __future__ import annotations

import pytest
import torch

from inferd.backends.torch_kv_cache import KVCache

KV_HEADS, DIM, BLOCK = 2, 8, 4


def cache(dtype: torch.dtype) -> KVCache:
    return KVCache(2, KV_HEADS, DIM, 6, BLOCK, dtype=dtype, device=torch.device("cpu"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_written_tokens_come_back_at_their_slots_as_the_cache_rounds_them(dtype):
    torch.manual_seed(0)
    kv = cache(dtype)
    keys, values = torch.randn(KV_HEADS, 3, DIM), torch.randn(KV_HEADS, 3, DIM)
    slots = torch.tensor([9, 4, 17])  # blocks 2, 1 and 4: anywhere but the padding block
    kv.write(0, slots, torch.ones(KV_HEADS, 3, DIM), torch.ones(KV_HEADS, 3, DIM))
    kv.write(1, slots, keys, values)
    got_keys, got_values = kv.gather(1, torch.tensor([[4, 9], [17, 0]]))
    assert got_keys.shape == (KV_HEADS, 2, 2, DIM) and got_keys.dtype == dtype
    assert torch.equal(got_keys[:, 0, 0].float(), keys[:, 1].to(dtype).float())
    assert torch.equal(got_keys[:, 0, 1].float(), keys[:, 0].to(dtype).float())
    assert torch.equal(got_values[:, 1, 0].float(), values[:, 2].to(dtype).float())
    assert not got_values[:, 1, 1].any()  # slot 0: the padding block stays zero
    assert all(bool((t == 1).all()) for t in kv.gather(0, slots))  # its own layer only


def test_a_token_holds_two_bytes_a_value_in_bfloat16_and_four_in_float32():
    per_layer = 2 * KV_HEADS * DIM  # its key and its value, every key/value head
    assert KVCache.bytes_per_token(3, KV_HEADS, DIM, torch.bfloat16) == 3 * per_layer * 2
    assert KVCache.bytes_per_token(3, KV_HEADS, DIM, torch.float32) == 3 * per_layer * 4
