"""The model registry: which configured model serves a request, on which device.

A request names a model (by id, name or configured path) and optionally a device; the
registry answers with the ModelWorker for that pair, creating it -- and so loading the
model -- on first use unless the model was preloaded at start-up. A remote model
(`backend = "openai"`) has one RemoteWorker whatever device is asked for: its upstreams
decide where it runs, and its device reads "remote".
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

from inferd.backends.base import Backend, EngineOptions
from inferd.backends.torch_malloc import keep_freed_memory
from inferd.config import ModelConfig
from inferd.engine import ModelWorker
from inferd.errors import ApiError, BadRequest, NotFound
from inferd.remote.worker import RemoteWorker

log = logging.getLogger("inferd")

BackendFactory = Callable[[ModelConfig, str], Backend]
Worker = ModelWorker | RemoteWorker
REMOTE = "remote"  # the device of a remote model's worker


def default_backend_factory(model: ModelConfig, device: str) -> Backend:
    """torch serves cpu and cuda; MLX serves metal (Metal on a Mac, its CPU backend elsewhere)."""
    options = EngineOptions(
        threads=model.threads,
        kv_cache_tokens=model.kv_cache_tokens,
        prefix_cache_tokens=model.prefix_cache_tokens,
        max_batch_tokens=model.max_batch_tokens,
        prefill_slowdown=model.prefill_slowdown,
        compile=model.compile,
    )
    if device == "metal":
        from inferd.backends.mlx_backend import MlxBackend

        return MlxBackend(model.path, model.quantization, model.context_length, options)
    from inferd.backends.torch_backend import TorchBackend

    return TorchBackend(model.path, device, model.quantization, model.context_length, options)


# The torch backend's default weight formats (backends/torch_quant.py); MLX serves the
# checkpoint's own unless told. A loaded model reports the one it really uses.
_DEFAULT_QUANTIZATION = {"cpu": "int8", "cuda": "bf16"}


def _context_from_config_file(path: str) -> int | None:
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) else None


@functools.cache
def detect_devices() -> tuple[str, ...]:
    """The devices this machine can serve, in order of preference for display."""
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    from inferd.backends.mlx_backend import mlx_available

    if mlx_available():
        devices.append("metal")
    return tuple(devices)


class ModelRegistry:
    def __init__(
        self,
        models: list[ModelConfig],
        *,
        backend_factory: BackendFactory = default_backend_factory,
        devices: tuple[str, ...] | None = None,
    ) -> None:
        self.models = models
        self._factory = backend_factory
        self._devices = devices
        self._workers: dict[tuple[str, str], Worker] = {}
        # Preloads that could not even start (e.g. device not on this machine), by model id.
        self.preload_errors: dict[str, str] = {}

    @property
    def devices(self) -> tuple[str, ...]:
        if self._devices is None:
            self._devices = detect_devices()
        return self._devices

    def find(self, name: str) -> ModelConfig:
        for model in self.models:
            if name in (model.id, model.name, model.path):
                return model
        if Path(name).exists():  # a local path as typed: "../models/x" or through a symlink
            resolved = str(Path(name).resolve())
            for model in self.models:
                path = model.path
                if (
                    path is not None
                    and Path(path).exists()
                    and str(Path(path).resolve()) == resolved
                ):
                    return model
        known = ", ".join(model.name for model in self.models) or "none configured"
        raise NotFound(
            f"model {name!r} not found; available models: {known}",
            param="model",
            code="model_not_found",
        )

    @staticmethod
    def placement(model: ModelConfig, device: str | None) -> str:
        """The device a request for `model` on `device` runs on (None: the model's own)."""
        return REMOTE if model.is_remote else device or model.device

    def worker(self, name: str, device: str | None = None) -> Worker:
        """The worker for a model on a device (the model's configured device by default)."""
        model = self.find(name)
        device = self.placement(model, device)
        if model.is_remote:
            key = (model.id, device)
            if key not in self._workers:
                self._workers[key] = RemoteWorker(f"{model.id}@{device}", model)
            return self._workers[key]
        if device not in self.devices:
            raise BadRequest(
                f"device {device!r} is not available on this server; "
                f"available devices: {', '.join(self.devices)}"
            )
        key = (model.id, device)
        if key not in self._workers:
            if device == "cpu":
                # before the owner thread's first allocation: its temporaries then live
                # in glibc's main arena, which keeps them between steps
                keep_freed_memory()
            self._workers[key] = ModelWorker(
                f"{model.id}@{device}",
                functools.partial(self._factory, model, device),
                model.max_concurrent,
                model.arrival_window(device),
            )
        return self._workers[key]

    def preload(self) -> None:
        """Start loading every model marked `preload` on its configured device."""
        for model in self.models:
            if model.preload:
                try:
                    self.worker(model.id, model.device).start()
                except ApiError as error:
                    log.error("cannot preload %s: %s", model.id, error.message)
                    self.preload_errors[model.id] = error.message

    def preload_states(self) -> dict[str, tuple[str, str | None]]:
        """State and error of every model configured to preload, by "id@device" label.

        A preload not started yet counts as "unloaded", so /readiness is never early.
        """
        states: dict[str, tuple[str, str | None]] = {}
        for model in self.models:
            if not model.preload:
                continue
            device = self.placement(model, None)
            label = f"{model.id}@{device}"
            worker = self._workers.get((model.id, device))
            if model.id in self.preload_errors:
                states[label] = ("failed", self.preload_errors[model.id])
            elif worker is None:
                states[label] = ("unloaded", None)
            else:
                states[label] = (worker.state, worker.error)
        return states

    def workers(self) -> list[Worker]:
        return list(self._workers.values())

    def loaded_model_ids(self) -> set[str]:
        return {key[0] for key, worker in self._workers.items() if worker.state == "ready"}

    def loaded_devices(self, model: ModelConfig) -> list[str]:
        return [
            device
            for (model_id, device), worker in self._workers.items()
            if model_id == model.id and worker.state == "ready"
        ]

    def quantization(self, model: ModelConfig) -> str | None:
        """The weight format in use: a loaded worker's, else configured, else the default
        (None for a remote model: its upstream chose it and does not say)."""
        if model.is_remote:
            return None
        for (model_id, device), worker in self._workers.items():
            if model_id == model.id and device == model.device and worker.info:
                return worker.info.quantization
        return model.quantization or _DEFAULT_QUANTIZATION.get(model.device)

    def context_length(self, model: ModelConfig) -> int | None:
        """Configured, else from a loaded worker, else from a local config.json."""
        if model.context_length:
            return model.context_length
        for (model_id, _), worker in self._workers.items():
            if model_id == model.id and worker.info:
                return worker.info.context_length
        return _context_from_config_file(model.path) if model.path else None
