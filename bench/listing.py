"""What `bench ls` prints: the registries, the profiles of a bench.toml, and one method's or metric's options.

* ``bench ls [methods|datasets|metrics]`` — names with a one-line summary;
* ``bench ls profiles [--config F]`` — each profile's name, description and grid size;
* ``bench ls methods NAME`` — the hyperparameters with their defaults and valid ranges, the
  presets (the values each sets), the capabilities and the components;
* ``bench ls metrics NAME`` — what the metric needs, its outputs and its parameters with
  their defaults and valid ranges (what ``metric_params`` accepts), and which of them
  ``bench score --param`` accepts on a codes table.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from bench import registry

KINDS = ("methods", "datasets", "metrics", "profiles")


def registries(kinds: list[str]) -> str:
    lines = []
    for kind in kinds:
        reg = getattr(registry, kind)()
        lines.append(f"{kind}:")
        width = max(len(e.name) for e in reg)
        lines += [f"  {entry.name:<{width}}  {entry.summary}" for entry in reg]
    return "\n".join(lines)


def count(n: int, noun: str) -> str:
    """``1 model``, ``2 models``: the plural only where it is needed."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def profiles(config_path: str | Path) -> str:
    """Each profile: name, description, and the grid's size (grid points; components, models, evaluations)."""
    import contextlib
    import io

    from bench import stages  # imports the method classes (torch): only for this listing
    from bench.config import ConfigError, load_config

    # reading and planning check each method's hyperparameters, and some say what a training run would do without
    # an optional package (vq-f4 without LPIPS): that is for `bench run`, not for a listing of sizes
    with contextlib.redirect_stderr(io.StringIO()):
        config = load_config(config_path)
    lines = [f"profiles of {config_path} (default: {config.default_profile}):"]
    for name in config.profiles:
        profile = config.profile(name)
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                counts = {"component": 0, "model": 0, "evaluation": 0, "group": 0, **stages.plan(profile).role_counts()}
        except ConfigError as exc:  # a released checkpoint not on this machine, say
            size = f"{count(len(profile.cells()), 'grid point')} (not planned here: {exc})"
        else:
            size = (f"{count(len(profile.cells()), 'grid point')} → {count(counts['component'], 'component')}, "
                    f"{count(counts['model'], 'model')}, {count(counts['evaluation'], 'evaluation')}"
                    + (f", {count(counts['group'], 'seed group')}" if counts["group"] else ""))
        lines += [f"  {name}", f"      {profile.description or '(no description)'}",
                  f"      {size} ({count(len(profile.methods), 'method')} × {count(len(profile.datasets), 'dataset')}"
                  f" × {count(len(profile.seeds), 'seed')}); device {profile.device}"]
    return "\n".join(lines)


def _value(v) -> str:
    return json.dumps(v) if isinstance(v, (list, dict, str, bool)) or v is None else repr(v)


def method(name: str) -> str:
    """A method's hyperparameters (default, range), presets, capabilities and components."""
    cls = registry.methods().load(name)
    entry = registry.methods().get(name)
    lines = [f"{name}: {entry.summary}", f"  class {cls.__module__}.{cls.__name__}, version {getattr(cls, 'version', 1)}",
             f"  capabilities: {', '.join(sorted(cls.capabilities)) or 'none'}"]
    if cls.components:
        lines.append("  components (trained once by the grid and shared): " + ", ".join(
            f"{n} = {c.method}" for n, c in cls.components.items()))
    lines.append("  hyperparameters (default; valid range):")
    width = max((len(k) for k in cls.defaults), default=0)
    for key, default in cls.defaults.items():
        spec = cls.ranges.get(key)
        rng = "" if spec is None else f"; {' | '.join(map(str, spec)) if isinstance(spec, tuple) else spec}"
        lines.append(f"    {key:<{width}}  {_value(default)}{rng}")
    lines.append("  presets (the values each sets):")
    for preset, values in cls.presets.items():
        lines.append(f"    {preset}: " + (", ".join(f"{k}={_value(v)}" for k, v in values.items()) or "the defaults"))
    return "\n".join(lines)


def _range(spec) -> str:
    """A registered range as a user types it: choices as ``a | b``, a bound as written, a checker's first line."""
    from bench.params import describe

    if spec is None:
        return ""
    if isinstance(spec, tuple):
        return "; " + " | ".join(map(str, spec))
    if callable(spec):
        from bench.score import plain_text  # the checker's docstring may hold RST literals

        return "; " + plain_text(describe(spec))
    return "; " + spec


def metric(name: str) -> str:
    """A metric's requirements, outputs, parameters with their defaults and valid ranges, and what
    ``bench score --param`` accepts for it."""
    entry = registry.metrics().get(name)
    fn = entry.load()
    meta = entry.meta
    ranges = meta.get("ranges", {})
    lines = [f"{name}: {entry.summary}", f"  function {entry.target}",
             f"  needs: {meta.get('requires') or 'codes only'}; uses the method's {meta.get('uses', 'encode')}"
             + (f"; capability {meta['capability']!r}" if meta.get("capability") else ""),
             f"  outputs: {', '.join(meta.get('outputs', (name,)))}",
             "  parameters (default; valid range), set in bench.toml's metric_params:"]
    params = [p for p in list(inspect.signature(fn).parameters.values())[3:] if p.kind is p.KEYWORD_ONLY]
    width = max((len(p.name) for p in params), default=0)
    lines += [f"    {p.name:<{width}}  {_value(p.default) if p.default is not p.empty else '(required)'}"
              f"{_range(ranges.get(p.name))}" for p in params]
    lines.append("  " + _score_params(name, [p.name for p in params]))
    return "\n".join(lines)


def _score_params(name: str, params: list[str]) -> str:
    """Which of the metric's parameters ``bench score --param`` accepts on a codes table."""
    from bench import score

    if name not in score.GROUPS:
        return "bench score: not computed on a codes table (it needs the model: bench run)"
    accepted = score._settable_params().get(name)
    accepted = [p for p in params if p not in ("representation", "n_jobs")] if accepted is None else list(accepted)
    sizes = " (the tables' sizes are bench score's --num-train / --num-test)" if {"num_train", "num_test"} & set(params) \
        and not {"num_train", "num_test"} & set(accepted) else ""
    return (f"bench score --param accepts: {', '.join(f'{name}.{p}' for p in accepted) or 'no options'}" + sizes)
