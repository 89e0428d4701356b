"""The next token of every sequence of a step at once, each with its own parameters.

All rows are processed as one (rows, vocab) tensor: repeat penalty, presence and
frequency penalties, temperature, min-p, top-k, top-p, and then a pick (min-p where
vLLM applies it: after the temperature, before top-k and top-p). Greedy rows take the
argmax. Sampled rows pick by the inverse of their candidates' cumulative probabilities
at uniform numbers from the sequence's own generator -- as many as its own logits
need, whatever the other rows, so a seeded request gives the same tokens alone or in
any batch. Candidates are ordered only where top-k needs it: top-p alone draws by
rejection instead of sorting the vocabulary (_draw_top_p). On Qwen's 151,936 tokens a
row with the OpenAI routes' defaults (neither) took 12.6 ms a step sorted and 0.24-0.3
ms now. /completions' top-p 0.95 looked among its top 1,024 before it sorted: rejection
took it from 0.80 to 0.37 ms a row on a peaked distribution and from 11.6 to 0.60 ms on
a flat one (a random model's, or a high temperature's); 8 rows 3.5 -> 2.0 and 47.9 -> 2.8
ms (interleaved A/B, 2 cores; `benchmarks/bench_sampler.py` gives the figures now).
The tokens and a per-row "finite" flag cross to the host together: one sync per step
(top-p alone adds one a round of draws, usually one).

A temperature below 1e-5 is greedy (as in vLLM): dividing by 1e-40 would overflow to
inf and NaN. A row whose logits are not finite fails its own request, not the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inferd.backends.base import OCCURRENCE_WINDOW, SamplingParams, is_greedy
from inferd.sequence import SequenceState

_ARGMAX_CHUNK = 128
# Draws a top-p row without top-k makes before it sorts (_draw_top_p).
REJECTION_ROUNDS = 16
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
        """Rows with top-p alone, without ordering the vocabulary (a sort of Qwen's 151,936
        logits takes ~11 ms a row): by rejection, as FlashInfer's sampling kernels do. Each
        row draws from what is left of its distribution. The token is in the nucleus when
        the tokens more likely than it hold less than top_p of all the mass (ties at the
        edge are all in); if not, every token at most as likely is out too, and the row
        draws again without them. Every round's tokens hold the whole nucleus, so the token
        accepted is drawn with its probability renormalized over the nucleus. The rounds
        depend on the row's own logits and generator only. A row still drawing after
        REJECTION_ROUNDS (a top_p of almost 0 over many tokens) sorts."""
        probs = torch.softmax(scaled, dim=-1)
        top_p = torch.tensor([s.params.top_p for s in seqs], device=self.device)
        tokens = torch.empty(len(seqs), dtype=torch.long, device=self.device)
        floor = torch.full((len(seqs), 1), -1.0, device=self.device)  # out: p <= floor
        pending = list(range(len(seqs)))
        for round_ in range(REJECTION_ROUNDS):
            rows = probs if len(pending) == len(seqs) else probs[pending]
            # nothing is out in the first round
            left = rows if round_ == 0 else rows.masked_fill(rows <= floor[pending], 0.0)
            drawn = _draw_weights(left, [seqs[i] for i in pending])
            chosen = rows.gather(1, drawn[:, None])
            above = torch.where(rows > chosen, rows, 0.0).sum(dim=-1)
            # the round's host sync; a NaN row (failed by the caller) is done
            inside = (~(above >= top_p[pending])).tolist()
            accepted = [j for j, ok in enumerate(inside) if ok]
            rejected = [j for j, ok in enumerate(inside) if not ok]
            tokens[[pending[j] for j in accepted]] = drawn[accepted]
            pending = [pending[j] for j in rejected]
            if not pending:
                return tokens
            floor[pending] = chosen[rejected]
        values, ids = torch.sort(probs[pending], dim=-1, descending=True)
        tokens[pending] = self._from_ranked(values, ids, [seqs[i] for i in pending])
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
    """Rows with neither top-k nor top-p: a draw over the whole vocabulary as it stands."""
    return _draw_weights(torch.softmax(scaled, dim=-1), seqs)


def _draw_weights(weights: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
    """A column per row of (rows, vocab) weights (probabilities, unnormalized; zeros
    never drawn), in vocabulary order, in two levels -- a block of CDF_BLOCK tokens by the
    blocks' masses, then a token in it -- instead of one float64 cumulative sum over all
    of it: 8 rows of 151,936 took 7.6 ms a step that way, 0.73 ms this
    (`benchmarks/bench_sampler.py`, 2 cores)."""
    rows, width = weights.shape
    blocks = -(-width // CDF_BLOCK)
    if blocks * CDF_BLOCK != width:  # Qwen's 151,936 is 1,187 blocks: no copy there
        weights = torch.nn.functional.pad(weights, (0, blocks * CDF_BLOCK - width))
    by_block = weights.view(rows, blocks, CDF_BLOCK)
    # a block's mass in float32 (128 terms), their running sum in float64
    block, rest = _locate(by_block.sum(dim=-1).double(), _uniforms(seqs))
    within = by_block[torch.arange(rows, device=weights.device), block]
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
