"""The procedural Shapes3D replica: factor structure, determinism, and what each factor changes."""

from __future__ import annotations

import numpy as np
import pytest

from bench import registry
from bench.data.shapes3d_procedural import HUES, ProceduralShapes3D, hsv_to_rgb


@pytest.fixture(scope="module")
def ds() -> ProceduralShapes3D:
    return registry.datasets().create("shapes3d-procedural")


def render(ds, rows) -> np.ndarray:
    return ds.images(ds.index_of(np.asarray(rows, dtype=np.int64)))


BASE = [2, 5, 8, 4, 0, 7]  # floor, wall, object hue, scale, shape (cube), orientation 0 degrees


def test_same_factor_structure_as_the_real_shapes3d(ds):
    from bench.data.shapes3d import Shapes3D

    assert ds.factor_names == Shapes3D.factor_names and ds.factor_sizes == Shapes3D.factor_sizes
    assert len(ds) == 480_000 and ds.image_shape == (3, 64, 64)
    np.testing.assert_allclose(ds.factor_values([479_999])[0], [0.9, 0.9, 0.9, 1.25, 3.0, 30.0])


def test_images_are_deterministic_on_the_uint8_grid(ds):
    idx = np.array([0, 123_456, 479_999, 77])
    x = ds.images(idx)
    assert x.dtype == np.float32 and x.shape == (4, 3, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert np.abs(x * 255 - np.rint(x * 255)).max() < 1e-4  # k / 255 for integers k
    np.testing.assert_array_equal(x, ds.images(idx))
    np.testing.assert_array_equal(x[1:2], ds.images([123_456]))  # batch = one by one
    many = np.random.default_rng(2).integers(0, len(ds), 150)  # more than two render blocks
    np.testing.assert_array_equal(ds.images(many), np.concatenate([ds.images([i]) for i in many]))


def test_each_hue_factor_recolours_only_its_surface(ds):
    base = render(ds, [BASE])[0]
    for k, region in ((0, "floor"), (1, "wall"), (2, "object")):
        other = list(BASE)
        other[k] = 0
        changed = (render(ds, [other])[0] != base).any(axis=0)
        rows = np.flatnonzero(changed.any(axis=1))
        if region == "floor":
            assert rows.min() > 20 and rows.max() == 63  # the floor fills the bottom of the image
        elif region == "wall":
            assert rows.min() == 0 and rows.max() < 40
        else:
            assert 0.02 < changed.mean() < 0.3 and changed[32, 32]  # the object sits in the middle
    # a pure colour: the wall's top-left pixel is the wall hue at the wall's shading
    wall = render(ds, [[0, 0, 8, 4, 0, 7]])[0][:, 0, 0]
    expected = hsv_to_rgb(HUES[0], 0.85)
    np.testing.assert_allclose(wall / wall.max(), expected / expected.max(), atol=0.01)


def test_scale_shape_and_orientation_change_the_object(ds):
    def object_mask(row) -> np.ndarray:
        a = render(ds, [row])[0]
        other = list(row)
        other[2] = (row[2] + 5) % 10
        return (render(ds, [other])[0] != a).any(axis=0)

    areas = [object_mask([2, 5, 8, s, 2, 7]).sum() for s in range(8)]
    assert all(b > a for a, b in zip(areas, areas[1:]))  # bigger scale, bigger sphere
    masks = [object_mask([2, 5, 8, 4, shape, 7]) for shape in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert (masks[i] != masks[j]).sum() > 20  # the four shapes look different
    left, right = render(ds, [[2, 5, 8, 4, 0, 0], [2, 5, 8, 4, 0, 14]])
    assert np.abs(left - right).mean() > 0.01
    # the camera turns: the floor/wall edge slopes in opposite directions at -30 and +30 degrees
    def edge_rows(img):
        floor = np.abs(img - img[:, 63:64, 32:33]).sum(axis=0) < 0.05
        return np.argmax(floor[:, 2]), np.argmax(floor[:, 61])

    (l0, l1), (r0, r1) = edge_rows(left), edge_rows(right)
    assert np.sign(l1 - l0) == -np.sign(r1 - r0) != 0
