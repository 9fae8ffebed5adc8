"""Render ``results/``: the leaderboard (Markdown + CSV), plots and the website (``index.html``, :mod:`bench.site`).

The leaderboard is a pure function of ``results.csv``: one line per dataset × method ×
configuration, one column per metric, ``mean ± std`` over seeds. A setting with fewer
finished seeds than planned (``n_seeds_planned``) shows the metric as missing ("—", with
the count of finished seeds), never a mean of the seeds that happen to be there.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench import aggregates, reported, site
from bench.results import FAILED, OK, read_results, write_csv_atomic
from bench.tables import (RUN_STATS, best_lines, digits, grid_rows, is_spread, line_provenance, lower_is_better,
                          metric_parameters, metric_parameters_text, provenance, reported_note, tile_grid)
from bench.figures import read_figures
from bench.trainlog import read_log

#: metrics shown first, in this order; any other metric follows alphabetically
PREFERRED = ["factorvae", "dci_disentanglement", "dci_completeness", "dci_informativeness"]


def leaderboard(rows: pd.DataFrame) -> pd.DataFrame:
    """Wide table: dataset, method, config, seeds (finished/planned), then per metric mean/std/n."""
    keys = ["dataset", "method", "config_id"]
    rows = grid_rows(rows)
    ok = rows[rows["status"] == OK].dropna(subset=["value"])
    ok = ok[ok["metric"].astype(str) != ""]
    planned = rows.groupby(keys, dropna=False)["n_seeds_planned"].max()
    finished = _finished_seeds(rows).reindex(planned.index, fill_value=0)
    # per-t probe rows (probe_mlp_t0.3, ...) live in results.csv and the accuracy-against-t plot, not here
    metrics = sorted((m for m in ok["metric"].unique() if not _PER_T.match(str(m))),
                     key=lambda m: (m not in PREFERRED, PREFERRED.index(m) if m in PREFERRED else 0, m))
    stats = ok.groupby(keys + ["metric"])["value"].agg(["mean", "std", "count"])
    out = []
    for key in planned.index:
        line = dict(zip(keys, key))
        line["seeds"] = f"{int(finished.loc[key])}/{int(planned.loc[key])}"
        for m in metrics:
            if (*key, m) in stats.index and stats.loc[(*key, m), "count"] >= planned.loc[key]:
                s = stats.loc[(*key, m)]
                line[f"{m}_mean"], line[f"{m}_std"], line[f"{m}_n"] = s["mean"], (0.0 if np.isnan(s["std"]) else s["std"]), int(s["count"])
            else:
                n = int(stats.loc[(*key, m), "count"]) if (*key, m) in stats.index else 0
                line[f"{m}_mean"], line[f"{m}_std"], line[f"{m}_n"] = np.nan, np.nan, n
        out.append(line)
    if not out:
        return pd.DataFrame(columns=[*keys, "seeds"])  # an empty table renders too
    # where each line's numbers come from, as columns a CSV reader can filter on (the page and .md say it in words)
    return pd.DataFrame(out).merge(line_provenance(rows, keys), on=keys, how="left")


def _finished_seeds(rows: pd.DataFrame) -> pd.Series:
    """Per setting, the number of seeds with no failed row."""
    keys = ["dataset", "method", "config_id"]
    per_seed = rows.groupby(keys + ["seed"], dropna=False)["status"].agg(lambda s: not bool((s == FAILED).any()))
    return per_seed.groupby(level=[0, 1, 2], dropna=False).sum()


def _markdown_table(board: pd.DataFrame, metrics: list[str], show_config: bool, mark_best: bool,
                    diagnostics: bool = False) -> list[str]:
    head = ["dataset", "method"] + (["config"] if show_config else []) + ["seeds"] + [
        f"{m} {'↓' if lower_is_better(m) else '↑'}" if mark_best and not is_spread(m) else m for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {m: set().union(*[best_lines(sub, m) for _, sub in board.groupby("dataset")]) if mark_best else set()
            for m in metrics}
    for i, r in board.sort_values(["dataset", "method"]).iterrows():
        cells = [str(r["dataset"]), str(r["method"])] + ([str(r["config_id"])] if show_config else []) + [r["seeds"]]
        for m in metrics:
            mean, std, n = r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"]
            if diagnostics and not_reported(r, m):
                cell = "n/a"  # a method without a training loop: its finished seeds report no loss nor speed
            else:
                cell = f"— ({int(n)} seeds)" if np.isnan(mean) else _fmt(mean, std)
            cells.append((f"**{cell}**" if i in best[m] else cell) + reported_note(r, m))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def not_reported(r: pd.Series, metric: str) -> bool:
    """A line whose finished seeds have no value of ``metric`` at all (a diagnostic its method does not report)."""
    done = int(str(r["seeds"]).split("/")[0])
    return bool(pd.isna(r[f"{metric}_mean"]) and int(r[f"{metric}_n"]) == 0 and done > 0)


def provenance_markdown(rows: pd.DataFrame, metrics: list[str] | None = None) -> str:
    """Where the numbers come from (profile, preset, commit, device, packages) and the metric parameters."""
    prov = provenance(rows)
    lines = [f"Where the numbers come from: profile {prov['profile']} · preset {prov['preset']} · git commit {prov['git_commit']} · "
             f"device {prov['device']} · packages {prov['packages']}."]
    params = metric_parameters(rows, metrics)
    if params:
        lines.append("\nMetric parameters (those set by the profile; the others are the study defaults):\n")
        lines += [f"- {metric_parameters_text(m, sets)}" for m, sets in params.items()]
    return "\n".join(lines) + "\n\n"


def leaderboard_markdown(board: pd.DataFrame, rows: pd.DataFrame | None = None) -> str:
    """The leaderboard (metrics, best per dataset in bold) and, apart, the training diagnostics.

    With the ``rows`` it was computed from, it starts with where the numbers come from.
    """
    board = board.reset_index(drop=True)
    columns = [c[:-5] for c in board.columns if c.endswith("_mean")]
    metrics = [m for m in columns if m not in RUN_STATS]
    diagnostics = [m for m in columns if m in RUN_STATS]
    any_reported = any(f"{m}_reported" in board for m in metrics)
    show_config = board.groupby(["dataset", "method"])["config_id"].nunique().max() > 1 if len(board) else False
    lines = _markdown_table(board, metrics, show_config, mark_best=True)
    legend = (
        "\nValues are mean ± std over seeds; ↑ higher is better, ↓ lower is better; the best mean per dataset "
        "is in bold. '—' marks a setting with fewer finished seeds than planned: it is shown as missing, not averaged.\n"
    )
    if any(is_spread(m) for m in metrics):
        legend += "\nA `*_fold_std` column is a spread (the std over folds), not a score: it has no direction and no best.\n"
    if any_reported:
        legend += ("\n'published' is the value the paper reports for the same setting and protocol "
                   "(bench/reported/papers.csv), Δ = measured − published; see reproduction.md.\n")
    if diagnostics:
        legend += ("\n## Training diagnostics\n\nNot metrics: `final_loss` compares different objectives and "
                   "`train_images_per_s` measures the machine's load.\n\n"
                   + "\n".join(_markdown_table(board, diagnostics, show_config, mark_best=False, diagnostics=True))
                   + "\n\n'n/a': the method reports no such value (no training loop).\n")
    head = provenance_markdown(grid_rows(rows), metrics) if rows is not None else ""
    return "# Leaderboard\n\n" + head + "\n".join(lines) + "\n" + legend


def _fmt(mean: float, std: float) -> str:
    d = digits(mean)
    return f"{mean:.{d}f} ± {std:.{d}f}"


def interval_text(point: float, lo: float, hi: float) -> str:
    d = digits(point)
    return f"{point:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


def aggregates_markdown(intervals: pd.DataFrame, overall: pd.DataFrame, improvement: pd.DataFrame) -> str:
    """The IQM tables (per dataset; over datasets) and the probability-of-improvement matrices, as Markdown."""
    if intervals.empty:
        return ""
    parts = ["\n## Interquartile mean [95 % CI]\n",
             f"IQM over seeds with a 95 % stratified-bootstrap interval ({aggregates.REPS} resamples, seeded), "
             "complete settings only (rliable, Agarwal et al. 2021).\n"]
    for dataset, sub in intervals.groupby("dataset", sort=True):
        metrics = sorted(sub["metric"].unique(), key=lambda m: (m not in PREFERRED, PREFERRED.index(m) if m in PREFERRED else 0, m))
        parts += [f"\n### {dataset}\n", "| method | config | " + " | ".join(metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for (method, config), line in sub.groupby(["method", "config_id"], sort=True):
            by = line.set_index("metric")
            cells = [interval_text(by.loc[m, "iqm"], by.loc[m, "iqm_lo"], by.loc[m, "iqm_hi"]) if m in by.index else "—"
                     for m in metrics]
            parts.append(f"| {method} | {config} | " + " | ".join(cells) + " |")
    if not overall.empty:
        parts += ["\n### Over datasets\n", "IQM over seeds × datasets, for methods with every dataset of the table complete.\n",
                  "| method | metric | datasets | IQM [95 % CI] |", "|---|---|---|---|"]
        parts += [f"| {r.method} | {r.metric} | {r.datasets} | {interval_text(r.iqm, r.iqm_lo, r.iqm_hi)} |"
                  for r in overall.itertuples()]
    matrices = aggregates.improvement_matrices(improvement)
    if matrices:
        parts += ["\n## Probability of improvement\n",
                  "P(row better than column) over the seeds of the datasets both complete (lower is better for "
                  "FID, MSE, LPIPS), with its 95 % interval; 0.5 is a tie.\n"]
        for metric, (names, cells) in matrices.items():
            parts += [f"\n### {metric}\n", "| better than → | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for x in names:
                parts.append(f"| {x} | " + " | ".join("—" if x == y else interval_text(*cells[(x, y)]) for y in names) + " |")
    return "\n".join(parts) + "\n"


def regenerate(results_dir: Path) -> dict[str, Path]:
    """Rebuild leaderboard.md/.csv and plots/ from ``results_dir/results.csv``."""
    rows = read_results(results_dir / "results.csv")
    published = reported.load()
    board = reported.attach(leaderboard(rows), grid_rows(rows), published)
    metrics = [c[:-5] for c in board.columns if c.endswith("_mean") and c[:-5] not in RUN_STATS]
    intervals = aggregates.setting_intervals(rows, metrics)
    overall = aggregates.overall_intervals(rows, metrics)
    improvement = aggregates.improvement_table(rows, [m for m in metrics if not is_spread(m)])  # spreads are not ranked
    board = aggregates.attach(board, intervals)
    out = {"leaderboard_csv": results_dir / "leaderboard.csv", "leaderboard_md": results_dir / "leaderboard.md",
           "reproduction_md": results_dir / "reproduction.md", "aggregates_csv": results_dir / "aggregates.csv",
           "improvement_csv": results_dir / "improvement.csv"}
    write_csv_atomic(board, out["leaderboard_csv"])
    write_csv_atomic(overall, out["aggregates_csv"])
    write_csv_atomic(improvement, out["improvement_csv"])
    reproduction = _with_counterpart(reported.reproduction_table(board, grid_rows(rows), published))
    texts = [("leaderboard_md", leaderboard_markdown(board, rows) + aggregates_markdown(intervals, overall, improvement))]
    if len(reproduction):  # only a grid with a published counterpart gets reproduction.md
        texts.append(("reproduction_md", reported.reproduction_markdown(reproduction)))
    else:
        out["reproduction_md"].unlink(missing_ok=True)  # a stale one from an earlier grid in this folder
        del out["reproduction_md"]
    for key, text in texts:
        tmp = out[key].with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(out[key])
    plots = results_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    _metric_plots(rows, plots)
    _probe_t_plots(rows, plots)
    _image_figures(rows, results_dir, plots)
    _loss_curves(rows, results_dir, plots)
    _interval_plots(intervals, plots)
    out["plots"] = plots
    out["index"] = site.build(results_dir, rows, board, overall, improvement)
    return out


def _with_counterpart(table: pd.DataFrame) -> pd.DataFrame:
    """The paper tables of which this grid ran at least one dataset × method (the others are noise here)."""
    if table.empty:
        return table
    touched = ~table["status"].astype(str).str.startswith("not run in this grid")
    keep = set(map(tuple, table.loc[touched, ["paper", "table"]].itertuples(index=False, name=None)))
    return table[[k in keep for k in table[["paper", "table"]].itertuples(index=False, name=None)]]


def _metric_plots(rows: pd.DataFrame, plots: Path) -> None:
    plt = _pyplot()

    ok = rows[(rows["status"] == OK) & rows["metric"].notna() & (rows["metric"].astype(str) != "")]
    for metric, sub in ok.groupby("metric"):
        if metric in RUN_STATS or _PER_T.match(str(metric)):  # per-t probe rows: the accuracy-against-t plot
            continue
        fig = metric_figure(sub, str(metric))
        fig.savefig(plots / f"metric_{metric}.png", dpi=110)
        plt.close(fig)


def _pyplot():
    import matplotlib  # heavy (matplotlib, seaborn): imported only when plots are drawn, not at start-up

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_figure(sub: pd.DataFrame, metric: str):
    """One metric per method: bars (mean ± sd over seeds) and dots (seeds); several datasets: a legend beside."""
    plt = _pyplot()
    import seaborn as sns

    several = sub["dataset"].nunique() > 1
    fig, ax = plt.subplots(figsize=(max(3.6, 1.2 + 1.1 * sub["method"].nunique() + 1.6 * several), 3.4),
                           layout="constrained")  # room for the title, the rotated names and the legend
    sns.barplot(data=sub, x="method", y="value", hue="dataset", errorbar="sd", ax=ax, alpha=0.6)
    sns.stripplot(data=sub, x="method", y="value", hue="dataset", dodge=True, ax=ax, palette="dark:k", size=4, legend=False)
    ax.set_title(f"{metric}\n(bars: mean ± sd over seeds; dots: seeds)", fontsize=9)
    ax.set_ylabel(metric)
    ax.set_xlabel("method")
    ax.tick_params(axis="x", rotation=30)
    legend = ax.get_legend()
    if legend is not None and not several:
        legend.remove()  # one dataset: the title's table says which
    elif legend is not None:  # beside the axes, never over the bars
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7, title="dataset")
    return fig


#: per-t rows of the latent_probe metric: probe_mlp_t0.3, probe_svc100_t1.0, ...
_PER_T = re.compile(r"^(probe_\w+?)_t(\d+\.\d+)$")


def _probe_t_plots(rows: pd.DataFrame, plots: Path) -> None:
    """Per dataset: probe accuracy against t, one line per method setting (DRL's Figures 4-5).

    A time-conditioned code has a value per t; a static code (AE, VAE, SimCLR, ...) is a flat line.
    """
    ok = rows[(rows["status"] == OK) & rows["metric"].notna()].copy()
    ok["metric"] = ok["metric"].astype(str)
    per_t = ok[ok["metric"].str.match(_PER_T.pattern)]
    if per_t.empty and not ok["metric"].isin(["probe_mlp"]).any():
        return
    plt = _pyplot()
    for dataset, sub in ok.groupby("dataset"):
        fig = probe_t_figure(str(dataset), sub)
        if fig is None:
            continue  # no time-conditioned code here: the bar plots say it all
        fig.savefig(plots / f"probe_t__{dataset}.png", dpi=110)
        plt.close(fig)


def probe_t_figure(dataset: str, sub: pd.DataFrame):
    """Probe accuracy against t on one dataset (its OK rows, metric as text); ``None`` without a per-t row."""
    plt = _pyplot()
    timed = sub[sub["metric"].str.match(_PER_T.pattern)]
    if timed.empty:
        return None
    parsed = timed["metric"].str.extract(_PER_T.pattern)
    timed = timed.assign(probe=parsed[0], t=parsed[1].astype(float))
    probes = sorted(timed["probe"].unique(), key=lambda p: (p != "probe_mlp", p))
    ts = sorted(timed["t"].unique())
    timed_keys = set(map(tuple, timed[["method", "config_id"]].drop_duplicates().values))
    fig, axes = plt.subplots(1, len(probes), figsize=(4.2 * len(probes) + 1.8, 3.4), squeeze=False, layout="constrained")
    for ax, probe in zip(axes[0], probes):
        for (method, config), line in timed[timed["probe"] == probe].groupby(["method", "config_id"]):
            means = line.groupby("t")["value"].mean()
            ax.plot(means.index, means.values, marker="o", label=f"{method} ({config})")
        flat = sub[(sub["metric"] == probe)]
        for (method, config), line in flat.groupby(["method", "config_id"]):
            if (method, config) in timed_keys:
                continue
            ax.plot([ts[0], ts[-1]], [line["value"].mean()] * 2, linestyle="--", label=f"{method} ({config})")
        ax.set_xlabel("t of the code E(x_0, t)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{dataset}: {probe}", fontsize=9)
    # beside the last panel, like the bar plots' legends: never over the lines
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def _image_figures(rows: pd.DataFrame, results_dir: Path, plots: Path) -> None:
    """Per dataset × method: reconstructions and samples, and a latent traversal (lowest seed)."""
    import matplotlib  # heavy: imported only when plots are drawn, not at start-up

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = _first_seeds(rows)
    for _, r in first.iterrows():
        path = results_dir / "stages" / "model" / str(r["model_id"]) / "figures.npz"
        arrays = read_figures(path) if path.is_file() else None
        if arrays is None:
            continue
        stem = f"{r['dataset']}__{r['method']}"
        panels = [(k, arrays[k]) for k in ("originals", "reconstructions", "samples") if k in arrays]
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.2 * len(panels) + 0.3), squeeze=False)
        for ax, (name, imgs) in zip(axes[:, 0], panels):
            ax.imshow(tile_grid(imgs[None, :8] if name != "samples" else imgs.reshape(2, -1, *imgs.shape[1:])), cmap="gray", vmin=0, vmax=1)
            ax.set_ylabel(name, fontsize=8)
            ax.set_xticks([]); ax.set_yticks([])
        fig.suptitle(f"{r['method']} on {r['dataset']} (seed {r['seed']})", fontsize=9)
        fig.tight_layout()
        fig.savefig(plots / f"{stem}__images.png", dpi=110)
        plt.close(fig)
        if "attention" in arrays:  # EncDiff: each concept token's cross-attention map (rows: images)
            maps = arrays["attention"]
            fig, ax = plt.subplots(figsize=(0.6 * maps.shape[1] + 0.8, 0.6 * maps.shape[0] + 0.6))
            ax.imshow(tile_grid(maps), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{r['method']}: cross-attention map per concept token", fontsize=8)
            ax.set_xticks([]); ax.set_yticks([])
            fig.tight_layout()
            fig.savefig(plots / f"{stem}__attention.png", dpi=110)
            plt.close(fig)
        if "traversal" in arrays:
            labels = arrays.get("traversal_labels")
            fig = traversal_figure(arrays["traversal"], None if labels is None else [str(x) for x in labels],
                                   str(r["method"]))
            fig.savefig(plots / f"{stem}__traversal.png", dpi=110)
            plt.close(fig)


def traversal_figure(trav: np.ndarray, labels: list[str] | None, method: str):
    """One row per code dimension (labelled with the factor it tracks most), swept from its 2nd to 98th percentile."""
    plt = _pyplot()
    labels = labels if labels is not None else [f"z{i}" for i in range(trav.shape[0])]
    # the image's width plus the widest row label (about 0.055 in per character at 7 pt) and a margin
    width = max(4.2, 0.6 * trav.shape[1] + 0.055 * max(map(len, labels), default=2) + 0.8)
    fig, ax = plt.subplots(figsize=(width, 0.6 * trav.shape[0] + 1.2), layout="constrained")
    ax.imshow(tile_grid(trav), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([(i + 0.5) * trav.shape[-2] for i in range(trav.shape[0])])
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xticks([0.5 * trav.shape[-1], (trav.shape[1] - 0.5) * trav.shape[-1]])
    ax.set_xticklabels(["2nd percentile", "98th"], fontsize=6)
    ax.set_xlabel("value of the dimension, in equal steps", fontsize=7)
    ax.set_title(f"{method}: latent traversal\n(row: dimension · factor it tracks most)", fontsize=9)
    return fig


def _first_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset × method: its lowest seed's model (components included)."""
    rows = rows[rows["model_id"].notna()] if "model_id" in rows else rows.iloc[0:0]
    return rows.sort_values("seed").drop_duplicates(["dataset", "method"])


def _loss_curves(rows: pd.DataFrame, results_dir: Path, plots: Path) -> None:
    """Per dataset: the training loss of every method's seeds against the step (from each stage's train_log)."""
    import matplotlib  # heavy: imported only when plots are drawn, not at start-up

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "model_id" not in rows:
        return
    models = rows.dropna(subset=["model_id"]).drop_duplicates("model_id")
    for dataset, sub in models.groupby("dataset"):
        curves: dict[str, list[tuple[int, list[int], list[float]]]] = {}
        for _, r in sub.sort_values(["method", "seed"]).iterrows():
            log = [line for line in read_log(results_dir / "stages" / "model" / str(r["model_id"]) / "train_log.jsonl")
                   if line.get("phase") == "train" and "loss" in line]
            if log:
                curves.setdefault(str(r["method"]), []).append(
                    (int(r["seed"]), [x["step"] for x in log], [x["loss"] for x in log]))
        if not curves:
            continue
        # one panel per method: the objectives differ in scale, so each gets its own (linear) axis
        cols = min(4, len(curves))
        nrows = -(-len(curves) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.3 * nrows + 0.4), squeeze=False)
        for ax, (method, runs) in zip(axes.flat, curves.items()):
            for seed, steps, losses in runs:
                ax.plot(steps, losses, lw=1, label=f"seed {seed}")
            ax.set_title(method, fontsize=8)
            ax.set_xlabel("step", fontsize=7)
            ax.set_ylabel("training loss", fontsize=7)
            ax.tick_params(labelsize=6)
            if len(runs) > 1:
                ax.legend(fontsize=6, frameon=False)
        for ax in list(axes.flat)[len(curves):]:
            ax.set_visible(False)
        fig.suptitle(f"training loss on {dataset} (each method on its own axis)", fontsize=9)
        fig.tight_layout()
        fig.savefig(plots / f"{dataset}__loss.png", dpi=110)
        plt.close(fig)


