"""Table and image helpers shared by the leaderboard, the website and the published values.

The lowest layer of the rendering code: it imports no other rendering module, and
:mod:`bench.reported`, :mod:`bench.site` and :mod:`bench.report` all import it, so imports
run one way (tables → reported / site → report). It holds

* :func:`grid_rows`: the rows of the grid's models (components left out);
* :func:`digits`: how many decimals a mean (and its std) is shown with;
* :func:`reported_note`: a leaderboard line's published counterpart, as text;
* :func:`tile_grid`: a (rows, cols, C, H, W) grid of images as one image;
* :func:`lower_is_better`: a metric's direction; :func:`best_lines`: the best line of a column;
* :func:`provenance`, :func:`metric_parameters`, :func:`line_provenance`: where the numbers come
  from (profile, preset, git commit, packages; the metric parameters, a sample size below the
  study default named as such), shared by the page, ``leaderboard.md`` and ``leaderboard.csv``.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd


def grid_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the grid's models: components (trained for other methods only) left out."""
    return rows[rows["role"].fillna("model") != "component"] if "role" in rows else rows


def digits(mean: float) -> int:
    """Decimals shown for a mean (and its std): 1 from 100 up, else 3."""
    return 1 if abs(mean) >= 100 else 3


def reported_note(r: pd.Series, metric: str) -> str:
    """`` (published 0.819 ± 0.003, Δ −0.159)`` for a line with a published counterpart, else ``""``."""
    value = r.get(f"{metric}_reported", np.nan)
    if value is None or pd.isna(value):
        return ""
    d = digits(value)
    std = r.get(f"{metric}_reported_std", np.nan)
    text = f"{value:.{d}f}" + ("" if pd.isna(std) else f" ± {std:.{d}f}")
    diff = r.get(f"{metric}_diff", np.nan)
    return f" (published {text}" + ("" if pd.isna(diff) else f", Δ {diff:+.{d}f}") + ")"


def tile_grid(grid: np.ndarray) -> np.ndarray:
    """(rows, cols, C, H, W) → one (rows·H, cols·W[, C]) image."""
    rows, cols, c, h, w = grid.shape
    img = grid.astype(np.float32).transpose(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)
    return img[..., 0] if c == 1 else np.clip(img, 0, 1)


#: rows every model stage writes about its training: diagnostics, not metrics (kept out of the metric tables)
RUN_STATS = ("train_images_per_s", "final_loss", "convert_seconds")

