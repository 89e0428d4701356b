"""Typed configuration, loaded from TOML.

Each TOML table is a pydantic model that forbids unknown keys, so a typo such as
`[server] prot = 3000` fails at start-up with the key and the file named. Relative
paths (model directories, the session store) are resolved against the config file's
folder, so a config works wherever the server is started from; plugin tables get the
same rule through `ConfigPath`. Plugin sections are validated by the plugins themselves
(inferd/plugin_loader.py); the core only checks that every top-level table belongs to
somebody.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DeviceName = Literal["cpu", "cuda", "metal"]
CORE_SECTIONS = ("server", "sessions", "models", "plugins")


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the key."""


def resolve_path(base: Path, value: str | Path) -> Path:
    """`value` with `~` expanded; a relative path is taken relative to `base`."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


# The validation context key through which plugin tables learn the config file's folder.
CONFIG_DIR = "config_dir"


def _resolve_in_context(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get(CONFIG_DIR) or Path.cwd()
    return resolve_path(base, value)


# A path in a config table: relative paths resolve against the config file's folder (the
# working directory when there is no file), so a config works wherever inferd starts.
ConfigPath = Annotated[Path, AfterValidator(_resolve_in_context)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=0, le=65535)
    # Seconds between SSE comment keepalives while nothing else is written.
    keepalive_interval: float = Field(10.0, gt=0)
    # Sanic's RESPONSE_TIMEOUT: the longest a response may go without a write. Streams
    # send keepalives; a non-streamed completion must finish within it.
    response_timeout: float = Field(3600.0, gt=0)
    request_max_size: int = Field(1_000_000, ge=1024)
    # On SIGTERM/SIGINT: seconds generations in flight may take to finish before they are
    # cancelled (their partial answers stored) and the server exits.
    drain_timeout: float = Field(30.0, ge=0)
    # Slow clients: total seconds to receive a request's headers, and its whole body,
    # counted from its first byte (a byte trickled now and then does not reset them).
    header_timeout: float = Field(10.0, gt=0)
    body_timeout: float = Field(30.0, gt=0)
    # Open connections (HTTP and WebSocket); one more is answered 503 and closed.
    max_connections: int = Field(512, ge=1)
    # "text": human-readable lines; "json": one JSON object per line (for log shippers).
    log_format: Literal["text", "json"] = "text"
    # torch.compile's cache (inferd/compile_cache.py), kept across restarts unlike torch's
    # default under /tmp; None: ~/.cache/inferd/torch-compile. TORCHINDUCTOR_CACHE_DIR,
    # when set, wins.
    compile_cache: Path | None = None

    @model_validator(mode="after")
    def _keepalives_beat_the_timeout(self) -> ServerConfig:
        if self.keepalive_interval >= self.response_timeout:
            raise ValueError(
                f"keepalive_interval ({self.keepalive_interval}) must be shorter than "
                f"response_timeout ({self.response_timeout}), or idle streams are cut off"
            )
        if self.body_timeout < self.header_timeout:
            raise ValueError(
                f"body_timeout ({self.body_timeout}) counts from the request's first byte, "
                f"so it must not be shorter than header_timeout ({self.header_timeout})"
            )
        return self


class SessionsConfig(_Section):
    # diskcache directory (the default), or a Redis server shared by several replicas.
    path: Path = Path("data/sessions")
    url: str | None = Field(None, pattern=r"^(redis|rediss|unix)://")
    # Seconds without a new turn after which a session expires; None keeps sessions forever.
    ttl: float | None = Field(None, gt=0)
    # Messages kept per session; older turns are dropped (never the system prompt).
    max_messages: int = Field(500, ge=2)
    # Seconds a request waits for the store (locked or failing) before it gets a 503.
    timeout: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _path_or_url(self) -> SessionsConfig:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError("give `path` (diskcache) or `url` (Redis), not both")
        return self


# A model served in this process, or by a remote engine that speaks OpenAI's protocol.
BackendKind = Literal["local", "openai"]
# Keys only a remote (backend = "openai") model takes, and keys only a local one takes.
REMOTE_KEYS = ("url", "upstream_model", "api_key_env", "timeout", "sampling_extensions")
LOCAL_KEYS = (
    "path",
    "quantization",
    "threads",
    "kv_cache_tokens",
    "prefix_cache_tokens",
    "max_batch_tokens",
    "prefill_slowdown",
    "compile",
    "arrival_window_ms",
)
CPU_ARRIVAL_WINDOW = 0.005  # seconds; see ModelConfig.arrival_window


class ModelConfig(_Section):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    # "local": this process loads `path` (torch, or MLX on "metal"); "openai": a remote
    # engine (vLLM, TGI, llama.cpp, Ollama, mlx-lm, another inferd) serves it at `url`.
    backend: BackendKind = "local"
    path: str | None = Field(None, min_length=1)
    context_length: int | None = Field(None, ge=16)
    # torch: "int8" | "int4" (CPU only) | "fp32" | "fp16" | "bf16"; default int8 on a CPU,
    # bf16 on CUDA. MLX: "4bit" | "8bit" (default: the checkpoint's own weights).
    quantization: Literal["fp32", "fp16", "bf16", "int8", "int4", "4bit", "8bit"] | None = None
    # The device a request gets when it names none; also where `preload` loads it.
    device: DeviceName = "cpu"
    # Load at start-up (/readiness waits for it); false loads on the first request.
    preload: bool = True
    # Requests generated together; more wait in a FIFO queue. For a remote model:
    # requests in flight to the upstreams from this process.
    max_concurrent: int = Field(8, ge=1)
    # Requests allowed to wait (default 4 x max_concurrent); more are refused with a 503.
    max_queue: int | None = Field(None, ge=0)
    # Seconds a request may wait in the queue before it is refused with a 503.
    queue_timeout: float = Field(30.0, gt=0)
    # The engine, torch and MLX (see config.toml for what each one trades):
    threads: int | None = Field(None, ge=1)  # torch's CPU threads; default: the physical cores
    kv_cache_tokens: int = Field(65536, ge=64)  # KV cache size, all requests together
    prefix_cache_tokens: int | None = Field(None, ge=0)  # reusable prefixes kept; 0: off
    max_batch_tokens: int = Field(64, ge=16)  # tokens per step while requests decode
    # how many times a decode-only step a step may take with a long prompt's chunk in it;
    # default: torch 2.5, MLX 2
    prefill_slowdown: float | None = Field(None, ge=1.0)
    # torch: compile the forward passes at load; default: on a CPU, for models of 100M+ params
    compile: bool | None = None
    # Milliseconds an idle model waits for the next request after one arrives, so requests
    # sent together start in one step; default: 5 on a CPU, 0 elsewhere (arrival_window()).
    arrival_window_ms: float | None = Field(None, ge=0, le=1000)
    # -- backend = "openai" only (inferd/remote/) --
    # The upstreams' OpenAI base URLs ("http://host:8000/v1"); several are balanced, with
    # health checks, and a request is retried on another one until its first token.
    url: list[str] = []
    upstream_model: str | None = Field(None, min_length=1)  # the upstream's name; default: name
    api_key_env: str | None = Field(None, min_length=1)  # variable holding the upstream's key
    # Seconds to wait for the upstream: to connect, for the first token, between tokens.
    timeout: float = Field(60.0, gt=0)
    # Send top_k, repetition_penalty and min_p (vLLM, llama.cpp, mlx-lm and inferd take them;
    # turn off for upstreams that reject unknown fields, such as OpenAI's own API).
    sampling_extensions: bool = True

    @field_validator("url", mode="before")
    @classmethod
    def _one_url_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if len(set(urls)) != len(urls):
            raise ValueError("an upstream URL is listed twice")
        return [url.rstrip("/") for url in urls]

    @model_validator(mode="after")
    def _keys_fit_the_backend(self) -> ModelConfig:
        given = self.model_fields_set
        if self.backend == "openai":
            if not self.url:
                raise ValueError(f'model {self.id!r}: backend = "openai" needs `url`')
            wrong = [key for key in LOCAL_KEYS if key in given]
        else:
            if self.path is None:
                raise ValueError(f"model {self.id!r}: `path` is required")
            wrong = [key for key in REMOTE_KEYS if key in given]
        if wrong:
            raise ValueError(
                f"model {self.id!r}: {wrong[0]!r} does not apply to backend = {self.backend!r}"
            )
        return self

    @property
    def is_remote(self) -> bool:
        return self.backend == "openai"

    def arrival_window(self, device: str) -> float:
        """Seconds an idle worker on `device` gathers arrivals before its first step. On a
        CPU a prompt step takes tenths of a second: a request that starts one alone makes
        those sent with it wait for it (measured, 32 prompts sent at once: half the
        bursts started with one). Elsewhere steps take milliseconds, less than a window."""
        if self.arrival_window_ms is not None:
            return self.arrival_window_ms / 1000
        return CPU_ARRIVAL_WINDOW if device == "cpu" else 0.0

    @property
    def queue_limit(self) -> int:
        return 4 * self.max_concurrent if self.max_queue is None else self.max_queue


class PluginsConfig(_Section):
    # Built-in names or "package.module:Class", run in this order on every request.
    enabled: list[str] = ["cors", "metrics", "auth", "rate_limit"]


class Config(_Section):
    server: ServerConfig = ServerConfig()
    sessions: SessionsConfig = SessionsConfig()
    models: list[ModelConfig] = []
    plugins: PluginsConfig = PluginsConfig()
    # Tables that belong to plugins ([auth], [rate_limit], [metrics], third-party ones).
    plugin_sections: dict[str, dict[str, Any]] = {}
    source: Path | None = None

    @field_validator("models")
    @classmethod
    def _unique_model_ids(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for model in models:
            for key in {model.id, model.name}:
                if key in seen:
                    raise ValueError(f"model id or name {key!r} is used twice")
                seen.add(key)
        return models

    @property
    def folder(self) -> Path:
        """The folder relative paths resolve against: the config file's, else the cwd."""
        return self.source.parent if self.source else Path.cwd()

    def section(self, name: str) -> dict[str, Any]:
        """The raw table of a plugin's section ({} when absent)."""
        return self.plugin_sections.get(name, {})


