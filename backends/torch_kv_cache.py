"""The KV cache's tensors: every layer's keys and values, preallocated in blocks.

One tensor per layer for keys and one for values, shaped (kv_heads, slots, head_dim)
where slots = num_blocks * block_size: position p of a sequence lives in slot
`blocks[p // block_size] * block_size + p % block_size` of its block table (the
bookkeeping is inferd/kv_blocks.py). Sequences join and leave without moving anybody's
data, and a prefix shared by several sequences is stored once.

Block 0 is never handed out: it stays zero and pads the gathers of short rows (reading
it is harmless and it is masked out), so nothing uninitialised is ever read.

The cache may keep a narrower dtype than the activations (int8 models keep bf16 keys
and values beside float32 activations, backends/torch_quant.py): what is written is
rounded to it, and every reader -- decode rows and prompt chunks, a chunk's own new keys
included -- gathers those rounded values back, so a sequence's output does not depend
on which path read them.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

NULL_BLOCK = 0
NULL_SLOT = 0  # NULL_BLOCK's first slot, whatever the block size


class KVCache:
    def __init__(
        self,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.dtype = dtype
        slots = num_blocks * block_size
        shape = (kv_heads, slots, head_dim)
        # torch.empty: on a CPU the pages are only committed once a block is first used.
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        for tensor in (*self.keys, *self.values):
            tensor[:, :block_size].zero_()

    @classmethod
    def for_model(
        cls,
        config: PretrainedConfig,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> KVCache:
        """A cache shaped for a transformers model's (text) config: its layers, its
        key/value heads and their width."""
        config = config.get_text_config()
        heads = config.num_attention_heads
        return cls(
            num_layers=config.num_hidden_layers,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            num_blocks=num_blocks,
            block_size=block_size,
            dtype=dtype,
            device=device,
        )

    @staticmethod
    def bytes_per_token(num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * num_layers * kv_heads * head_dim * torch.finfo(dtype).bits // 8

    def write(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """Store new tokens' (kv_heads, tokens, head_dim) keys and values at `slots`."""
        write_slots(self.keys[layer], slots, keys)
        write_slots(self.values[layer], slots, values)

    def gather(self, layer: int, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values at `slots` (any shape), as (kv_heads, *slots.shape, head_dim)."""
        return gather_slots(self.keys[layer], slots), gather_slots(self.values[layer], slots)


# On one layer's (kv_heads, slots, head_dim) tensor, for KVCache and for compiled code
# that is handed the layers' tensors (backends/torch_compiled_decode.py).
def write_slots(layer_tensor: torch.Tensor, slots: torch.Tensor, new: torch.Tensor) -> None:
    layer_tensor.index_copy_(1, slots, new.to(layer_tensor.dtype))


def gather_slots(layer_tensor: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    gathered = layer_tensor.index_select(1, slots.reshape(-1))
    return gathered.view(layer_tensor.shape[0], *slots.shape, layer_tensor.shape[-1])