#: metrics (and training diagnostics) where a lower value is better; every other metric: higher
LOWER_IS_BETTER = frozenset({"fid", "mse", "lpips", "final_loss", "gaussian_tc", "mutual_info"})


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better (FID, MSE, LPIPS, ...)."""
    return str(metric) in LOWER_IS_BETTER


def is_spread(metric: str) -> bool:
    """A column that is a spread (``tad_fold_std``: the std over folds), not a score: no direction, never ranked."""
    return str(metric).endswith("_fold_std")


def best_lines(board: pd.DataFrame, metric: str) -> set:
    """Index labels of the lines holding the best ``{metric}_mean`` of ``board`` (one dataset; ≥ 2 compared)."""
    col = f"{metric}_mean"
    if is_spread(metric):
        return set()
    values = board[col].dropna() if col in board else pd.Series(dtype=float)
    if len(values) < 2:
        return set()
    best = values.min() if lower_is_better(metric) else values.max()
    return set(values.index[values == best])


#: metric parameters that are sample sizes: below the metric's default (the study's), an estimate is noisier
SAMPLE_SIZES = frozenset({"num_train", "num_test", "num_eval", "num_val", "num_variance_estimate", "num_samples",
                          "num_reference", "num_data_points"})


def registered_metric(name: str) -> str | None:
    """The registered metric that writes the results column ``name`` (``dci_completeness`` → ``dci``)."""
    from bench import registry  # the registration lines only (no torch)

    exact, prefix = None, None
    for entry in registry.metrics():
        outputs = entry.meta.get("outputs", (entry.name,))
        if name in outputs or name == entry.name:
            exact = exact or entry.name
        elif any(name.startswith(f"{o}_") for o in (*outputs, entry.name)):
            prefix = prefix or entry.name
    return exact or prefix or ("latent_probe" if str(name).startswith("probe_") else None)


def study_defaults(metric: str) -> dict:
    """The keyword defaults of a registered metric (the study's settings); ``{}`` when it cannot be loaded."""
    from bench import registry

    try:
        fn = registry.metrics().load(metric)
        return {p.name: p.default for p in inspect.signature(fn).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}
    except Exception:  # a plugin metric that is gone: its parameters are still shown, without the comparison
        return {}


def below_defaults(metric: str, params: dict) -> list[str]:
    """``["num_train 60 is below the study default 10,000", ...]``: the reduced sample sizes of ``params``."""
    defaults = study_defaults(metric)
    notes = []
    for key, value in sorted(params.items()):
        default = defaults.get(key)
        if (key in SAMPLE_SIZES and isinstance(value, (int, float)) and not isinstance(value, bool)
                and isinstance(default, (int, float)) and not isinstance(default, bool) and value < default):
            notes.append(f"{key} {value:,} is below the study default {default:,}")
    return notes


def _params(text) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def metric_parameters(rows: pd.DataFrame, metrics: list[str] | None = None) -> dict[str, list[tuple[dict, list[str]]]]:
    """Per registered metric (of the columns ``metrics``, or all): each distinct parameter set of the rows and its
    sample sizes below the study defaults. ``{}`` parameters are the reference defaults."""
    if "metric_params" not in rows or "metric" not in rows:
        return {}
    out: dict[str, list[tuple[dict, list[str]]]] = {}
    for name, texts in rows.dropna(subset=["metric"]).groupby(rows["metric"].astype(str))["metric_params"]:
        if not name or name in RUN_STATS or (metrics is not None and name not in metrics and not any(name.startswith(f"{m}_") for m in metrics)):
            continue
        metric = registered_metric(name) or name
        for text in sorted({str(t) for t in texts.dropna()}):
            params = _params(text)
            if all(params != p for p, _ in out.get(metric, [])):
                out.setdefault(metric, []).append((params, below_defaults(metric, params)))
    return dict(sorted(out.items()))


def metric_parameters_text(metric: str, sets: list[tuple[dict, list[str]]]) -> str:
    """``dci: num_test=30, num_train=60 (num_train 60 is below the study default 10,000; ...)``."""
    texts = []
    for params, notes in sets:
        text = ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "the study defaults"
        texts.append(text + (f" ({'; '.join(notes)})" if notes else ""))
    return f"{metric}: " + " | ".join(texts)


def _distinct(rows: pd.DataFrame, col: str) -> list[str]:
    return sorted({str(v) for v in rows[col].dropna() if str(v)}) if col in rows else []


def _packages(rows: pd.DataFrame) -> list[str]:
    packages = set()
    for text in (rows["packages"].dropna().unique() if "packages" in rows else []):
        try:
            packages |= {f"{k}={v}" for k, v in json.loads(text).items()}
        except (ValueError, AttributeError):
            packages.add(str(text))
    return sorted(packages)


def provenance(rows: pd.DataFrame) -> dict[str, str]:
    """Where the numbers come from: profile, preset, git commit, device and package versions (distinct values)."""
    return {"profile": ", ".join(_distinct(rows, "profile")) or "—",
            "preset": ", ".join(_distinct(rows, "preset")) or "—",
            "git_commit": ", ".join(sorted({c[:10] for c in _distinct(rows, "git_commit")})) or "—",
            "device": ", ".join(_distinct(rows, "device")) or "—",
            "packages": " ".join(_packages(rows)) or "—"}


def line_provenance(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per leaderboard line (``keys``): profile, preset, git commit, packages, the metric parameters as JSON
    (``{"dci": {"num_train": 60}}``) and ``below_study_default`` (``dci.num_train 60 < 10,000; ...``), for CSV readers."""
    out = []
    for key, sub in rows.groupby(keys, dropna=False):
        line = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        prov = provenance(sub)
        line.update({k: prov[k] for k in ("profile", "preset", "packages")})
        line["git_commit"] = ", ".join(_distinct(sub, "git_commit")) or "—"  # the whole hash: a reader checks it out
        params = metric_parameters(sub)
        line["metric_params"] = json.dumps({m: sets[0][0] if len(sets) == 1 else [p for p, _ in sets]
                                            for m, sets in params.items()}, sort_keys=True)
        line["below_study_default"] = "; ".join(f"{m}.{note.replace(' is below the study default ', ' < ')}"
                                                for m, sets in params.items() for _, notes in sets for note in notes)
        out.append(line)
    return pd.DataFrame(out, columns=[*keys, "profile", "preset", "git_commit", "packages", "metric_params",
                                      "below_study_default"])
