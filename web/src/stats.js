// The token counter. Exact figures come from the server: the chat stream ends with a
// `: usage {...}` comment (asked for with X-Include-Usage) that counts generated tokens
// and times decoding on the server, so network batching cannot skew the rate. Until it
// arrives -- while streaming, or when a stream is cut short -- the page shows the pieces
// of text received so far as an estimate ("~"), roughly one per token, with a rate only
// once they have spanned a second.

const MIN_SPAN_S = 1;

// {tokens, rate, ttft (ms), exact} of a Turn.
export function turnStats(turn) {
  if (turn.usage) {
    const { completion_tokens: tokens, decode_seconds: decode } = turn.usage;
    return {
      tokens,
      rate: tokens > 1 && decode > 0 ? (tokens - 1) / decode : null,
      ttft: turn.usage.first_token_seconds * 1000,
      exact: true,
    };
  }
  const span = (turn.lastAt - turn.firstAt) / 1000;
  return {
    tokens: turn.pieces,
    rate: turn.pieces > 1 && span >= MIN_SPAN_S ? (turn.pieces - 1) / span : null,
    ttft: turn.firstAt === null ? null : turn.firstAt - turn.startedAt,
    exact: false,
  };
}

export function tokensText(stats) {
  const count = stats?.tokens ?? 0;
  return `${stats && !stats.exact ? "~" : ""}${count} token${count === 1 ? "" : "s"}`;
}

export function rateText(stats) {
  return stats?.rate ? `${stats.rate.toFixed(1)} tok/s` : "– tok/s";
}

export function statsText(stats) {
  const parts = [tokensText(stats)];
  if (stats.rate) parts.push(rateText(stats));
  if (stats.ttft !== null) parts.push(`first token ${Math.round(stats.ttft)} ms`);
  return parts.join(" · ");
}
