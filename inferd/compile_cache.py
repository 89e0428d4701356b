"""Where torch.compile keeps what it compiled, so that a restart does not compile again.

inductor caches the graphs it compiles in TORCHINDUCTOR_CACHE_DIR, by default a folder
under /tmp -- which a reboot or a new container empties, and then a CPU model's first
load compiles its steps again: ready after ~2 min for a 0.5B model on 2 cores, against
~19 s from the cache. `inferd serve` points it at `[server] compile_cache` instead (by default in
the user's cache folder, as Hugging Face keeps its downloads), unless the environment
already names a folder: a deployment that set TORCHINDUCTOR_CACHE_DIR keeps it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

log = logging.getLogger("inferd.compile_cache")

ENVIRONMENT_KEY = "TORCHINDUCTOR_CACHE_DIR"


def default_compile_cache() -> Path | None:
    """~/.cache/inferd/torch-compile, or None for a user without a home folder (a
    container run under an arbitrary uid)."""
    try:
        return Path.home() / ".cache" / "inferd" / "torch-compile"
    except (RuntimeError, KeyError):
        return None


def use_compile_cache(
    folder: Path | None, environ: MutableMapping[str, str] = os.environ
) -> Path | None:
    """Make `folder` (default_compile_cache() if None; created if need be) this process's
    torch.compile cache unless the environment names one already. Returns the folder in
    use; None where there is none to make and torch keeps its default. Call it before
    anything compiles (inductor reads the variable when it first needs its cache)."""
    if environ.get(ENVIRONMENT_KEY):
        chosen = Path(environ[ENVIRONMENT_KEY])
        log.info("torch.compile cache: %s (from %s)", chosen, ENVIRONMENT_KEY)
        return chosen
    folder = folder or default_compile_cache()
    if folder is None:
        log.warning("torch.compile cache: no home folder; torch's default")
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # an unwritable home: torch's own folder is better than none
        log.warning("torch.compile cache: cannot use %s (%s); torch's default", folder, error)
        return None
    environ[ENVIRONMENT_KEY] = str(folder)
    log.info("torch.compile cache: %s", folder)
    return folder
