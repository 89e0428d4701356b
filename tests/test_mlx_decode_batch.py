"""backends/mlx_decode_batch.py: per-sequence caches as rows of mlx-lm's batch caches.

Rows join and leave without disturbing the others: what a row holds comes back out
unchanged, whatever the lengths and order of the rows around it.
"""

from __future__ import annotations

from typing import Any

from tests.mlx_support import filled, require_mlx
from tests.owner import Owner

require_mlx()


def held(cache: list[Any]) -> list[float]:
    keys, _ = cache[0].keys_and_values()
    return keys.reshape(-1).tolist()


def test_rows_come_back_out_as_they_went_in(owner: Owner) -> None:
    def run() -> dict[str, Any]:
        from inferd.backends.mlx_decode_batch import DecodeBatch

        batch = DecodeBatch()
        batch.join([1, 2], [filled(3, 0.0), filled(5, 10.0)])
        batch.join([3], [filled(2, 20.0)])  # shorter than the rows already there
        out = {"ids": list(batch.seq_ids), "3": held(batch.extract(3))}
        batch.remove([2])
        out["after"] = list(batch.seq_ids)
        out["1"] = held(batch.extract(1))
        out["3 after"] = held(batch.extract(3))
        out["sizes"] = batch.sizes()  # padding no row needs any more was dropped
        batch.remove([1, 3])
        out["empty"] = (len(batch), batch.sizes())
        return out

    out = owner(run)
    assert out["ids"] == [1, 2, 3]
    assert out["3"] == [20.0, 21.0]
    assert out["after"] == [1, 3]
    assert out["1"] == [0.0, 1.0, 2.0]
    assert out["3 after"] == [20.0, 21.0]
    assert out["sizes"] == [3, 3]
    assert out["empty"] == (0, [])


class Appending:
    """A stand-in model: appends one position (valued 99) per row to every layer and
    scores token `row + input id` highest."""

    def __call__(self, inputs, cache):
        import mlx.core as mx

        rows = inputs.shape[0]
        extra = mx.full((rows, 1, 1, 1), 99.0)
        for layer in cache:
            layer.update_and_fetch(extra, extra)
        picks = mx.arange(rows) + inputs[:, -1]
        return (mx.arange(8)[None, :] == picks[:, None]).astype(mx.float32)[:, None, :]


def test_a_forward_pass_appends_one_position_per_row_and_can_be_undone(owner: Owner) -> None:
    def run() -> tuple[list[int], list[int], list[float], bool, list[int], list[float]]:
        from inferd.backends.mlx_decode_batch import DecodeBatch

        batch = DecodeBatch()
        batch.join([1, 2], [filled(3, 0.0), filled(2, 10.0)])
        sizes = batch.sizes()
        logits = batch.forward(Appending(), [1, 4])
        picked = logits.argmax(axis=-1).tolist()
        grown, row = batch.sizes(), held(batch.extract(2))
        undone = batch.roll_back(sizes)
        return picked, grown, row, undone, batch.sizes(), held(batch.extract(2))

    picked, grown, row, undone, sizes, row_after = owner(run)
    assert picked == [1, 5]  # one logits row per sequence, in row order
    assert grown == [4, 4] and row == [10.0, 11.0, 99.0]
    assert undone and sizes == [3, 3] and row_after == [10.0, 11.0]
