"""Remote engines: models that another server generates, over OpenAI's protocol.

A `[[models]]` entry with `backend = "openai"` is served by upstreams -- vLLM, TGI,
llama.cpp, Ollama, mlx-lm's server, another inferd -- at their OpenAI `/v1` URLs.
RemoteWorker has ModelWorker's public surface and produces the same Stream, so routes,
sessions, plugins and metrics cannot tell a remote model from a local one.

- upstreams.py: which upstream to ask next; which are down (health checks).
- protocol.py: OpenAI request bodies from inferd's messages and sampling parameters,
  and the upstream's chunks and errors read back.
- context.py: fitting a chat history into the context without a local tokenizer.
- relay.py: one generation, from the upstream's response into a Stream.
- worker.py: RemoteWorker.
"""
