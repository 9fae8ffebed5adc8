"""`bench score`: codes files, the table-backed datasets, every malformed-file error, --json."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from bench.metrics.suite import factor_suite
from bench.codes_file import CodesFileError, load_codes_file, validate_codes
from bench.codes_table import TableFactorDataset, covers_full_grid
from bench.score import add_parser, parse_params, plan_metrics, run, score_codes

SMALL = dict(num_train=400, num_test=200, n_jobs=1)
SMALL_PARAMS = {
    "betavae": {"num_train": 200, "num_eval": 100, "batch_size": 8},
    "factorvae": {"num_train": 200, "num_eval": 100, "num_variance_estimate": 300, "batch_size": 8},
}


def _projection_encoder():
    """A fixed linear map of the pixels: a per-image representation like a trained encoder's."""
    weights = np.random.RandomState(5).randn(256, 3)
    return lambda images: images.reshape(len(images), -1) @ weights


def _grid_table(tiny_data, shuffle_seed: int = 0):
    encode = _projection_encoder()
    everything = np.arange(len(tiny_data))
    codes, factors = encode(tiny_data.images(everything)), tiny_data.factors(everything)
    order = np.random.RandomState(shuffle_seed).permutation(len(codes))  # file order is irrelevant
    return encode, {"codes": codes[order], "factors": factors[order]}


def test_full_grid_table_scores_like_the_dataset_it_came_from(tiny_data):
    encode, table = _grid_table(tiny_data)
    metrics = ["betavae", "factorvae", "mig", "dci", "unsupervised"]
    got = score_codes(validate_codes(table), metrics, 3, params=SMALL_PARAMS, **SMALL)
    direct = factor_suite(tiny_data, encode, 3, metrics=metrics, num_train=400, num_test=200, n_jobs=1, params=SMALL_PARAMS)
    assert set(got) == {"betavae", "factorvae", "mig", "dci_disentanglement", "dci_completeness",
                        "dci_informativeness", "gaussian_tc", "mutual_info"}
    for name, value in got.items():
        assert value == pytest.approx(direct[name], abs=1e-12), name


def test_identity_table_scores_high():
    sizes = (3, 4, 5)
    factors = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, 3)
    factors = np.repeat(factors, 2, axis=0)  # two rows per grid cell: one is drawn at random
    codes = factors.astype(np.float64) + 0.01 * np.random.RandomState(0).randn(*factors.shape)
    out = score_codes(
        {"codes": codes, "factors": factors}, ["betavae", "factorvae", "mig", "dci_disentanglement"], 0,
        params=SMALL_PARAMS, **SMALL,
    )
    for name, value in out.items():
        assert 0.9 <= value <= 1.0, (name, value)


def test_table_dataset_maps_cells_to_rows():
    factors = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    ds = TableFactorDataset(factors * 7)  # classes {0, 7} are renumbered to {0, 1}
    assert ds.factor_sizes == (2, 2)
    rows = ds.sample_observations_from_factors(np.array([[0, 0], [1, 1], [0, 1]]), np.random.RandomState(0))
    np.testing.assert_array_equal(rows.reshape(-1), [2, 3, 1])
    with pytest.raises(ValueError, match="3 of 4 grid cells"):
        TableFactorDataset(factors[:3])


def test_partial_grid_uses_a_random_split_and_no_sampling_metrics(tiny_data):
    _, table = _grid_table(tiny_data)
    table = {k: np.concatenate([v[1:]] * 10) for k, v in table.items()}  # 150 rows, one cell missing
    data = validate_codes(table, "part.npz")
    full, why = covers_full_grid(data["factors"])
    assert not full and "15 of the 16" in why
    plan = plan_metrics(data)
    assert "betavae" in plan.unavailable and "mig" in plan.outputs
    out = score_codes(data, ["mig", "sap", "dci", "modularity_explicitness", "irs"], 0, n_jobs=1)
    assert set(out) == {"mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness",
                        "modularity", "explicitness", "irs"}
    assert all(np.isfinite(v) for v in out.values())
    with pytest.raises(ValueError, match="betavae cannot be computed: .*full factorial grid"):
        score_codes(data, ["betavae"], 0)


def test_attributes_labels_and_codes_only():
    rs = np.random.RandomState(0)
    attributes = (rs.rand(300, 3) < 0.5).astype(np.int64)
    labels = rs.randint(0, 3, size=300)
    codes = np.concatenate([attributes + 0.05 * rs.randn(300, 3), np.eye(3)[labels] + 0.05 * rs.randn(300, 3)], 1)
    data = validate_codes({"codes": codes, "attributes": attributes, "labels": labels})
    out = score_codes(data, seed=0, n_jobs=1)
    assert list(out) == ["gaussian_tc", "mutual_info", "tad", "tad_attributes", "auroc", "latent_accuracy"]
    assert out["tad_attributes"] == 3.0 and out["auroc"] > 0.99 and out["latent_accuracy"] == 1.0
    only_codes = score_codes({"codes": codes}, None, 0)
    assert list(only_codes) == ["gaussian_tc", "mutual_info"]
    infodiff = score_codes(data, ["tad"], 0, params={"tad": {"variant": "infodiffusion"}})
    assert infodiff["tad_attributes"] == 3.0
    with pytest.raises(ValueError, match="needs key 'factors'"):
        score_codes(data, ["mig"], 0)
    with pytest.raises(ValueError, match="unknown metric 'tda'.*did you mean 'tad'"):
        score_codes(data, ["tda"], 0)


