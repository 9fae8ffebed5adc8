"""Lazy registries for methods, datasets and metrics.

An entry maps a name to a ``"module:attr"`` target that is imported only when the entry
is loaded, so listing (``bench ls``) never imports torch-heavy code. Duplicate names are
rejected at registration; an unknown name fails with a "did you mean" suggestion.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message carries suggestions."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0])


class PluginImportError(ImportError, ValueError):
    """A module named in ``BENCH_PLUGINS`` is not importable; the message says how to make it so.

    A ``ValueError`` too, so the command line prints it as one line instead of a traceback.
    """


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


@dataclass(frozen=True)
class Entry:
    """One registered object: its name, lazy target, a one-line summary and metadata."""

    name: str
    target: str
    summary: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """Import and return the target object (class or function)."""
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        try:
            return getattr(module, attr)
        except AttributeError as exc:
            raise ImportError(
                f"registry entry {self.name!r} points to {self.target!r}, "
                f"but module {module_name!r} has no attribute {attr!r}"
            ) from exc


class Registry:
    """A name → :class:`Entry` table of one kind ("method", "dataset", "metric")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        target: str,
        summary: str = "",
        *,
        kwargs: dict[str, Any] | None = None,
        **meta: Any,
    ) -> Entry:
        """Register ``name`` → ``target`` (``"package.module:attr"``).

        ``kwargs`` are passed to the target when it is instantiated through
        :meth:`create` (e.g. a dataset variant at another resolution).
        """
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target {target!r} must look like 'module:attr'")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered (→ {self._entries[name].target})")
        entry = Entry(name, target, summary, dict(kwargs or {}), dict(meta))
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry:
        if not isinstance(name, str):
            raise UnknownNameError(f"a {self.kind} name must be a string, got {name!r}; "
                                   f"registered: {', '.join(self.names())}")
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                f"registered: {', '.join(self.names())}"
            ) from None

    def load(self, name: str) -> Any:
        return self.get(name).load()

    def create(self, name: str, **kwargs: Any) -> Any:
        """Instantiate the target with the entry's kwargs updated by ``kwargs``."""
        entry = self.get(name)
        return entry.load()(**{**entry.kwargs, **kwargs})

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted; ``pattern`` is an fnmatch filter."""
        import fnmatch

        names = sorted(self._entries)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)


METHODS = Registry("method")
DATASETS = Registry("dataset")
METRICS = Registry("metric")

_populated = False


def populate() -> None:
    """Import the light modules that hold the registration lines (no torch import).

    ``BENCH_PLUGINS`` (comma-separated module names) adds modules of one's own: their
    ``METHODS.register(...)`` lines make out-of-tree methods, datasets and metrics usable by
    ``bench run`` and by every worker process it starts.
    """
    global _populated
    if _populated:
        return
    _populated = True
    importlib.import_module("methods")
    importlib.import_module("bench.data")
    importlib.import_module("bench.metrics")
    for module in filter(None, (m.strip() for m in os.environ.get("BENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(module)  # out-of-tree registration lines (also seen by worker processes)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise  # the plugin itself was found; something it imports is missing: its own traceback says what
            _populated = False  # the next call fails the same way instead of running without the plugin
            top = module.partition(".")[0]
            if exc.name == top:
                fix = (f"add the folder that holds {top}.py or {top}/ to PYTHONPATH "
                       f"(e.g. PYTHONPATH=/path/to/that/folder) or pip install -e its project")
            else:  # the package is there, the submodule is not
                parent, _, leaf = exc.name.rpartition(".")
                fix = f"check the name: package {parent!r} is importable but has no module {leaf!r}"
            raise PluginImportError(
                f"BENCH_PLUGINS names module {module!r}, which Python cannot import (no module named {exc.name!r} "
                f"on the path): {fix}, or remove it from BENCH_PLUGINS"
            ) from None


def methods() -> Registry:
    populate()
    return METHODS


def datasets() -> Registry:
    populate()
    return DATASETS


def metrics() -> Registry:
    populate()
    return METRICS
