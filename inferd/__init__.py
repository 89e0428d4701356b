"""inferd: an LLM inference server."""
