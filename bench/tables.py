"""Table and image helpers shared by the leaderboard, the website and the published values.

The lowest layer of the rendering code: it imports no other rendering module, and
:mod:`bench.reported`, :mod:`bench.site` and :mod:`bench.report` all import it, so imports
run one way (tables → reported / site → report). It holds

* :func:`grid_rows`: the rows of the grid's models (components left out);
* :func:`digits`: how many decimals a mean (and its std) is shown with;
* :func:`reported_note`: a leaderboard line's published counterpart, as text;
* :func:`tile_grid`: a (rows, cols, C, H, W) grid of images as one image;
* :func:`lower_is_better`: a metric's direction; :func:`best_lines`: the best line of a column.
"""

from __future__ import annotations

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
    return str(metric) in LOWER_IS_BETTER or str(metric).endswith("_fold_std")


def best_lines(board: pd.DataFrame, metric: str) -> set:
    """Index labels of the lines holding the best ``{metric}_mean`` of ``board`` (one dataset; ≥ 2 compared)."""
    col = f"{metric}_mean"
    values = board[col].dropna() if col in board else pd.Series(dtype=float)
    if len(values) < 2:
        return set()
    best = values.min() if lower_is_better(metric) else values.max()
    return set(values.index[values == best])
