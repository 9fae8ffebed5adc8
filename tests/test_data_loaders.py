"""Every file-backed dataset, loaded through the registry from small files in the official format.

The official grids are large (737,280 dSprites, 480,000 Shapes3D images, ...); the tests
shrink the class-level factor sizes with ``monkeypatch`` and write files of exactly that
reduced size, so the loaders' real parsing, validation, reordering and caching code runs.
Then: bad data — truncated files, wrong keys, wrong shapes, missing files — each must give
its clear error at construction (or, for content damage, at the first decode).
"""

from __future__ import annotations

import dataclasses
import gzip

import numpy as np
import pytest

import official_formats as fmt
from bench import registry
from bench.data import root as data_root_module
from bench.data import sources
from bench.data.files import CorruptDatasetError, DatasetFilesMissing


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty data root for one test (caches go to <root>/cache), blind to system-wide copies."""
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    for key, source in sources.SOURCES.items():  # e.g. Debian's /usr/share/datasets/fashion-mnist
        files = tuple(dataclasses.replace(f, names=tuple(n for n in f.names if not n.startswith("/")))
                      for f in source.files)
        monkeypatch.setitem(sources.SOURCES, key, dataclasses.replace(source, files=files))
    data_root_module.set_data_root(tmp_path)
    yield tmp_path
    data_root_module.set_data_root(None)


def create(name: str, **kwargs):
    return registry.datasets().create(name, **kwargs)


# -- MNIST / Fashion-MNIST -------------------------------------------------------------------------


@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("fashion-mnist", "fashion-mnist")])
def test_idx_datasets_load_both_splits_gzipped_and_raw(root, name, folder):
    arrays = fmt.write_mnist(root, folder)
    ds = create(name)
    assert len(ds) == 20 and ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    x = ds.images(np.arange(20))
    assert x.dtype == np.float32 and x.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(np.rint(x[:, 0] * 255).astype(np.uint8), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.labels(np.arange(20)), arrays["train-labels-idx1-ubyte"])
    test = create(name, split="test")
    assert len(test) == 10
    np.testing.assert_array_equal(np.rint(test.images([3])[0, 0] * 255), arrays["t10k-images-idx3-ubyte"][3])
    np.testing.assert_array_equal(test.labels([0, 9]), arrays["t10k-labels-idx1-ubyte"][[0, 9]])
    assert len(create(name, split="all")) == 30


def test_padded_32_variant_keeps_the_image_and_adds_zero_borders(root):
    arrays = fmt.write_mnist(root)
    ds = create("mnist-32")
    assert ds.name == "mnist-32" and ds.image_shape == (1, 32, 32)
    x = np.rint(ds.images(np.arange(20))[:, 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(x[:, 2:30, 2:30], arrays["train-images-idx3-ubyte"])
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (x[:, border] == 0).all()


def test_cache_is_built_once_and_rebuilt_when_a_source_changes(root):
    fmt.write_mnist(root)
    first = create("mnist").pixels()
    cache = root / "cache" / "mnist-28px-v1.npy"
    assert cache.exists() and isinstance(first, np.memmap)
    stamp = cache.stat().st_mtime_ns
    create("mnist").pixels()
    assert cache.stat().st_mtime_ns == stamp  # reused, not rebuilt
    arrays = fmt.write_mnist(root, n_train=20)  # same content, new mtime -> rebuilt
    again = create("mnist").pixels()
    np.testing.assert_array_equal(again[:, 0], arrays["train-images-idx3-ubyte"])


# -- CIFAR-10 ------------------------------------------------------------------------------------------


def test_cifar10_reads_the_pickled_batches_in_order(root):
    rows = fmt.write_cifar10(root, per_batch=4)
    ds = create("cifar10")
    assert len(ds) == 20 and ds.image_shape == (3, 32, 32)
    x = np.rint(ds.images(np.arange(20)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(x.reshape(20, 3072), rows[:20])
    assert (x[:, 0] == np.arange(20)[:, None, None]).all()  # red plane = item number
    assert x[3, 2, 0, 5] == 200 and x[3, 2, 0, 4] == 0  # blue plane, pixel (0, 5)
    np.testing.assert_array_equal(ds.labels([0, 1, 4]), [0, 1, 1])
    test = create("cifar10", split="test")
    assert len(test) == 4 and (np.rint(test.images([2])[0, 0] * 255) == 22).all()
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"


def test_cifar10_refuses_a_pickle_that_would_run_code(root):
    fmt.write_cifar10(root)
    batch = root / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a classic malicious pickle
    with pytest.raises(CorruptDatasetError, match=r"data_batch_2.*refusing to load os.system"):
        create("cifar10")


# -- dSprites ------------------------------------------------------------------------------------------


@pytest.fixture
def small_dsprites(monkeypatch):
    from bench.data.dsprites_npz import DSprites

    monkeypatch.setattr(DSprites, "factor_sizes", (3, 2, 2, 1, 2))
    return (3, 2, 2, 1, 2)


def test_dsprites_npz_loads_with_the_colour_factor_dropped(root, small_dsprites):
    fmt.write_dsprites(root, small_dsprites)
    ds = create("dsprites")
    assert ds.factor_names == ("shape", "scale", "orientation", "posX", "posY") and len(ds) == 24
    x = ds.images(np.arange(24))
    assert set(np.unique(x)) == {0.0, 1.0} and x.shape == (24, 1, 64, 64)
    np.testing.assert_array_equal(x[:, 0, 0, :].sum(axis=1), np.arange(1, 25))  # item i lights i + 1 pixels
    factors, obs = ds.sample(5, np.random.RandomState(0))
    np.testing.assert_array_equal(obs[:, 0, 0, :].sum(axis=1) - 1, ds.index_of(factors))


def test_dsprites_rows_out_of_the_official_order_are_rejected_at_first_decode(root, small_dsprites):
    classes = fmt.grid(small_dsprites)[::-1]
    fmt.write_dsprites(root, small_dsprites, latents_classes=np.concatenate([np.zeros((24, 1), int), classes], axis=1))
    ds = create("dsprites")
    with pytest.raises(CorruptDatasetError, match="not the official item order"):
        ds.images([0])


def test_dsprites_wrong_key_and_wrong_shape(root, small_dsprites):
    fmt.write_dsprites(root, small_dsprites, latents_classes=None)
    with pytest.raises(CorruptDatasetError, match=r"missing array\(s\) latents_classes"):
        create("dsprites")
    fmt.write_dsprites(root, small_dsprites, imgs=np.zeros((24, 32, 32), np.uint8))
    with pytest.raises(CorruptDatasetError, match=r"'imgs' is \(24, 32, 32\) uint8; expected \(24, 64, 64\) uint8"):
        create("dsprites")


def test_dsprites_truncated_download(root, small_dsprites):
    path = fmt.write_dsprites(root, small_dsprites)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptDatasetError, match="not a readable .npz archive — truncated download"):
        create("dsprites")


# -- Shapes3D ------------------------------------------------------------------------------------------


@pytest.fixture
def small_shapes3d(monkeypatch):
    from bench.data.shapes3d import Shapes3D

    sizes = (2, 2, 1, 2, 2, 3)
    monkeypatch.setattr(Shapes3D, "factor_sizes", sizes)
    return sizes


def test_shapes3d_h5_factors_from_label_values(root, small_shapes3d):
    fmt.write_shapes3d(root, small_shapes3d)
    ds = create("shapes3d")
    assert len(ds) == 48 and ds.image_shape == (3, 64, 64)
    x = np.rint(ds.images(np.arange(48)) * 255)
    np.testing.assert_array_equal(x[:, 0, 0, 0], np.arange(48))  # NHWC file -> NCHW images
    assert (x[:, 2] == 7).all()
    np.testing.assert_allclose(ds.factor_values([47])[0], [0.1, 0.1, 0.0, 0.75 + 0.5 / 7, 1.0, -30 + 2 * 60 / 14], atol=1e-12)
    f, obs = ds.sample_with_fixed_factor(6, 5, np.random.RandomState(1))
    assert (f[:, 5] == f[0, 5]).all()
    np.testing.assert_array_equal(np.rint(obs[:, 0, 0, 0] * 255), ds.index_of(f))


def test_shapes3d_errors(root, small_shapes3d):
    fmt.write_shapes3d(root, small_shapes3d, shuffle=True)
    with pytest.raises(CorruptDatasetError, match="rows are not in the official order"):
        create("shapes3d")
    fmt.write_shapes3d(root, small_shapes3d, images_key="imgs")
    with pytest.raises(CorruptDatasetError, match=r"3dshapes.h5: no dataset 'images' \(found imgs, labels\)"):
        create("shapes3d")
    fmt.write_shapes3d(root, small_shapes3d, side=32)
    with pytest.raises(CorruptDatasetError, match=r"'images' is \(48, 32, 32, 3\) uint8; expected \(48, 64, 64, 3\)"):
        create("shapes3d")
    path = fmt.write_shapes3d(root, small_shapes3d)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(CorruptDatasetError, match="not a readable HDF5 file — truncated"):
        create("shapes3d")


# -- MPI3D ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_mpi3d(monkeypatch):
    from bench.data import mpi3d

    monkeypatch.setattr(mpi3d, "RELEASED_SIZES", (2, 2, 1, 1, 1, 2, 3))
    monkeypatch.setattr(mpi3d, "DLIB_SIZES", (1, 2, 1, 1, 1, 2, 3))
    return 24, 12


@pytest.mark.parametrize("variant", ["toy", "realistic", "real"])
def test_mpi3d_released_is_memory_mapped_in_place(root, small_mpi3d, variant):
    fmt.write_mpi3d(root, f"mpi3d/mpi3d_{variant}.npz", small_mpi3d[0])
    ds = create(f"mpi3d-{variant}")
    assert len(ds) == 24 and ds.factor_sizes == (2, 2, 1, 1, 1, 2, 3) and ds.pixel_layout == "NHWC"
    assert isinstance(ds.pixels(), np.memmap) and not (root / "cache").exists()  # nothing copied
    x = np.rint(ds.images([5, 23, 0]) * 255)
    np.testing.assert_array_equal(x[:, 0, 0, 0], [5, 23, 0])
    assert (x[:, 2, 10:20, 30:40] == 50).all() and x[0, 2, 0, 0] == 0


def test_mpi3d_dlib_version_and_version_mixups(root, small_mpi3d):
    fmt.write_mpi3d(root, "mpi3d_toy/mpi3d_toy.npz", small_mpi3d[1], compressed=True)
    ds = create("mpi3d-toy-dlib")
    assert len(ds) == 12 and ds.version.startswith("dlib-") and ds.pixel_layout == "NCHW"
    np.testing.assert_array_equal(np.rint(ds.images([11])[0, 0, 0, 0] * 255), 11)  # compressed -> cache
    fmt.write_mpi3d(root, "mpi3d/mpi3d_toy.npz", small_mpi3d[1])  # the 4x4 file where the 6x6 one belongs
    with pytest.raises(CorruptDatasetError, match=r"earlier 4x4 \(disentanglement_lib\) version.*mpi3d_toy/mpi3d_toy.npz"):
        create("mpi3d-toy")
    fmt.write_mpi3d(root, "mpi3d/mpi3d_toy.npz", small_mpi3d[0], key="arr_0")
    with pytest.raises(CorruptDatasetError, match=r"no array 'images' \(found arr_0\)"):
        create("mpi3d-toy")


def test_mpi3d_truncated_file(root, small_mpi3d):
    path = fmt.write_mpi3d(root, "mpi3d/mpi3d_real.npz", small_mpi3d[0])
    data = path.read_bytes()
    path.write_bytes(data[:200] + data[-2000:])  # zip directory intact-looking tail, data missing
    with pytest.raises(CorruptDatasetError, match="mpi3d_real.npz"):
        create("mpi3d-real")


# -- Cars3D --------------------------------------------------------------------------------------------


def test_cars3d_mat_files_resized_and_indexed_like_disentanglement_lib(root, monkeypatch):
    from bench.data.cars3d import Cars3D

    monkeypatch.setattr(Cars3D, "factor_sizes", (2, 3, 2))
    fmt.write_cars3d(root, (2, 3, 2))
    ds = create("cars3d")
    assert len(ds) == 12 and ds.image_shape == (3, 64, 64)
    for f in ([0, 0, 0], [1, 2, 1], [0, 1, 1]):
        img = np.rint(ds.images(ds.index_of(np.array([f])))[0] * 255)
        assert (img == np.array(fmt.cars_value(*f))[:, None, None]).all()  # constant views stay constant


def test_cars3d_wrong_count_and_wrong_shape(root, monkeypatch):
    from bench.data.cars3d import Cars3D

    monkeypatch.setattr(Cars3D, "factor_sizes", (2, 3, 2))
    with pytest.raises(DatasetFilesMissing, match=r"(?s)cars/\*\.mat.*bench data download cars3d"):
        create("cars3d")
    paths = fmt.write_cars3d(root, (2, 3, 2))
    paths[1].unlink()
    with pytest.raises(CorruptDatasetError, match=r"1 .mat files, expected 2"):
        create("cars3d")
    fmt.write_cars3d(root, (2, 3, 2), shape=(64, 64, 3, 3, 2))
    with pytest.raises(CorruptDatasetError, match=r"'im' has shape \(64, 64, 3, 3, 2\); expected \(128, 128, 3, 3, 2\)"):
        create("cars3d")


# -- SmallNORB -----------------------------------------------------------------------------------------


@pytest.fixture
def small_norb(monkeypatch):
    from bench.data.smallnorb import _SmallNORBImages

    sizes = (2, 2, 2, 3, 2)
    monkeypatch.setattr(_SmallNORBImages, "grid_sizes", sizes)
    return sizes


@pytest.mark.parametrize("gzipped", [True, False])
def test_smallnorb_reorders_rows_into_the_full_grid(root, small_norb, gzipped):
    fmt.write_smallnorb(root, small_norb, gzipped=gzipped)
    ds = create("smallnorb-instance")
    assert ds.factor_sizes == small_norb and len(ds) == 48 and ds.image_shape == (1, 64, 64)
    f = ds.factors(np.arange(48))
    x = np.rint(ds.images(np.arange(48))[:, 0] * 255)
    expected = np.array([fmt.norb_value(*row) for row in f])
    assert (x == expected[:, None, None]).all()  # left camera, constant image, at its grid position


def test_smallnorb_dlib_convention_draws_the_instance(root, small_norb):
    fmt.write_smallnorb(root, small_norb)
    ds = create("smallnorb")
    assert ds.factor_names == ("category", "elevation", "azimuth", "lighting")
    assert ds.factor_sizes == (2, 2, 3, 2) and len(ds) == 48
    factors = ds.sample_factors(200, np.random.RandomState(0))
    obs = np.rint(ds.sample_observations_from_factors(factors, np.random.RandomState(1))[:, 0, 0, 0] * 255)
    c, e, a, light = factors.T
    instance = (obs - (c * 100 + e * 20 + a * 7 + light * 3)) / 50
    assert set(instance) == {0.0, 1.0}  # both instances drawn, factors respected
    rs = np.random.RandomState(1)
    np.testing.assert_array_equal(instance, rs.randint(2, size=200))  # disentanglement_lib's draw
    np.testing.assert_array_equal(ds.factors([0, 47]), [[0, 0, 0, 0], [1, 1, 2, 1]])
    with pytest.raises(ValueError, match="matches 10 images"):
        ds.index_of(factors[:2])


def test_smallnorb_bad_files(root, small_norb):
    paths = fmt.write_smallnorb(root, small_norb, gzipped=False)
    dat = paths["smallnorb-5x46789x9x18x6x2x96x96-training-dat"]
    dat.write_bytes(dat.read_bytes()[:-100])
    with pytest.raises(CorruptDatasetError, match=r"training-dat.mat: truncated or damaged — its header promises"):
        create("smallnorb")
    paths = fmt.write_smallnorb(root, small_norb, gzipped=True)
    cat = paths["smallnorb-5x01235x9x18x6x2x96x96-testing-cat"]
    cat.write_bytes(gzip.compress(b"\x00\x00\x00\x00" + gzip.decompress(cat.read_bytes())[4:]))
    with pytest.raises(CorruptDatasetError, match=r"testing-cat.mat.gz: NORB magic number 0x00000000 unknown"):
        create("smallnorb")
    paths = fmt.write_smallnorb(root, small_norb, gzipped=True)
    info = paths["smallnorb-5x01235x9x18x6x2x96x96-testing-info"]
    data = gzip.decompress(info.read_bytes())
    info.write_bytes(gzip.compress(data[:-8]))  # one row short
    with pytest.raises(CorruptDatasetError, match="testing-info.mat.gz: truncated"):
        create("smallnorb")


# -- CelebA --------------------------------------------------------------------------------------------


def test_celeba_attributes_splits_and_crops(root):
    fmt.write_celeba(root)
    ds = create("celeba")
    assert ds.name == "celeba" and len(ds) == 4 and ds.image_shape == (3, 64, 64)
    assert len(ds.attribute_names) == 40 and ds.attribute_names[-1] == "Young"
    np.testing.assert_array_equal(ds.attributes(np.arange(4)), (fmt.celeba_attributes(6)[:4] > 0).astype(int))
    x = ds.images(np.arange(4)) * 255
    assert np.allclose(x[:, 1].mean(axis=(1, 2)), 20 * np.arange(4), atol=3)  # green = image number x 20
    # red = source row: centre crop (torchvision Resize(64) + CenterCrop(64)) starts near row 20,
    # the D2C box (x=25..153, y=57..185) near row 57
    assert abs(x[0, 0, 0].mean() - 20.5) < 3 and abs(x[0, 0, -1].mean() - 197.5) < 3
    d2c = create("celeba-d2c")
    y = d2c.images([0])[0] * 255
    assert abs(y[0, 0].mean() - 57.5) < 3 and abs(y[0, -1].mean() - 184.5) < 3
    valid, test = create("celeba", split="valid"), create("celeba", split="test")
    assert (len(valid), len(test), len(create("celeba", split="all"))) == (1, 1, 6)
    np.testing.assert_array_equal(test.attributes([0]), (fmt.celeba_attributes(6)[5:] > 0).astype(int))
    assert abs(test.images([0])[0, 1].mean() * 255 - 100) < 3


def test_celeba_bad_files(root):
    paths = fmt.write_celeba(root)
    paths[2].unlink()
    with pytest.raises(DatasetFilesMissing, match=r"1 of 6 images .* missing .*first: 000003.jpg"):
        create("celeba")
    paths = fmt.write_celeba(root)
    paths[1].write_bytes(paths[1].read_bytes()[:400])
    ds = create("celeba")
    with pytest.raises(CorruptDatasetError, match="000002.jpg: not a readable JPEG — truncated"):
        ds.images([0])
    fmt.write_celeba(root, size=(100, 100))
    with pytest.raises(CorruptDatasetError, match="000001.jpg: 100x100 pixels; expected 178x218"):
        create("celeba").images([0])
    fmt.write_celeba(root)
    attr = root / "celeba" / "list_attr_celeba.txt"
    attr.write_text("\n".join(attr.read_text().splitlines()[:-1]))
    with pytest.raises(CorruptDatasetError, match="header announces 6 images, the file lists 5"):
        create("celeba")


# -- missing files, for every file-backed dataset --------------------------------------------------------


@pytest.mark.parametrize("name", [e.name for e in registry.datasets() if e.meta.get("source")])
def test_missing_files_name_every_path_and_how_to_get_them(root, name):
    with pytest.raises(DatasetFilesMissing) as info:
        create(name)
    message = str(info.value)
    assert f"dataset {name!r} needs files" in message and str(root) in message
    assert "missing: " in message and "bench data download" in message


def test_missing_one_idx_file_names_it(root):
    fmt.write_mnist(root)
    (root / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetFilesMissing) as info:
        create("mnist")
    lines = [line for line in str(info.value).splitlines() if "missing:" in line]
    assert lines == [f"  missing: {root}/mnist/t10k-labels-idx1-ubyte.gz (or {root}/mnist/t10k-labels-idx1-ubyte)"]


def test_idx_truncated_and_wrong_magic(root):
    fmt.write_mnist(root)
    gz = root / "mnist" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-40])
    with pytest.raises(CorruptDatasetError, match=r"train-images-idx3-ubyte.gz: truncated or damaged"):
        create("mnist")
    fmt.write_mnist(root)
    raw = root / "mnist" / "t10k-labels-idx1-ubyte"
    raw.write_bytes(fmt.idx_bytes(np.zeros((10, 28, 28), np.uint8)))  # an image file where labels belong
    with pytest.raises(CorruptDatasetError, match=r"IDX magic number 0x00000803, expected 0x00000801"):
        create("mnist")
    raw.write_bytes(b"\x12\x34" + raw.read_bytes()[2:])
    with pytest.raises(CorruptDatasetError, match="not an IDX file"):
        create("mnist")
