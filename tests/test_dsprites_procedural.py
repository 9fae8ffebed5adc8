"""Tests for the procedural dSprites replica (bench.data.dsprites)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.dsprites import ProceduralDSprites

SQUARE, ELLIPSE, HEART = 0, 1, 2
BIG = 5  # scale class 5 = scale 1.0


@pytest.fixture(scope="module")
def ds() -> ProceduralDSprites:
    return ProceduralDSprites()


@pytest.fixture(scope="module")
def ds32() -> ProceduralDSprites:
    return ProceduralDSprites(resolution=32)


def render(ds: ProceduralDSprites, factors) -> np.ndarray:
    """Images (n, H, W) for a list of factor-class rows."""
    return ds.images(ds.index_of(np.asarray(factors, dtype=np.int64)))[:, 0]


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(img.shape)
    m = img.sum()
    return float((rows * img).sum() / m), float((cols * img).sum() / m)


def test_metadata(ds, ds32):
    assert len(ds) == 737_280 == len(ds32)
    assert ds.factor_sizes == (3, 6, 40, 32, 32)
    assert ds.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert (ds.name, ds.version, ds.image_shape) == ("dsprites-procedural", "1", (1, 64, 64))
    assert (ds32.name, ds32.image_shape) == ("dsprites-procedural-32", (1, 32, 32))
    d = ds.describe()
    assert d["len"] == 737_280 and d["factor_sizes"] == [3, 6, 40, 32, 32]


def test_registry_creates_both_variants():
    from bench.data import DATASETS  # the package module holds the registration lines

    assert DATASETS.create("dsprites-procedural").image_shape == (1, 64, 64)
    assert DATASETS.create("dsprites-procedural-32").image_shape == (1, 32, 32)


@pytest.mark.parametrize("bad", [0, 16, 48, 128])
def test_bad_resolution_raises(bad):
    with pytest.raises(ValueError, match=rf"\b{bad}\b.*64.*32"):
        ProceduralDSprites(resolution=bad)


def test_shape_dtype_range_and_binary(ds, ds32):
    idx = np.random.default_rng(0).integers(0, len(ds), 300)
    x = ds.images(idx)
    assert x.shape == (300, 1, 64, 64) and x.dtype == np.float32
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert (x.reshape(300, -1).sum(1) > 0).all()  # every sprite is visible
    y = ds32.images(idx)
    assert y.shape == (300, 1, 32, 32) and y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert ds.images([]).shape == (0, 1, 64, 64)


def test_out_of_range_index_raises(ds):
    for bad in ([-1], [len(ds)], [0, len(ds) + 5]):
        with pytest.raises(IndexError, match="737280"):
            ds.images(bad)


def test_deterministic_and_batch_equals_items(ds):
    idx = np.random.default_rng(1).integers(0, len(ds), 150)  # more than two render blocks
    batch = ds.images(idx)
    assert batch.tobytes() == ds.images(idx).tobytes()
    assert batch.tobytes() == ProceduralDSprites().images(idx).tobytes()
    singles = np.concatenate([ds.images([i]) for i in idx])
    assert singles.tobytes() == batch.tobytes()


def test_index_factor_roundtrip(ds):
    idx = np.concatenate([[0, len(ds) - 1], np.random.default_rng(2).integers(0, len(ds), 500)])
    f = ds.factors(idx)
    assert np.array_equal(ds.index_of(f), idx)
    assert np.array_equal(ds.factors(ds.index_of(f)), f)
    assert np.array_equal(ds.factors([len(ds) - 1])[0], np.array(ds.factor_sizes) - 1)
    v = ds.factor_values(idx)
    assert v.shape == (len(idx), 5) and v[:, 1].min() >= 0.5 and v[:, 2].max() <= 2 * np.pi


def test_posx_moves_right_and_posy_moves_down(ds):
    step = 32 / 31  # pixels per position class
    xs = render(ds, [[SQUARE, BIG, 0, p, 15] for p in range(32)])
    cols = np.array([centre_of_mass(im)[1] for im in xs])
    assert (np.diff(cols) > 0).all()
    assert abs((cols[-1] - cols[0]) - 31 * step) <= 1.0
    ys = render(ds, [[HEART, 2, 7, 15, p] for p in range(32)])
    rows = np.array([centre_of_mass(im)[0] for im in ys])
    assert (np.diff(rows) > 0).all()
    assert abs((rows[-1] - rows[0]) - 31 * step) <= 1.0
    # posY does not move the sprite horizontally (and vice versa)
    assert np.ptp([centre_of_mass(im)[1] for im in ys]) <= 1.0
    assert np.ptp([centre_of_mass(im)[0] for im in xs]) <= 1.0


def test_scale_increases_area(ds):
    for shape in (SQUARE, ELLIPSE, HEART):
        areas = render(ds, [[shape, s, 3, 15, 15] for s in range(6)]).sum(axis=(1, 2))
        assert (np.diff(areas) > 0).all(), (shape, areas)
        assert 3.0 < areas[-1] / areas[0] < 5.0  # area ~ scale**2, scale 0.5 → 1.0
    square_side = render(ds, [[SQUARE, BIG, 0, 15, 15]])[0].any(axis=0).sum()
    assert 18 <= square_side <= 22  # about a third of the 64 px width, as in dSprites


def test_shapes_differ_at_same_pose(ds):
    imgs = render(ds, [[s, BIG, 0, 15, 15] for s in range(3)])
    areas = imgs.sum(axis=(1, 2))
    assert len(set(areas.tolist())) == 3
    assert areas[ELLIPSE] < areas[HEART] < areas[SQUARE]
    for a in range(3):
        for b in range(a + 1, 3):
            assert (imgs[a] != imgs[b]).any()


def test_orientation_rotates(ds):
    squares = render(ds, [[SQUARE, BIG, k, 15, 15] for k in range(40)])
    # angle_k = 2*pi*k/39 is a multiple of the square's 90° symmetry only for k = 0 and 39
    for k in range(1, 39):
        assert (squares[k] != squares[0]).any(), k
    assert np.array_equal(squares[39], squares[0])  # 0 and 2*pi both on the grid, as in dSprites
    areas = squares.sum(axis=(1, 2))
    assert np.abs(areas / areas[0] - 1).max() < 0.1  # rotation keeps the area
    # 45°-ish rotation turns the axis-aligned square into a diamond: wider bounding box
    assert squares[5].any(axis=0).sum() > squares[0].any(axis=0).sum() + 5
    # counter-clockwise on screen: the ellipse's long axis goes up-right at ~46° (k=5)
    ell = render(ds, [[ELLIPSE, BIG, 5, 15, 15]])[0]
    rows, cols = np.nonzero(ell)
    assert np.cov(cols, -rows)[0, 1] > 0
    # the heart rotates about its centroid: its centre of mass stays put
    hearts = render(ds, [[HEART, BIG, k, 15, 15] for k in range(0, 39, 3)])
    com = np.array([centre_of_mass(im) for im in hearts])
    assert np.ptp(com, axis=0).max() <= 1.0
    assert len({im.tobytes() for im in hearts}) == len(hearts)


def test_largest_sprites_stay_inside_frame(ds):
    f = [[s, BIG, k, x, y] for s in range(3) for k in range(0, 40, 2) for x in (0, 31) for y in (0, 31)]
    imgs = render(ds, f)
    border = imgs[:, 0, :].sum() + imgs[:, -1, :].sum() + imgs[:, :, 0].sum() + imgs[:, :, -1].sum()
    assert border == 0


def test_32_is_2x2_average_of_64(ds, ds32):
    idx = np.random.default_rng(3).integers(0, len(ds), 150)  # more than two render blocks
    big = ds.images(idx).astype(np.float64)
    pooled = big.reshape(150, 1, 32, 2, 32, 2).mean(axis=(3, 5))
    assert np.array_equal(ds32.images(idx), pooled.astype(np.float32))


@pytest.mark.parametrize("rs", [np.random.RandomState(0), np.random.default_rng(0)])
def test_sample_with_fixed_factor(ds, rs):
    for k in range(ds.num_factors):
        factors, obs = ds.sample_with_fixed_factor(16, k, rs)
        assert factors.shape == (16, 5) and obs.shape == (16, 1, 64, 64)
        assert (factors[:, k] == factors[0, k]).all()
        assert np.array_equal(obs, ds.images(ds.index_of(factors)))
