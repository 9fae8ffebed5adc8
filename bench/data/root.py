"""Where dataset files live: the data root.

Resolution order (first that is set wins):

1. an explicit setting, :func:`set_data_root` (the CLI calls it with ``bench.toml``'s
   top-level ``data_root`` key);
2. the environment variable ``BENCH_DATA_ROOT``;
3. ``~/.cache/bench/data``.

Under the root each dataset family has its own folder, laid out as the official archives
unpack and, where disentanglement_lib had a convention, as its ``dlib_download_data``
script leaves them (``dsprites/``, ``cars/``, ``small_norb/``, ``mpi3d_toy/``), so an
existing ``$DISENTANGLEMENT_LIB_DATA`` folder can serve as a data root as it is. Derived
uint8 caches go to ``<root>/cache`` (or, when the root is read-only, such as
``/usr/share/datasets``, to ``~/.cache/bench/cache``).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

ENV_VAR = "BENCH_DATA_ROOT"
DEFAULT_ROOT = Path("~/.cache/bench/data")
FALLBACK_CACHE = Path("~/.cache/bench/cache")

_explicit: Path | None = None


def set_data_root(path: str | os.PathLike[str] | None) -> None:
    """Use ``path`` as the data root from now on (``None`` clears the explicit setting)."""
    global _explicit
    if path is None:
        _explicit = None
        return
    text = os.fspath(path)
    if not text.strip():
        raise ValueError("data root must be a non-empty path (got an empty string)")
    _explicit = Path(text).expanduser()


def data_root() -> Path:
    """The data root: explicit setting, else ``$BENCH_DATA_ROOT``, else ``~/.cache/bench/data``."""
    if _explicit is not None:
        return _explicit
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT.expanduser()


def describe_root() -> str:
    """One line saying which root is in use and why (for error messages and `bench data ls`)."""
    if _explicit is not None:
        why = "set explicitly: bench data --root or bench.toml data_root"
    elif os.environ.get(ENV_VAR, "").strip():
        why = f"from ${ENV_VAR}"
    else:
        why = f"default; set ${ENV_VAR} or bench.toml data_root to change"
    return f"{data_root()} ({why})"


def cache_dir() -> Path:
    """Folder for derived uint8 caches: ``<root>/cache``, or ``~/.cache/bench/cache`` if the root is read-only."""
    preferred = data_root() / "cache"
    if _writable(preferred):
        return preferred
    fallback = FALLBACK_CACHE.expanduser()
    if _writable(fallback):
        return fallback
    raise PermissionError(
        f"cannot write a dataset cache to {preferred} or {fallback}; "
        f"set ${ENV_VAR} to a writable folder"
    )


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def root_flag() -> str:
    """`` --root <root>`` when the root was set explicitly (so a suggested command keeps it), else ``""``."""
    return f" --root {shlex.quote(str(_explicit))}" if _explicit is not None else ""