def _save(tmp_path, **arrays):
    path = tmp_path / "codes.npz"
    np.savez(path, **arrays)
    return path


GOOD = np.random.RandomState(1).rand(6, 2)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"factors": np.zeros((6, 1), int)}, "missing key 'codes'"),
        ({"codes": GOOD, "factor": np.zeros((6, 1), int)}, "unknown key 'factor' .*did you mean 'factors'"),
        ({"codes": GOOD.astype(int)}, "'codes' must be a float array, got dtype int64"),
        ({"codes": GOOD[:, 0]}, r"'codes' must have shape \(N, D\).*got \(6,\)"),
        ({"codes": np.where(np.arange(12).reshape(6, 2) == 5, np.nan, GOOD)}, "1 NaN or infinite .*row 2, column 1"),
        ({"codes": GOOD, "factors": np.zeros((6, 1))}, "'factors' must be integer class indices.*float64.*np.unique"),
        ({"codes": GOOD, "factors": -np.ones((6, 1), int)}, "'factors' must be class indices >= 0"),
        ({"codes": GOOD, "factors": np.zeros((5, 1), int)}, r"'factors' must be class indices \(N x K\) with N = 6"),
        ({"codes": GOOD, "factors": np.zeros(6, int)}, r"'factors' .*got shape \(6,\)"),
        ({"codes": GOOD, "attributes": -np.ones((6, 2), int)}, r"'attributes' must hold only 0 and 1, found \[-1\].*-1/1"),
        ({"codes": GOOD, "attributes": np.zeros((6,), int)}, r"'attributes' must be a binary \(N x A\)"),
        ({"codes": GOOD, "labels": np.zeros(6)}, "'labels' must be integer class labels"),
        ({"codes": GOOD, "labels": np.zeros((6, 1), int)}, r"'labels' .*got shape \(6, 1\)"),
        ({"codes": GOOD, "factors": np.zeros((6, 2), int), "factor_names": np.array(["a"])}, "'factor_names' must be 2 strings"),
        ({"codes": GOOD, "factor_names": np.array(["a"])}, "'factor_names' given without 'factors'"),
    ],
)
def test_malformed_files_name_the_file_and_key(tmp_path, arrays, message):
    path = _save(tmp_path, **arrays)
    with pytest.raises(CodesFileError, match=message) as info:
        load_codes_file(path)
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such codes file"):
        load_codes_file(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not numpy")
    with pytest.raises(CodesFileError, match="not a NumPy .npz archive"):
        load_codes_file(text)
    single = tmp_path / "single.npy"
    np.save(single, GOOD)
    with pytest.raises(CodesFileError, match="single array"):
        load_codes_file(single)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, codes=GOOD, labels=np.array([object()] * 6))
    with pytest.raises(CodesFileError, match="'labels' cannot be read without pickle"):
        load_codes_file(pickled)


def test_good_file_round_trip(tmp_path):
    path = _save(tmp_path, codes=GOOD.astype(np.float32), factors=np.arange(6).reshape(6, 1) % 2,
                 factor_names=np.array(["parity"]), attributes=np.ones((6, 1), bool), labels=np.arange(6, dtype=np.uint8))
    data = load_codes_file(path)
    assert data["codes"].dtype == np.float64 and data["factors"].dtype == np.int64
    assert data["factor_names"] == ["parity"] and data["attributes"].dtype == np.int64
    assert data["source"] == str(path)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_json_output_is_one_object(tmp_path, capsys):
    rs = np.random.RandomState(0)
    path = _save(tmp_path, codes=rs.randn(50, 3), labels=rs.randint(0, 2, 50))
    assert run(_cli(["score", str(path), "--json", "--seed", "1"])) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1
    values = json.loads(lines[0])
    assert list(values) == ["gaussian_tc", "mutual_info", "latent_accuracy"]
    assert values["latent_accuracy"] == score_codes(load_codes_file(path), ["latent_accuracy"], 1)["latent_accuracy"]
    assert "betavae: not computed: needs key 'factors'" in captured.err


def test_metrics_option_and_plain_output(tmp_path, capsys):
    path = _save(tmp_path, codes=np.random.RandomState(0).randn(40, 2))
    run(_cli(["score", str(path), "--metrics", "gaussian_tc"]))
    out = capsys.readouterr().out
    assert out.startswith("gaussian_tc") and "mutual_info" not in out
    with pytest.raises(ValueError, match="needs key 'attributes'"):
        run(_cli(["score", str(path), "--metrics", "tad"]))


