"""The leaderboard is a pure function of the rows: mean ± std over complete settings only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import leaderboard, leaderboard_markdown


def rows(values: dict[tuple[str, int], float], planned: int = 3, failed: tuple = ()) -> pd.DataFrame:
    out = []
    for (method, seed), value in values.items():
        status = "failed" if (method, seed) in failed else "ok"
        out.append({"dataset": "d", "method": method, "config_id": "c", "seed": seed, "n_seeds_planned": planned,
                    "metric": "factorvae" if status == "ok" else "", "value": value if status == "ok" else np.nan,
                    "status": status})
    return pd.DataFrame(out)


def test_mean_and_std_over_seeds():
    board = leaderboard(rows({("a", 0): 0.5, ("a", 1): 0.7, ("a", 2): 0.9}))
    assert board.loc[0, "seeds"] == "3/3"
    assert np.isclose(board.loc[0, "factorvae_mean"], 0.7)
    assert np.isclose(board.loc[0, "factorvae_std"], 0.2)  # sample std (ddof=1) over seeds
    assert "0.700 ± 0.200" in leaderboard_markdown(board)


def test_incomplete_setting_is_missing_not_averaged():
    # seed 2 never ran (killed) for b; seed 1 failed for c
    data = rows({("a", 0): 0.5, ("a", 1): 0.7, ("a", 2): 0.9, ("b", 0): 0.1, ("b", 1): 0.2,
                 ("c", 0): 0.3, ("c", 1): 0.0, ("c", 2): 0.4}, failed=(("c", 1),))
    board = leaderboard(data).set_index("method")
    assert np.isnan(board.loc["b", "factorvae_mean"]) and board.loc["b", "seeds"] == "2/3"
    assert np.isnan(board.loc["c", "factorvae_mean"]) and board.loc["c", "seeds"] == "2/3"
    md = leaderboard_markdown(board.reset_index())
    assert "| d | b | 2/3 | — (2 seeds) |" in md


def test_traversal_rows_are_labelled_with_the_factor_each_dimension_tracks():
    """A code whose dimension 0 is the column, dimension 1 minus twice the row and dimension 2 constant."""
    from bench.figures import traversal_labels

    rng = np.random.default_rng(0)
    factors = rng.integers(0, 4, size=(50, 2)).astype(float)
    codes = np.stack([factors[:, 1], -2 * factors[:, 0] + 0.5, np.full(50, 3.0)], axis=1)
    labels = list(traversal_labels(codes, factors, ("row", "col")))
    assert labels == ["z0 · col |r| 1.00", "z1 · row |r| 1.00", "z2"]
    assert list(traversal_labels(codes, None, ())) == ["z0", "z1", "z2"]


def test_figures_of_a_model_on_a_dataset_without_factors_have_plain_traversal_labels(tmp_path):
    """Fashion-MNIST, CIFAR-10 and CelebA have labels or attributes, not factors: the traversal rows are z0, z1, …"""
    from bench.data.base import LabelledDataset
    from bench.figures import read_figures, write_figures

    class Labelled(LabelledDataset):
        name, version, class_names = "tiny-labelled", "1", ("a", "b")

        @property
        def image_shape(self):
            return (1, 8, 8)

        def __len__(self):
            return 20

        def images(self, indices):
            idx = np.asarray(indices)
            return np.broadcast_to((idx % 2)[:, None, None, None] * 0.5, (len(idx), 1, 8, 8)).astype(np.float32)

        def labels(self, indices):
            return np.asarray(indices) % 2

    class Decoder:
        capabilities = frozenset({"decode"})

        def encode(self, x):
            return x.reshape(len(x), -1)[:, :3]

        def decode(self, z):
            return np.zeros((len(z), 1, 8, 8), np.float32)

    write_figures(Decoder(), Labelled(), tmp_path, seed=0, n=4, steps=3)
    arrays = read_figures(tmp_path / "figures.npz")
    assert list(arrays["traversal_labels"]) == ["z0", "z1", "z2"] and arrays["traversal"].shape == (3, 3, 1, 8, 8)


def _provenance_rows() -> pd.DataFrame:
    """Two methods, two seeds: ae trains (final_loss, train_images_per_s rows), tiny-pca has no training loop."""
    out = []
    for method in ("ae", "tiny-pca"):
        for seed in (0, 1):
            base = {"dataset": "d", "method": method, "config_id": "c", "seed": seed, "n_seeds_planned": 2,
                    "status": "ok", "profile": "smoke", "preset": "tiny", "git_commit": "abc123456789def0",
                    "packages": '{"torch": "2.5.1"}', "device": "cpu", "model_id": f"{method}{seed}"}
            out.append({**base, "metric": "dci_disentanglement", "value": 0.2 + seed / 10,
                        "metric_params": '{"num_test": 30, "num_train": 60}'})
            out.append({**base, "metric": "tad_fold_std", "value": 0.01 * (seed + 1), "metric_params": "{}"})
            if method == "ae":
                out += [{**base, "metric": "final_loss", "value": 0.5, "metric_params": "{}"},
                        {**base, "metric": "train_images_per_s", "value": 100.0, "metric_params": "{}"}]
    return pd.DataFrame(out)


def test_leaderboard_md_and_csv_say_where_the_numbers_come_from(tmp_path):
    """Profile, preset, commit, packages and metric parameters, a reduced sample size named as such."""
    rows = _provenance_rows()
    board = leaderboard(rows)
    md = leaderboard_markdown(board, rows)
    head = md.split("| dataset")[0]
    for needle in ("profile smoke", "preset tiny", "git commit abc1234567", "torch=2.5.1", "num_train=60",
                   "num_train 60 is below the study default 10,000", "num_test 30 is below the study default 5,000"):
        assert needle in head, needle
    board.to_csv(tmp_path / "leaderboard.csv", index=False)
    csv = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    assert csv.loc["ae", "profile"] == "smoke" and csv.loc["ae", "preset"] == "tiny"
    assert str(csv.loc["ae", "git_commit"]) == "abc123456789def0" and "torch=2.5.1" in csv.loc["ae", "packages"]
    import json

    assert json.loads(csv.loc["ae", "metric_params"]) == {"dci": {"num_test": 30, "num_train": 60}, "tad": {}}
    assert "dci.num_train 60 < 10,000" in csv.loc["ae", "below_study_default"]


def test_a_method_without_a_training_loop_shows_na_diagnostics_and_spreads_are_not_ranked():
    from bench.site import _leaderboard_section

    rows = _provenance_rows()
    board = leaderboard(rows)
    md = leaderboard_markdown(board, rows)
    diagnostics = md.split("## Training diagnostics")[1]
    pca = next(line for line in diagnostics.splitlines() if "| tiny-pca |" in line)
    assert pca.count("n/a") == 2 and "seeds)" not in pca
    table = md.split("\n\n")[[i for i, p in enumerate(md.split("\n\n")) if p.startswith("| dataset")][0]]
    header = table.splitlines()[0]
    assert "dci_disentanglement ↑" in header and "| tad_fold_std |" in header  # a spread has no direction
    assert not any("**" in cell for line in table.splitlines()[2:] for cell in line.split("|")[-2:-1])  # nor a best
    page = _leaderboard_section(board, rows)
    diag = page.split("id=diagnostics")[1]
    assert "n/a" in diag and "of 2 seeds" not in diag
    assert "data-metric='tad_fold_std'>" in page and "data-metric='tad_fold_std' data-direction" not in page
    assert "below the study default 10,000" in page


def _texts_outside(fig) -> list[str]:
    """The visible texts whose rendered extent leaves the figure (a cut-off label or title)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    undrawn = set()  # tick labels of ticks outside the view limits exist but are not drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                    undrawn |= {id(tick.label1), id(tick.label2)}
    out = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        ext = text.get_window_extent(renderer)
        if ext.x0 < box.x0 - 1 or ext.y0 < box.y0 - 1 or ext.x1 > box.x1 + 1 or ext.y1 > box.y1 + 1:
            out.append(text.get_text())
    return out


