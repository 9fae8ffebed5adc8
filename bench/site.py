"""The results as a static website: ``results/index.html`` with its images in ``results/site/``.

A pure function of ``results.csv`` and the stage store (the figures each model stage wrote,
its training curve, the plan files for the grid status): nothing is fetched when the page is
opened — no server, no CDN; the style and the few lines of sorting script are in the page,
and it works opened from the file system. It shows

* the grid status: done / running / failed (with the reason) / pending stages per role;
* one leaderboard per dataset: methods as rows, metrics as columns, mean ± std over seeds
  with the seed count; a setting with fewer finished seeds than planned is shown as missing,
  never averaged from an incomplete set; a click on a column header sorts by it;
* per dataset and method: originals, reconstructions, samples and latent traversals (and any
  other figure a method writes into its ``figures.npz``, e.g. attention maps) of the
  lowest seed (the other seeds one click away, in a ``<details>``), the hyperparameters,
  method version and the components it was trained on;
* the plots: each metric with its seed spread, and the training curves.
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench.aggregates import improvement_matrices
from bench.figures import read_figures
from bench.results import FAILED
from bench.status import collect, group_failures, total
from bench.tables import (RUN_STATS, best_lines, digits, grid_rows, is_spread, lower_is_better, metric_parameters,
                          metric_parameters_text, provenance, reported_note, tile_grid)

#: the figure panels a model stage writes (bench.figures.write_figures), in display order
PANELS = ("originals", "reconstructions", "samples", "traversal")

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
header{background:#1d3557;color:#fff;padding:14px 28px}header h1{margin:0;font-size:21px}
header p{margin:4px 0 0;opacity:.8;font-size:12.5px}main{padding:8px 28px 40px;max-width:1280px}
h2{margin-top:30px;border-bottom:2px solid #d7dde4;padding-bottom:4px}h3{margin:22px 0 6px}
nav a{margin-right:14px;color:#fff}table{border-collapse:collapse;margin:6px 0 14px;background:#fff}
th,td{border:1px solid #d7dde4;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#eef2f6;cursor:pointer;user-select:none}th.sorted-asc:after{content:" \\25B2"}
th.sorted-desc:after{content:" \\25BC"}td.name,th.name{text-align:left}td.missing{color:#98a2ad}
.std{color:#6b7682;font-size:12px}.n{color:#98a2ad;font-size:11px}.published{color:#7a5c00;font-size:11px;font-style:italic}.failed{color:#b3261e}
.card{background:#fff;border:1px solid #d7dde4;border-radius:6px;padding:10px 14px;margin:12px 0}
.card img{image-rendering:pixelated;display:block;margin:2px 0 8px;max-width:100%}
.panel{font-size:12px;color:#57606a}.plots img{max-width:560px;margin:6px 10px 6px 0;border:1px solid #e3e7eb}
details{margin-top:6px}summary{cursor:pointer;color:#1d3557}code{font-size:12px}
pre.reason{white-space:pre-wrap;font-size:12px;margin:4px 0}.params td{font-size:12px;text-align:left}.status td:first-child{text-align:left}
td.best{font-weight:600;background:#eaf6ec}th[data-direction=higher]:before{content:"\\2191  ";color:#6b7682}
th[data-direction=lower]:before{content:"\\2193  ";color:#6b7682}.provenance{font-size:12px;color:#57606a;margin:2px 0 6px}
"""

_SCRIPT = """
function sortBy(th){
  const table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
  const dir = th.classList.contains('sorted-asc') ? -1 : 1;
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add(dir === 1 ? 'sorted-asc' : 'sorted-desc');
  const key = r => r.cells[col].dataset.value;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === '' || x === undefined) return 1;
    if (y === '' || y === undefined) return -1;
    const nx = Number(x), ny = Number(y);
    if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
    return dir * String(x).localeCompare(String(y));
  });
  rows.forEach(r => body.appendChild(r));
}
document.querySelectorAll('table.sortable th').forEach(th => th.addEventListener('click', () => sortBy(th)));
"""