def _interval_plots(intervals: pd.DataFrame, plots: Path) -> None:
    """Per dataset: each method's IQM and 95 % interval per metric (rliable's interval plot)."""
    if intervals.empty:
        return
    import matplotlib  # heavy: imported only when plots are drawn, not at start-up

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for dataset, sub in intervals.groupby("dataset", sort=True):
        metrics = sorted(sub["metric"].unique())
        labels = sorted({f"{m} ({c})" for m, c in zip(sub["method"], sub["config_id"])})
        fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 1.5, 0.35 * len(labels) + 1.2),
                                 squeeze=False, sharey=True)
        for ax, metric in zip(axes[0], metrics):
            part = sub[sub["metric"] == metric]
            for _, r in part.iterrows():
                y = labels.index(f"{r['method']} ({r['config_id']})")
                ax.plot([r["iqm_lo"], r["iqm_hi"]], [y, y], lw=5, alpha=0.5, solid_capstyle="butt")
                ax.plot([r["iqm"]], [y], "k|", ms=10)
            ax.set_title(metric, fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0][0].set_yticks(range(len(labels)))
        axes[0][0].set_yticklabels(labels, fontsize=7)
        fig.suptitle(f"{dataset}: IQM and 95 % stratified-bootstrap interval over seeds", fontsize=9)
        fig.tight_layout()
        fig.savefig(plots / f"{dataset}__intervals.png", dpi=110)
        plt.close(fig)