def _legends_over_data(fig) -> list[str]:
    """Legends whose box overlaps an axes' data area (covering bars or lines)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        for legend in [ax.get_legend(), *fig.legends]:
            if legend is not None and legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)):
                out.append(ax.get_title())
    return out


def _metric_rows(methods, datasets, metric="dci_informativeness") -> pd.DataFrame:
    return pd.DataFrame([{"dataset": d, "method": m, "config_id": "c", "seed": s, "metric": metric,
                          "value": 0.5 + 0.1 * s + 0.05 * i, "status": "ok"}
                         for i, m in enumerate(methods) for d in datasets for s in (0, 1)])


def test_report_figures_keep_every_label_and_title_inside_and_legends_off_the_data():
    """The traversal's long row labels and title, a metric plot of two methods and the per-t probe plot:
    nothing is cut at the figure's edge and no legend covers bars or lines."""
    import matplotlib.pyplot as plt

    from bench.report import metric_figure, probe_t_figure, traversal_figure

    trav = np.zeros((4, 7, 1, 16, 16), np.float32)
    labels = ["z0 · orientation |r| 0.85", "z1 · position_x |r| 0.91", "z2 · scale |r| 0.40", "z3"]
    figures = {"traversal": traversal_figure(trav, labels, "beta-vae"),
               "metric, 2 methods": metric_figure(_metric_rows(["beta-vae", "infodiffusion"], ["d"]), "dci_informativeness"),
               "metric, 2 datasets": metric_figure(_metric_rows(["ae", "beta-vae"], ["dsprites-procedural-32", "tiny-bars"]),
                                                   "factorvae")}
    per_t = pd.concat([_metric_rows(["drl"], ["fmnist"], f"probe_mlp_t{t}") for t in ("0.0", "0.5", "1.0")]
                      + [_metric_rows(["ae"], ["fmnist"], "probe_mlp")])
    figures["probe against t"] = probe_t_figure("fmnist", per_t)
    try:
        for name, fig in figures.items():
            assert _texts_outside(fig) == [], name
        for name in ("metric, 2 datasets", "probe against t"):
            fig = figures[name]
            assert any(ax.get_legend() is not None for ax in fig.axes), name
            assert _legends_over_data(fig) == [], name
    finally:
        for fig in figures.values():
            plt.close(fig)