def _format_validation_error(error: ValidationError, source: str) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"{key}: {item['msg']}")
    return f"{source}: " + "; ".join(problems)


def _resolve_model_path(base: Path, value: str) -> str:
    """A path that exists relative to the config file wins; anything else is a hub id."""
    candidate = resolve_path(base, value)
    if candidate.exists() or value.startswith((".", "/", "~")):
        return str(candidate)
    return value


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths resolve against `source`'s folder."""
    label = str(source) if source else "<config>"
    core = {key: value for key, value in data.items() if key in CORE_SECTIONS}
    plugin_sections = {key: value for key, value in data.items() if key not in CORE_SECTIONS}
    for key, value in plugin_sections.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{label}: unknown key {key!r}")
    try:
        config = Config.model_validate({**core, "plugin_sections": plugin_sections})
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, label)) from None
    base = source.parent if source else Path.cwd()
    models = [
        model.model_copy(update={"path": _resolve_model_path(base, model.path)})
        if model.path is not None
        else model
        for model in config.models
    ]
    sessions = config.sessions.model_copy(update={"path": resolve_path(base, config.sessions.path)})
    server = config.server
    if server.compile_cache is not None:
        server = server.model_copy(
            update={"compile_cache": resolve_path(base, server.compile_cache)}
        )
    return config.model_copy(
        update={"models": models, "sessions": sessions, "server": server, "source": source}
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    source = Path(path).expanduser().resolve()
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: invalid TOML: {error}") from None
    return parse_config(data, source)


def default_config_text() -> str:
    """The repo root's config.toml: from the source tree, else as installed package data."""
    source_tree = Path(__file__).resolve().parents[1] / "config.toml"
    if source_tree.is_file():  # a checkout or an editable install
        return source_tree.read_text(encoding="utf-8")
    return resources.files("inferd.defaults").joinpath("config.toml").read_text(encoding="utf-8")
