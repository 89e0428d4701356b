"""The next token of every sequence of a step at once, each with its own parameters.

All rows are processed as one (rows, vocab) tensor: repeat penalty, presence and
frequency penalties, temperature, min-p, top-k, top-p, and then a pick (min-p where
vLLM applies it: after the temperature, before top-k and top-p). Greedy rows take the
argmax. Sampled rows pick by the inverse of their candidates' cumulative probabilities
at one uniform number from the sequence's own generator -- one number a step, whatever
the row's candidates or the other rows, so a seeded request gives the same tokens alone
or in any batch. Candidates are ordered only where top-k or top-p needs it, and top-p
alone looks for its nucleus among the first NUCLEUS_SEARCH before sorting the whole
vocabulary: on Qwen's 151,936 tokens, a row with the OpenAI routes' defaults (neither)
took 12.6 ms a step before and 0.24-0.3 ms now, /completions' top-p 0.95 12.7 -> 0.72 ms on
a peaked distribution (`benchmarks/bench_sampler.py`, 2 cores). The tokens and a per-row
"finite" flag cross to the host together: one sync per step (top-p alone adds one to
check its nucleus).

A temperature below 1e-5 is greedy (as in vLLM): dividing by 1e-40 would overflow to
inf and NaN. A row whose logits are not finite fails its own request, not the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inferd.backends.base import OCCURRENCE_WINDOW, SamplingParams, is_greedy
from inferd.sequence import SequenceState

_ARGMAX_CHUNK = 128
# Candidates a top-p row without top-k looks for its nucleus among before sorting all.
NUCLEUS_SEARCH = 1024
# Tokens to a block of the whole-vocabulary draw's first level (_draw_whole).
CDF_BLOCK = 128


def argmax_rows(values: torch.Tensor) -> torch.Tensor:
    """torch.argmax(values, dim=-1) of a (rows, n) tensor -- each row's first maximum (or
    first NaN) -- in vectorized passes: torch's CPU argmax is scalar code, 4.2 ms for 32
    rows of a 151,936-token vocabulary where this takes 0.5 ms (2 cores)."""
    rows, width = values.shape
    if width % _ARGMAX_CHUNK or values.device.type != "cpu":
        return torch.argmax(values, dim=-1)
    chunks = values.reshape(rows, -1, _ARGMAX_CHUNK)
    best = torch.argmax(chunks.amax(dim=-1), dim=-1)  # the first chunk holding the maximum
    within = torch.argmax(chunks[torch.arange(rows), best], dim=-1)
    return best * _ARGMAX_CHUNK + within


class Sampler:
    def __init__(self, device: torch.device, vocab_size: int) -> None:
        self.device = device
        self.vocab_size = vocab_size

    def new_generator(self, params: SamplingParams) -> torch.Generator | None:
        """A sequence's own random stream (None for greedy): seeded, or from the OS."""
        if is_greedy(params):
            return None
        generator = torch.Generator(device=self.device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        return generator

    def sample(self, logits: torch.Tensor, seqs: Sequence[SequenceState]) -> list[tuple[int, bool]]:
        """(token, finite) for each row of (rows, vocab) float32 logits, in order."""
        # one reduction instead of a full isfinite pass: any NaN or inf makes the sum so
        finite = torch.isfinite(logits.sum(dim=-1))
        logits = self._penalise(logits, seqs)
        logits = self._penalise_occurrences(logits, seqs)
        tokens = argmax_rows(logits)
        rows = [i for i, seq in enumerate(seqs) if not is_greedy(seq.params)]
        if rows:
            picked = self._draw(logits[rows], [seqs[i] for i in rows])
            tokens[rows] = picked
        both = torch.stack([tokens, finite.long()]).tolist()  # the step's one host sync
        return [(token, bool(ok)) for token, ok in zip(both[0], both[1], strict=True)]

    def _penalise(self, logits: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
        """transformers' repetition penalty: every token seen so far (prompt included)
        has its logit divided by the penalty (multiplied when negative)."""
        rows = [i for i, seq in enumerate(seqs) if seq.params.repeat_penalty != 1.0]
        if not rows:
            return logits
        longest = max(len(seqs[i].tokens) for i in rows)
        # pad with each row's first token: penalising a token twice is the same as once
        history = torch.tensor(
            [seqs[i].tokens + [seqs[i].tokens[0]] * (longest - len(seqs[i].tokens)) for i in rows]
        ).to(self.device)
        penalty = torch.tensor([seqs[i].params.repeat_penalty for i in rows], device=self.device)
        every = len(rows) == len(seqs)  # the usual case: no copies of the rows
        picked = logits if every else logits[rows]
        seen = picked.gather(1, history)
        seen = torch.where(seen < 0, seen * penalty[:, None], seen / penalty[:, None])
        if every:
            return picked.scatter(1, history, seen)
        logits = logits.clone()
        logits[rows] = picked.scatter(1, history, seen)
        return logits

    def _penalise_occurrences(
        self, logits: torch.Tensor, seqs: Sequence[SequenceState]
    ) -> torch.Tensor:
        """OpenAI's presence and frequency penalties, as mlx-lm applies them: over the last
        OCCURRENCE_WINDOW tokens (prompt included), each token seen there loses `presence`
        once and `frequency` once per occurrence from its logit."""
        rows = [
            i
            for i, seq in enumerate(seqs)
            if seq.params.presence_penalty or seq.params.frequency_penalty
        ]
        if not rows:
            return logits
        windows = [seqs[i].tokens[-OCCURRENCE_WINDOW:] for i in rows]
        longest = max(map(len, windows))
        # padding counts with weight 0, so any id will do
        ids = torch.tensor([w + [0] * (longest - len(w)) for w in windows]).to(self.device)
        weights = torch.tensor(
            [[1.0] * len(w) + [0.0] * (longest - len(w)) for w in windows], device=self.device
        )
        counts = torch.zeros(len(rows), logits.shape[-1], device=self.device)
        counts.scatter_add_(1, ids, weights)
        presence = torch.tensor([seqs[i].params.presence_penalty for i in rows], device=self.device)
        frequency = torch.tensor(
            [seqs[i].params.frequency_penalty for i in rows], device=self.device
        )
        penalty = frequency[:, None] * counts + presence[:, None] * (counts > 0)
        logits = logits.clone()
        logits[rows] = logits[rows] - penalty
        return logits

    def _draw(self, logits: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
        """Sampled token ids for rows that all sample (temperature, top-k, top-p), in
        three kinds: with top-k; with top-p alone; with neither (the whole vocabulary)."""
        temperature = torch.tensor([s.params.temperature for s in seqs], device=self.device)
        scaled = _drop_below_min_p(logits / temperature[:, None], seqs)
        tokens = torch.empty(len(seqs), dtype=torch.long, device=self.device)
        kinds: dict[str, list[int]] = {"top_k": [], "top_p": [], "whole": []}
        for row, seq in enumerate(seqs):
            params = seq.params
            kind = "top_k" if params.top_k > 0 else "top_p" if params.top_p < 1.0 else "whole"
            kinds[kind].append(row)
        draws = {"top_k": self._draw_top_k, "top_p": self._draw_top_p, "whole": _draw_whole}
        for kind, rows in kinds.items():
            if len(rows) == len(seqs):  # one kind, the usual case: no copy of its logits
                return draws[kind](scaled, seqs)
            if rows:
                tokens[rows] = draws[kind](scaled[rows], [seqs[i] for i in rows])
        return tokens

    def _draw_top_k(self, scaled: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
        """Rows with top-k: their top k in order, then top-p over those renormalized
        (transformers' order)."""
        counts = [min(s.params.top_k, scaled.shape[-1]) for s in seqs]
        values, ids = torch.topk(scaled, max(counts), dim=-1)
        columns = torch.arange(values.shape[-1], device=self.device)
        beyond_k = columns[None, :] >= torch.tensor(counts, device=self.device)[:, None]
        probs = torch.softmax(values.masked_fill(beyond_k, float("-inf")), dim=-1)
        return self._from_ranked(probs, ids, seqs)

    def _draw_top_p(self, scaled: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
        """Rows with top-p alone: the head of the whole vocabulary holding top_p of its
        mass. A sort of Qwen's 151,936 logits takes ~11 ms a row, its top 1,024 0.5 ms:
        the nucleus is looked for there first (a trained model's usually lies within),
        and only the rows whose nucleus is not there (a flat distribution) sort -- each
        row's candidates its own, whatever the other rows'."""
        probs = torch.softmax(scaled, dim=-1)
        values, ids = torch.topk(probs, min(NUCLEUS_SEARCH, probs.shape[-1]), dim=-1)
        short: list[int] = []
        if values.shape[-1] < probs.shape[-1]:
            top_p = torch.tensor([s.params.top_p for s in seqs], device=self.device)
            short = [i for i, flat in enumerate((values.sum(dim=-1) < top_p).tolist()) if flat]
        if not short:
            return self._from_ranked(values, ids, seqs)
        tokens = torch.empty(len(seqs), dtype=torch.long, device=self.device)
        flat = set(short)
        head = [i for i in range(len(seqs)) if i not in flat]
        if head:
            tokens[head] = self._from_ranked(values[head], ids[head], [seqs[i] for i in head])
        flat_values, flat_ids = torch.sort(probs[short], dim=-1, descending=True)
        tokens[short] = self._from_ranked(flat_values, flat_ids, [seqs[i] for i in short])
        return tokens

    def _from_ranked(
        self, probs: torch.Tensor, ids: torch.Tensor, seqs: Sequence[SequenceState]
    ) -> torch.Tensor:
        """Token ids drawn from candidates in descending order -- (rows, n) probabilities
        and the token ids they belong to -- within each row's top_p."""
        return ids.gather(1, _pick(self._nucleus(probs, seqs), seqs)[:, None])[:, 0]

    def _nucleus(self, probs: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
        """Probabilities in descending order with all but the smallest head whose mass
        reaches each row's top_p set to 0 (the first always stays)."""
        top_p = torch.tensor([s.params.top_p for s in seqs], device=self.device)
        before = torch.cumsum(probs, dim=-1) - probs
        return probs.masked_fill(before >= top_p[:, None], 0.0)


def _drop_below_min_p(scaled: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
    """Rows' scaled logits with every token less likely than min_p times the row's
    likeliest one at -inf: p / p_max < min_p where logit < max + log(min_p), so no
    softmax is needed. A row with min_p 0 keeps all (log 0 = -inf)."""
    min_p = [s.params.min_p for s in seqs]
    if not any(min_p):
        return scaled
    floor = torch.tensor(min_p, device=scaled.device).log()
    threshold = scaled.amax(dim=-1, keepdim=True) + floor[:, None]
    return scaled.masked_fill_(scaled < threshold, float("-inf"))  # scaled is our own copy


def _draw_whole(scaled: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
    """Rows with neither top-k nor top-p: a draw over the whole vocabulary as it stands,
    in two levels -- a block of CDF_BLOCK tokens by the blocks' masses, then a token in
    it -- instead of one float64 cumulative sum over all of it: 8 rows of 151,936 took
    7.6 ms a step that way, 0.73 ms this (`benchmarks/bench_sampler.py`, 2 cores)."""
    probs = torch.softmax(scaled, dim=-1)
    rows, width = probs.shape
    blocks = -(-width // CDF_BLOCK)
    if blocks * CDF_BLOCK != width:  # Qwen's 151,936 is 1,187 blocks: no copy there
        probs = torch.nn.functional.pad(probs, (0, blocks * CDF_BLOCK - width))
    by_block = probs.view(rows, blocks, CDF_BLOCK)
    # a block's mass in float32 (128 terms), their running sum in float64
    block, rest = _locate(by_block.sum(dim=-1).double(), _uniforms(seqs))
    within = by_block[torch.arange(rows, device=probs.device), block]
    token, _ = _locate(within.double(), rest, scaled_target=True)
    return (block * CDF_BLOCK + token).clamp_(max=width - 1)


def _pick(probs: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
    """A column per row of (rows, n) probabilities (unnormalized, zeros never picked), by
    the inverse of its cumulative sum at one uniform number from the row's own generator:
    one number a step, whatever its candidates or the other rows."""
    column, _ = _locate(probs.double(), _uniforms(seqs))
    return column


def _uniforms(seqs: Sequence[SequenceState]) -> torch.Tensor:
    """One uniform number in [0, 1) from each row's own generator (float64)."""
    return torch.stack(
        [
            torch.rand(
                (), generator=s.sampler_state, dtype=torch.float64, device=s.sampler_state.device
            )
            for s in seqs
        ]
    )


def _locate(
    weights: torch.Tensor, target: torch.Tensor, scaled_target: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of (rows, n) float64 weights, the column whose share of the cumulative
    sum holds `target` (a fraction of the row's total; with scaled_target, an amount of
    it), and how far into that column's weight the target lies. Zero weights are never
    picked: a target at or past the total (rounding; a row of NaNs, failed by the caller)
    takes the last column with any weight."""
    cdf = weights.cumsum(dim=-1)
    total = cdf[:, -1:].contiguous()
    amount = target.to(cdf.device)[:, None]
    if not scaled_target:
        amount = amount * total
    column = torch.searchsorted(cdf, amount, right=True)
    column = torch.minimum(column, torch.searchsorted(cdf, total))
    column = column.clamp_(max=weights.shape[-1] - 1)
    before = torch.where(column > 0, cdf.gather(1, (column - 1).clamp_(min=0)), 0.0)
    return column[:, 0], (amount - before)[:, 0]
