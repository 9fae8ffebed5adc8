"""Published values beside measured ones: matched by setting and protocol, never filling a missing value."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench import reported
from bench.report import leaderboard, leaderboard_markdown


def _rows(values: list[float | None], *, latent_dim: int = 32, variant: str = "infodiffusion",
          protocol: str = "infodiffusion", planned: int = 2):
    """Result rows of one PDAE setting on celeba-d2c: a ``tad`` row per seed (None = that seed failed)."""
    out = []
    for seed, value in enumerate(values):
        out.append({
            "dataset": "celeba-d2c", "method": "pdae", "config_id": f"cfg{latent_dim}{variant}{protocol}", "seed": seed,
            "n_seeds_planned": planned, "role": "model", "metric": "tad",
            "value": np.nan if value is None else value, "status": "failed" if value is None else "ok",
            "params": json.dumps({"latent_dim": latent_dim}),
            "metric_params": json.dumps({"variant": variant, "protocol": protocol}),
        })
    return pd.DataFrame(out)


def test_the_shipped_file_is_valid_and_holds_the_papers_tables():
    table = reported.load()
    assert {"InfoDiffusion (Wang et al. 2023)", "EncDiff (Yang et al. 2024)"} <= set(table["paper"])
    pdae = table[(table["method"] == "pdae") & (table["metric"] == "tad")]
    assert pdae["mean"].tolist() == [0.009] and pdae["std"].tolist() == [0.001]
    assert pdae["match"].iloc[0] == {"latent_dim": 32}


def test_a_published_value_never_fills_a_missing_measured_one():
    rows = _rows([0.02, None])  # one of two seeds failed: the setting is incomplete
    board = reported.attach(leaderboard(rows), rows, reported.load())
    line = board.iloc[0]
    assert np.isnan(line["tad_mean"]) and line["tad_reported"] == 0.009 and np.isnan(line["tad_diff"])
    row = next(line for line in leaderboard_markdown(board).splitlines() if line.startswith("| celeba-d2c"))
    cell = row.split("|")[-2].strip()
    assert cell.startswith("— (1 seeds)") and "published 0.009 ± 0.001" in cell and "Δ" not in cell


def test_a_complete_setting_shows_the_difference():
    rows = _rows([0.02, 0.04])
    board = reported.attach(leaderboard(rows), rows, reported.load())
    line = board.iloc[0]
    assert line["tad_mean"] == pytest.approx(0.03) and line["tad_diff"] == pytest.approx(0.021)
    assert "0.030 ± 0.014 (published 0.009 ± 0.001, Δ +0.021)" in leaderboard_markdown(board)


@pytest.mark.parametrize("other", [{"latent_dim": 512}, {"variant": "nashae"}, {"protocol": "random"}])
def test_another_setting_or_protocol_gets_no_published_value(other):
    rows = _rows([0.02, 0.04], **other)
    board = reported.attach(leaderboard(rows), rows, reported.load())
    assert "tad_reported" not in board and "published" not in leaderboard_markdown(board)
    table = reported.reproduction_table(board, rows, reported.load())
    pdae = table[(table["method"] == "pdae") & (table["metric"] == "tad")].iloc[0]
    assert np.isnan(pdae["measured"]) and pdae["status"].startswith("not the same setting")


def test_reproduction_table_says_what_was_measured_and_what_cannot_run():
    rows = _rows([0.02, 0.04])
    board = reported.attach(leaderboard(rows), rows, reported.load())
    table = reported.reproduction_table(board, rows, reported.load())
    tad = table[(table["method"] == "pdae") & (table["metric"] == "tad")].iloc[0]
    assert tad["status"] == "measured" and tad["diff"] == pytest.approx(0.021)
    disdiff = table[(table["method"] == "disdiff") & (table["dataset"] == "shapes3d")]
    assert disdiff["status"].str.startswith("not run in this grid").all()
    text = reported.reproduction_markdown(table)
    assert "## InfoDiffusion (Wang et al. 2023) — Table 6 (1 of 3 values measured here)" in text


def test_a_malformed_line_names_the_file_line_and_column(tmp_path):
    lines = reported.PAPERS.read_text().splitlines()
    bad = tmp_path / "papers.csv"
    bad.write_text("\n".join([lines[0], lines[1].replace(",0.819,", ",high,")]) + "\n")
    with pytest.raises(ValueError, match=r"papers.csv, line 2: column 'mean' must be a number, got 'high'"):
        reported.load(bad)
    bad.write_text("paper,table\nx,y\n")
    with pytest.raises(ValueError, match="missing columns"):
        reported.load(bad)


def test_reproduction_md_is_written_only_for_a_grid_with_a_published_counterpart(tmp_path):
    from bench.report import regenerate
    from bench.results import write_csv_atomic

    rows = _rows([0.02, 0.04])  # PDAE on celeba-d2c: InfoDiffusion's Table 6 has it
    write_csv_atomic(rows, tmp_path / "results.csv")
    regenerate(tmp_path)
    text = (tmp_path / "reproduction.md").read_text()
    assert "Table 6" in text and "EncDiff" not in text  # only the paper tables this grid touches
    other = rows.assign(dataset="tiny-bars", method="ae")  # nothing published for it
    write_csv_atomic(other, tmp_path / "results.csv")
    regenerate(tmp_path)
    assert not (tmp_path / "reproduction.md").exists()
