"""One real dataset end to end: the original Fashion-MNIST idx files from Debian's package.

``apt-get install dataset-fashion-mnist`` puts Zalando's four gzipped idx files under
/usr/share/datasets/fashion-mnist/ (recompressed: the gzip bytes differ from Zalando's, the
content is identical, which ``bench data verify`` confirms with the content md5s). The
data root is a temporary folder holding a link to that directory, so the caches are written
there and not into /usr/share.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from bench import registry
from bench.data import root as data_root_module

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")

pytestmark = pytest.mark.skipif(
    not all((DEBIAN_DIR / f).is_file() for f in FILES),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "fashion-mnist").symlink_to(DEBIAN_DIR)
    data_root_module.set_data_root(folder)
    yield folder
    data_root_module.set_data_root(None)


def test_counts_class_balance_and_pixel_statistics(root):
    train = registry.datasets().create("fashion-mnist")
    test = registry.datasets().create("fashion-mnist", split="test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.image_shape == (1, 28, 28)
    np.testing.assert_array_equal(np.bincount(train.labels(np.arange(60_000))), [6_000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels(np.arange(10_000))), [1_000] * 10)
    pixels = train.pixels()
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    # The widely quoted normalisation constants of Fashion-MNIST's training set: mean 0.2860, std 0.3530.
    mean = pixels.mean(dtype=np.float64) / 255
    std = pixels.std(dtype=np.float64) / 255
    assert abs(mean * 255 - 72.94) < 0.01 and abs(mean - 0.2860) < 5e-4
    assert abs(std - 0.3530) < 5e-4
    assert abs(test.pixels().mean(dtype=np.float64) / 255 - 0.2868) < 5e-4
    # first training item: label 9 (ankle boot) in the official file order
    assert train.labels([0])[0] == 9 and train.class_names[9] == "Ankle boot"


def test_padded_variant_matches(root):
    x28 = registry.datasets().create("fashion-mnist").images([0, 59_999])
    x32 = registry.datasets().create("fashion-mnist-32").images([0, 59_999])
    np.testing.assert_array_equal(x32[:, :, 2:30, 2:30], x28)
    assert x32.sum() == x28.sum()


def test_bench_data_verify_passes_on_the_real_files(root, capsys):
    from bench.data.cli import add_parser, run

    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    assert run(parser.parse_args(["data", "--root", str(root), "verify", "fashion-mnist"])) == 0
    out = capsys.readouterr().out
    assert out.count("content md5 ok") == 4
    assert "items: 60,000   image: 1x28x28   values: [0.000, 1.000]" in out
    assert "T-shirt/top 6,000" in out and "fashion-mnist: OK" in out


def test_the_debian_location_is_found_with_an_empty_data_root(tmp_path):
    data_root_module.set_data_root(tmp_path)
    try:
        ds = registry.datasets().create("fashion-mnist", split="test")
        assert len(ds) == 10_000 and ds.labels([0])[0] == 9  # first test item: an ankle boot
        assert ds.pixels().shape == (10_000, 1, 28, 28)
        assert (tmp_path / "cache" / "fashion-mnist-28px-v1.npy").exists()  # the cache goes to the data root
        assert not (DEBIAN_DIR.parent / "cache").exists()
    finally:
        data_root_module.set_data_root(None)