def build(results_dir: Path, rows: pd.DataFrame, board: pd.DataFrame, overall: pd.DataFrame | None = None,
          improvement: pd.DataFrame | None = None) -> Path:
    """Write ``index.html`` and ``site/`` under ``results_dir``; returns the page's path.

    ``overall`` and ``improvement`` are :mod:`bench.aggregates`' tables (IQM over datasets,
    probability of improvement); the per-setting intervals are the board's ``_iqm`` columns.
    """
    site = results_dir / "site"
    site.mkdir(parents=True, exist_ok=True)
    profiles = sorted({str(p) for p in rows["profile"].dropna()}) if "profile" in rows else []
    one = profiles[0] if len(profiles) == 1 and (results_dir / "plan" / f"{profiles[0]}.json").is_file() else None
    status = collect(results_dir, one, planned_only=True)  # the grid(s) this page is for, not the whole store
    parts = [_status_section(status), _leaderboard_section(board, rows),
             _aggregates_section(board, overall, improvement), _models_section(rows, results_dir, site),
             _plots_section(results_dir)]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'><title>bench results</title>"
        f"<style>{_STYLE}</style></head><body><header><h1>bench results</h1>"
        f"<p>{html.escape(results_dir.name)} · {_grid_line(rows, profiles)} · generated {stamp}</p>"
        f"<p class=prov>{_provenance(rows)}</p>"
        "<nav><a href='#status'>grid status</a><a href='#leaderboard'>leaderboard</a><a href='#aggregates'>intervals</a>"
        "<a href='#models'>methods</a><a href='#plots'>plots</a></nav></header><main>"
        + "".join(parts) + f"</main><script>{_SCRIPT}</script></body></html>"
    )
    path = results_dir / "index.html"
    tmp = path.with_name(f"index.html.tmp{os.getpid()}")
    tmp.write_text(page)
    tmp.replace(path)
    return path


def _grid_line(rows: pd.DataFrame, profiles: list[str]) -> str:
    """What the page holds, in a researcher's units: profile, models (settings × seeds), datasets, methods."""
    def count(col: str) -> int:
        return rows[col].dropna().nunique() if col in rows else 0

    from bench.listing import count as counted

    parts = [f"profile {html.escape(', '.join(profiles))}" if profiles else "",
             counted(count("method"), "method"), counted(count("dataset"), "dataset"), counted(count("model_id"), "model")]
    return " · ".join(p for p in parts if p)


def _esc(value) -> str:
    return html.escape(str(value))


def _status_section(status: dict) -> str:
    lines = ["<h2 id=status>Grid status</h2><table class=status><thead><tr><th class=name>stages</th><th>done</th>"
             "<th>running</th><th>failed</th><th>pending</th></tr></thead><tbody>"]
    reasons = []
    for role, b in status["roles"].items():
        if not total(b):
            continue
        lines.append(f"<tr><td>{role}</td><td>{b['done']}</td><td>{len(b['running'])}</td>"
                     f"<td class={'failed' if b['failed'] else ''}>{len(b['failed'])}</td><td>{b['pending']}</td></tr>")
        for reason, stages in group_failures(b["failed"]):
            names = "".join(f"<li>{_esc(r['label'])} <code>{_esc(r['id'])}</code></li>" for r in stages[:200])
            reasons.append(f"<li class=failed><b>{len(stages)} {role} stage(s) failed</b>:<pre class=reason>"
                           f"{_esc(reason or 'no reason recorded')}</pre><details><summary>which</summary>"
                           f"<ul>{names}</ul></details></li>")
        reasons += [f"<li>running: {_esc(r['label'])} on {_esc(r['host'])} (pid {_esc(r['pid'])})</li>"
                    for r in b["running"][:50]]
    lines.append("</tbody></table>")
    if reasons:
        lines.append("<ul>" + "".join(reasons) + "</ul>")
    return "".join(lines)


def _fmt(mean: float, std: float) -> str:
    d = digits(mean)
    return f"{mean:.{d}f} <span class=std>± {std:.{d}f}</span>"


def _leaderboard_section(board: pd.DataFrame, rows: pd.DataFrame | None = None) -> str:
    metrics = [c[:-5] for c in board.columns if c.endswith("_mean") and c[:-5] not in RUN_STATS]
    diagnostics = [c[:-5] for c in board.columns if c.endswith("_mean") and c[:-5] in RUN_STATS]
    out = ["<h2 id=leaderboard>Leaderboard</h2><p>Mean ± std over seeds (n = seeds with a value); ↑ higher is "
           "better, ↓ lower is better; the best mean per column is highlighted. "
           "“—” marks a setting with fewer finished seeds than planned: missing, never averaged. "
           "Click a column header to sort.</p>"]
    out += _board_tables(board, metrics, "board", rows, mark_best=True)
    if diagnostics:
        out.append("<h3 id=diagnostics>Training diagnostics</h3><p>Not metrics: <code>final_loss</code> compares "
                   "different objectives, <code>train_images_per_s</code> measures the machine's load.</p>")
        out += _board_tables(board, diagnostics, "diagnostics", None, mark_best=False)
    return "".join(out)


