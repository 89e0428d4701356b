"""The OpenAI-compatible API under /v1: models, completions and chat completions.

Any OpenAI client (the `openai` libraries, LangChain, Open WebUI, ...) talks to inferd
when its base URL points at `http://host:port/v1`; its API key is sent as the Bearer key
the auth plugin checks. routes.py registers the routes; schemas.py and responses.py are
the bodies; chunks.py the stream framing; errors.py OpenAI's error shape.
"""