def test_param_option_sets_a_metric_variant_and_sample_sizes(tmp_path, capsys):
    rs = np.random.RandomState(0)
    attributes = (rs.rand(200, 3) < 0.5).astype(np.int64)
    path = _save(tmp_path, codes=attributes + 0.05 * rs.randn(200, 3), attributes=attributes)
    assert run(_cli(["score", str(path), "--metrics", "tad", "--json", "--param", "tad.variant=infodiffusion"])) == 0
    via_cli = json.loads(capsys.readouterr().out)
    direct = score_codes(load_codes_file(path), ["tad"], 0, params={"tad": {"variant": "infodiffusion"}})
    assert via_cli == direct
    assert parse_params(["factorvae.num_train=500", "tad.variant=nashae"]) == {
        "factorvae": {"num_train": 500}, "tad": {"variant": "nashae"}}
    with pytest.raises(ValueError, match="expected METRIC.KEY=VALUE"):
        parse_params(["tad=infodiffusion"])
    with pytest.raises(ValueError, match="unknown metric 'tda'.*did you mean 'tad'"):
        parse_params(["tda.variant=x"])
    with pytest.raises(ValueError, match="unknown parameter.*did you mean 'num_train'"):
        parse_params(["factorvae.num_trian=5"])
    with pytest.raises(ValueError, match="must be int"):
        parse_params(["factorvae.num_train=many"])


def test_options_score_cannot_set_are_refused_before_the_file_is_read(tmp_path):
    missing = tmp_path / "never-read.npz"
    for item, message in [("dci.num_train=100", "cannot set 'num_train' for dci.*--num-train"),
                          ("mig.representation=sampled", "one representation")]:
        with pytest.raises(ValueError, match=message):
            run(_cli(["score", str(missing), "--param", item]))
    with pytest.raises(ValueError, match="--num-train 1"):
        run(_cli(["score", str(missing), "--num-train", "1"]))


def test_table_sizes_are_set_on_the_command_line(tmp_path, tiny_data, capsys):
    _, table = _grid_table(tiny_data)
    partial = {k: np.concatenate([v[1:]] * 10) for k, v in table.items()}  # not the full grid: a random split
    path = _save(tmp_path, **partial)
    run(_cli(["score", str(path), "--metrics", "mig", "--json", "--num-train", "40", "--num-test", "20"]))
    small = json.loads(capsys.readouterr().out)
    direct = score_codes(load_codes_file(path), ["mig"], 0, num_train=40, num_test=20)
    assert small == direct and small != score_codes(load_codes_file(path), ["mig"], 0)


def test_a_requested_metric_the_table_cannot_give_keeps_its_row_and_the_others_are_computed(tmp_path, tiny_data,
                                                                                             capsys):
    _, table = _grid_table(tiny_data)
    partial = {k: np.concatenate([v[1:]] * 10) for k, v in table.items()}
    path = _save(tmp_path, **partial)
    assert run(_cli(["score", str(path), "--metrics", "factorvae,mig", "--json"])) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["factorvae"] is None and np.isfinite(out["mig"])
    assert "factorvae: not computed: needs observations with a factor held fixed" in captured.err


def test_score_prints_progress_on_stderr_and_the_json_says_why_a_metric_is_missing_once(tmp_path, tiny_data, capsys):
    """Plain progress lines (no terminal under pytest), stdout stays one JSON object; a requested metric the
    table cannot give is null with its reason under "reasons", and the reason is printed once on stderr."""
    _, table = _grid_table(tiny_data)
    partial = {k: np.concatenate([v[1:]] * 10) for k, v in table.items()}
    path = _save(tmp_path, **partial)
    assert run(_cli(["score", str(path), "--metrics", "factorvae,mig,sap", "--json"])) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["factorvae"] is None and out["reasons"]["factorvae"].startswith("needs observations with a factor held fixed")
    assert set(out["reasons"]) == {"factorvae"}
    assert captured.err.count("factorvae: not computed") == 1
    lines = captured.err.splitlines()
    assert any(line.startswith("bench score: [1/2] mig") for line in lines)
    assert any(line.startswith("bench score: [2/2] sap") for line in lines)
    assert any(line.startswith("bench score: done in") for line in lines) and "\r" not in captured.err
    assert {k: v for k, v in out.items() if k != "reasons"} == {
        k: (None if np.isnan(v) else v) for k, v in score_codes(load_codes_file(path), ["mig", "sap"], 0).items()} | {
        "factorvae": None}  # one group at a time gives the values of the groups together
    run(_cli(["score", str(path), "--metrics", "mig", "--json", "--no-progress"]))
    assert "bench score: [" not in capsys.readouterr().err


def test_progress_lines_do_not_change_the_values_on_a_full_grid(tiny_data):
    _, table = _grid_table(tiny_data)
    metrics, lines = ["betavae", "factorvae", "mig", "dci"], []
    together = score_codes(validate_codes(table), metrics, 3, params=SMALL_PARAMS, **SMALL)
    assert score_codes(validate_codes(table), metrics, 3, params=SMALL_PARAMS, progress=lines.append, **SMALL) == together
    assert lines == ["[1/4] betavae", "[2/4] factorvae", "[3/4] mig", "[4/4] dci"]