def _board_tables(board: pd.DataFrame, metrics: list[str], kind: str, rows: pd.DataFrame | None,
                  mark_best: bool) -> list[str]:
    out = []
    for dataset, sub in board.groupby("dataset", sort=True):
        show_config = sub.groupby("method")["config_id"].nunique().max() > 1
        head = ["method"] + (["config"] if show_config else []) + ["seeds"] + metrics
        out.append(f"<h3>{_esc(dataset)}</h3>" if kind == "board" else f"<h4>{_esc(dataset)}</h4>")
        if rows is not None:
            out.append(_metric_provenance(rows[rows["dataset"] == dataset], metrics))
        out.append(f"<table class='sortable {kind}' data-dataset='{_esc(dataset)}'><thead><tr>")
        for h in head:
            direction = "" if h in ("method", "config", "seeds") or not mark_best or is_spread(h) else \
                f" data-direction={'lower' if lower_is_better(h) else 'higher'}"
            out.append(f"<th class={'name' if h in ('method', 'config') else 'num'} data-metric='{_esc(h)}'{direction}>"
                       f"{_esc(h)}</th>")
        out.append("</tr></thead><tbody>")
        best = {m: best_lines(sub, m) if mark_best else set() for m in metrics}
        for i, r in sub.sort_values("method").iterrows():
            cells = [f"<td class=name data-value='{_esc(r['method'])}'><a href='#m-{_anchor(dataset, r['method'])}'>"
                     f"{_esc(r['method'])}</a></td>"]
            if show_config:
                cells.append(f"<td class=name data-value='{_esc(r['config_id'])}'>{_esc(r['config_id'])}</td>")
            done, planned = (int(x) for x in str(r["seeds"]).split("/"))
            cells.append(f"<td data-value='{done}'>{done}/{planned}</td>")
            for m in metrics:
                mean, std, n = r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"]
                if kind == "diagnostics" and pd.isna(mean) and int(n) == 0 and done > 0:
                    attrs, body = "class=missing data-value=''", "n/a"  # no training loop: no loss nor speed to report
                elif pd.isna(mean):
                    attrs, body = "class=missing data-value=''", f"— <span class=n>({int(n)} of {planned} seeds)</span>"
                else:
                    attrs = f"{'class=best ' if i in best[m] else ''}data-value='{mean:.10g}'"
                    body = f"{_fmt(mean, std)} <span class=n>n={int(n)}</span>"
                cells.append(f"<td {attrs}>{body}{_published(r, m)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    return out


def _metric_provenance(rows: pd.DataFrame, metrics: list[str]) -> str:
    """The metric parameters the table's values were computed with (a reduced sample size named as such)."""
    params = metric_parameters(rows, metrics)
    if not params:
        return "<p class=provenance>metric parameters: the study defaults</p>"
    return ("<p class=provenance>metric parameters — "
            + "; ".join(_esc(metric_parameters_text(m, sets)) for m, sets in params.items()) + "</p>")


def _provenance(rows: pd.DataFrame) -> str:
    """Where the numbers come from: profile, preset, git commit, device and package versions of the rows."""
    prov = provenance(rows)
    return (f"profile {_esc(prov['profile'])} · preset {_esc(prov['preset'])} · git commit {_esc(prov['git_commit'])}"
            f" · device {_esc(prov['device'])} · {_esc(prov['packages'] if prov['packages'] != '—' else 'packages —')}")


def _interval(point: float, lo: float, hi: float) -> str:
    d = digits(point)
    return f"{point:.{d}f} <span class=std>[{lo:.{d}f}, {hi:.{d}f}]</span>"


def _aggregates_section(board: pd.DataFrame, overall: pd.DataFrame | None, improvement: pd.DataFrame | None) -> str:
    """IQM [95 % CI] per setting (per dataset), over datasets, and the probability-of-improvement matrices."""
    metrics = [c[:-4] for c in board.columns if c.endswith("_iqm")]
    if not metrics:
        return ""
    out = ["<h2 id=aggregates>Interquartile mean and 95 % intervals</h2><p>IQM over seeds with a 95 % "
           "stratified-bootstrap interval (rliable, Agarwal et al. 2021; seeded, so the page is reproducible). "
           "Complete settings only.</p>"]
    for dataset, sub in board.groupby("dataset", sort=True):
        show_config = sub.groupby("method")["config_id"].nunique().max() > 1
        out.append(f"<h3>{_esc(dataset)}</h3><table class='sortable intervals' data-dataset='{_esc(dataset)}'><thead><tr>"
                   "<th class=name>method</th>" + ("<th class=name>config</th>" if show_config else "")
                   + "".join(f"<th class=num data-metric='{_esc(m)}'>{_esc(m)}</th>" for m in metrics) + "</tr></thead><tbody>")
        for _, r in sub.sort_values("method").iterrows():
            cells = [f"<td class=name data-value='{_esc(r['method'])}'>{_esc(r['method'])}</td>"]
            if show_config:
                cells.append(f"<td class=name data-value='{_esc(r['config_id'])}'>{_esc(r['config_id'])}</td>")
            for m in metrics:
                point = r[f"{m}_iqm"]
                cells.append("<td class=missing data-value=''>—</td>" if pd.isna(point) else
                             f"<td data-value='{point:.10g}'>{_interval(point, r[f'{m}_iqm_lo'], r[f'{m}_iqm_hi'])}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    if overall is not None and not overall.empty:
        out.append("<h3>Over datasets</h3><table class='overall'><thead><tr><th class=name>method</th>"
                   "<th class=name>metric</th><th class=num>datasets</th><th class=num>IQM [95 % CI]</th></tr></thead><tbody>")
        out += [f"<tr><td class=name>{_esc(r.method)}</td><td class=name>{_esc(r.metric)}</td><td>{r.datasets}</td>"
                f"<td>{_interval(r.iqm, r.iqm_lo, r.iqm_hi)}</td></tr>" for r in overall.itertuples()]
        out.append("</tbody></table>")
    for metric, (names, cells) in improvement_matrices(improvement if improvement is not None else pd.DataFrame(
            columns=["metric", "x", "y", "p_improvement", "lo", "hi"])).items():
        out.append(f"<h3>Probability of improvement: {_esc(metric)}</h3><p>P(row better than column) over the seeds "
                   f"of the datasets both complete; 0.5 is a tie.</p><table class=improvement data-metric='{_esc(metric)}'>"
                   "<thead><tr><th class=name>better than →</th>" + "".join(f"<th>{_esc(n)}</th>" for n in names)
                   + "</tr></thead><tbody>")
        for x in names:
            out.append(f"<tr><td class=name>{_esc(x)}</td>" + "".join(
                "<td>—</td>" if x == y else f"<td data-value='{cells[(x, y)][0]:.6g}'>{_interval(*cells[(x, y)])}</td>"
                for y in names) + "</tr>")
        out.append("</tbody></table>")
    return "".join(out)


def _published(r: pd.Series, metric: str) -> str:
    """The paper's value for the same setting, marked as published (never in the measured place)."""
    note = reported_note(r, metric).strip()
    return f" <span class=published title='{_esc(r.get(metric + '_reported_in', ''))}'>{_esc(note)}</span>" if note else ""


def _anchor(dataset: str, method: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in f"{dataset}-{method}")


def _models_section(rows: pd.DataFrame, results_dir: Path, site: Path) -> str:
    if "model_id" not in rows:
        return ""
    out = ["<h2 id=models>Methods</h2>"]
    models = grid_rows(rows).dropna(subset=["model_id"])
    models = models.drop_duplicates("model_id").sort_values(["dataset", "method", "seed"])
    for (dataset, method), sub in models.groupby(["dataset", "method"], sort=True):
        first, others = sub.iloc[0], sub.iloc[1:]
        out.append(f"<div class=card id='m-{_anchor(dataset, method)}'><h3>{_esc(method)} on {_esc(dataset)}</h3>")
        out.append(_model_block(first, rows, results_dir, site))
        if len(others):
            out.append(f"<details><summary>other seeds ({len(others)})</summary>")
            out += [_model_block(r, rows, results_dir, site) for _, r in others.iterrows()]
            out.append("</details>")
        out.append("</div>")
    return "".join(out)


def _model_block(r: pd.Series, rows: pd.DataFrame, results_dir: Path, site: Path) -> str:
    model_id = str(r["model_id"])
    mine = rows[rows["model_id"] == model_id]
    failed = mine[(mine["status"] == FAILED) & (mine["metric"].fillna("") == "")]
    parts = [f"<p><b>seed {int(r['seed'])}</b> · model <code>{_esc(model_id)}</code> · method version "
             f"{_esc(r.get('method_version'))} · dataset version {_esc(r.get('dataset_version'))}"]
    components = json.loads(r["components"]) if isinstance(r.get("components"), str) and r["components"] else {}
    if components:
        parts.append(" · trained on " + ", ".join(f"{_esc(k)} <code>{_esc(v)}</code>" for k, v in components.items()))
    parts.append("</p>")
    if len(failed):
        parts.append(f"<p class=failed>failed: {_esc(failed['reason'].iloc[0])}</p>")
    figures = results_dir / "stages" / "model" / model_id / "figures.npz"
    arrays = read_figures(figures) if figures.is_file() else None
    if arrays is not None:
        extra = sorted(k for k in arrays if k not in PANELS and arrays[k].ndim in (4, 5))  # method-specific figures
        for name in [p for p in PANELS if p in arrays] + extra:
            png = site / f"{model_id}__{name}.png"
            width = _save_panel(arrays[name], name, png)
            caption = {"traversal": "traversal: one row per code dimension, swept from its 2nd to its 98th percentile",
                       "attention": "cross-attention maps: row = image, column = concept token (weights at the "
                                    "finest UNet level, averaged over heads and DDIM steps, each map rescaled to [0, 1])",
                       "unit_swap": "unit swap: row c decodes the first image's code with latent unit c taken from "
                                    "each other image (first column: its own code)"}.get(name, name)
            if name == "traversal" and "traversal_labels" in arrays:  # which factor each row's dimension tracks
                caption += ("; rows, top to bottom: " + ", ".join(_esc(str(x)) for x in arrays["traversal_labels"])
                            + " (the factor with the largest |Pearson r| over 256 drawn images)")
            parts.append(f"<div class=panel>{caption}</div><img alt='{name} of {_esc(r['method'])} seed {int(r['seed'])}' "
                         f"src='site/{png.name}' width={width}>")
    params = json.loads(r["params"]) if isinstance(r.get("params"), str) else {}
    if params:
        cells = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in sorted(params.items()))
        parts.append(f"<details><summary>hyperparameters ({len(params)})</summary><table class=params>{cells}</table></details>")
    return "".join(parts)


def _save_panel(images: np.ndarray, name: str, path: Path) -> int:
    """Tile a panel into a PNG (small images enlarged up to 3x); returns its width in pixels."""
    import matplotlib  # heavy: imported only when a panel is drawn, not at start-up

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if images.ndim == 5:  # (rows, cols, C, H, W): traversals, unit swaps, ...
        grid = images
    else:
        grid = images.reshape(2, -1, *images.shape[1:]) if name == "samples" and len(images) % 2 == 0 else images[None]
    tile = tile_grid(grid.astype(np.float32))
    scale = max(1, 256 // max(1, tile.shape[0]))
    tile = np.repeat(np.repeat(tile, min(scale, 3), axis=0), min(scale, 3), axis=1)
    plt.imsave(path, np.clip(tile, 0, 1), cmap="gray", vmin=0, vmax=1)
    return int(tile.shape[1])


def _plots_section(results_dir: Path) -> str:
    plots = results_dir / "plots"
    metric = sorted(plots.glob("metric_*.png"))
    loss = sorted(plots.glob("*__loss.png"))
    probe_t = sorted(plots.glob("probe_t__*.png"))
    out = ["<h2 id=plots>Plots</h2>"]
    if probe_t:
        out.append("<h3>Probe accuracy against t (time-conditioned codes: a line over t; static codes: dashed)</h3>"
                   "<div class=plots>")
        out += [f"<img alt='{_esc(p.stem)}' src='plots/{_esc(p.name)}'>" for p in probe_t]
        out.append("</div>")
    if metric:
        out.append("<h3>Metrics (bars: mean ± sd over seeds; dots: seeds)</h3><div class=plots>")
        out += [f"<img alt='{_esc(p.stem)}' src='plots/{_esc(p.name)}'>" for p in metric]
        out.append("</div>")
    if loss:
        out.append("<h3>Training curves</h3><div class=plots>")
        out += [f"<img alt='{_esc(p.stem)}' src='plots/{_esc(p.name)}'>" for p in loss]
        out.append("</div>")
    return "".join(out)
