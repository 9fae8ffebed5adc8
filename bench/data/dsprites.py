"""Procedural dSprites: a replica of DeepMind's dSprites rendered by the project, no download.

What
    The full factorial grid of dSprites (Matthey et al., 2017) with the constant colour factor
    dropped, as in the disentanglement literature:

    =============  =====  ============================================================
    factor         size   values
    =============  =====  ============================================================
    shape          3      square, ellipse, heart (dSprites' order)
    scale          6      ``linspace(0.5, 1.0, 6)``
    orientation    40     ``linspace(0, 2*pi, 40)`` radians, counter-clockwise on screen
    posX           32     ``linspace(0, 1, 32)``, left → right
    posY           32     ``linspace(0, 1, 32)``, top → bottom (image rows)
    =============  =====  ============================================================

    3 * 6 * 40 * 32 * 32 = 737,280 items; item ``i`` has the mixed-radix factor classes of
    :class:`~bench.data.base.FactorDataset` (shape most significant, posY least), which is
    the layout of the official ``.npz`` without its colour column.

Why
    A benchmark run must not depend on a 26 MB download being reachable, and the CPU smoke
    runs want a cheap 32×32 variant. A replica with the same factor structure keeps every
    metric (BetaVAE, FactorVAE, MIG, DCI, ...) well defined; numbers are comparable *between
    methods on this dataset*, not digit for digit with papers that used the real files.

How
    Nothing is stored: :meth:`ProceduralDSprites.images` renders the requested items on demand.
    For every pixel centre of every requested image it applies the inverse
    translation/rotation/scale to get coordinates ``(u, v)`` in the shape's canonical frame
    (``v`` points up) and evaluates an implicit inside-test there:

    * square:  ``max(|u|, |v|) <= 1``
    * ellipse: ``u**2 + (v / 0.5)**2 <= 1``  (2:1, long axis horizontal at orientation 0)
    * heart:   ``(x**2 + y**2 - 1)**3 - x**2 * y**3 <= 0`` with ``x = 1.139 u``,
      ``y = 1.139 v + 0.2935`` (the classic heart curve, scaled to the square's width and
      shifted so that its centroid is the sprite centre; point downwards at orientation 0).

    Geometry on the 64×64 canvas (pixel units, pixel ``j`` covers ``[j, j+1)``): the sprite
    centre is at ``16 + 32 * pos`` along each axis, so positions step by 32/31 ≈ 1.03 px and
    the centre never comes closer than 16 px to an edge; one canonical unit is ``10 * scale``
    px. Approximate sprite sizes at scale 1 (half of that at scale 0.5):

    * square  20 × 20 px (≈ 0.31 of the width; area ≈ 400 px), half-diagonal 14.1 px, so
      even rotated by 45° at an extreme position it stays ≥ 1.8 px inside the frame;
    * ellipse 20 × 10 px (area ≈ 155 px);
    * heart   20 × 19.6 px (area ≈ 283 px).

    The mean foreground fraction over the grid is ≈ 0.040 (real dSprites: ≈ 0.042).
    Rendering is pure float arithmetic with no randomness and no supersampling; ``sin``/``cos``
    come from a 40-entry table, so a batch render is bit-identical to item-by-item renders.

Resolutions
    ``resolution=64`` gives binary images (values exactly 0.0 or 1.0) like dSprites.
    ``resolution=32`` is the 2×2 area average of the 64×64 render, so values lie in
    ``{0, .25, .5, .75, 1}``: averaging keeps the 32 px variant a faithful, anti-aliased view
    of the same sprites (thresholding would make small sprites lose or gain whole pixels
    unevenly across positions, and rendering directly at 32 px would halve the position
    resolution to ~0.5 px steps with heavy aliasing).

Differences from the real dSprites
    * Exact outlines differ: the real heart and ellipse bitmaps come from the authors'
      renderer; here they are the implicit curves above, so sizes/aspect are approximate.
    * The pixel-position mapping is approximately, not exactly, the original's.
    * As in dSprites, rotational symmetries are *not* removed: the square repeats every 90°
      and the ellipse every 180°, so distinct orientation classes can render identically;
      and since both 0 and 2π are in the orientation grid, classes 0 and 39 are identical
      for every shape.
    * No colour factor (the real one is constant white).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.data.base import FactorDataset

SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
SCALES: np.ndarray = np.linspace(0.5, 1.0, 6)
ORIENTATIONS: np.ndarray = np.linspace(0.0, 2.0 * np.pi, 40)
POSITIONS: np.ndarray = np.linspace(0.0, 1.0, 32)

CANVAS = 64  # every image is rendered at 64×64; other resolutions are derived from it
ALLOWED_RESOLUTIONS: tuple[int, ...] = (64, 32)

_UNIT_PX = 10.0  # canonical units → pixels at scale 1 (square half-side)
_POS_OFFSET_PX = 16.0  # centre pixel coordinate at pos = 0
_POS_RANGE_PX = 32.0  # centre moves this many pixels from pos = 0 to pos = 1
_ELLIPSE_MINOR = 0.5  # ellipse semi-axes (1, 0.5) in canonical units
_HEART_K = 1.139  # half-width of the heart curve: scales it to the square's width
_HEART_DY = 0.2935  # centroid height of the heart curve: the sprite rotates about it
_CHUNK = 64  # images rendered per vectorised block: its 1 MB temporaries stay in cache (101k img/s vs 19k at 512)

# Per-class lookup tables, float32 so that every render uses the very same numbers.
_COS = np.cos(ORIENTATIONS).astype(np.float32)
_SIN = np.sin(ORIENTATIONS).astype(np.float32)
_HALF_PX = (_UNIT_PX * SCALES).astype(np.float32)
_CENTRE_PX = (_POS_OFFSET_PX + _POS_RANGE_PX * POSITIONS).astype(np.float32)
_PIXEL_CENTRES = (np.arange(CANVAS, dtype=np.float32) + np.float32(0.5))


class ProceduralDSprites(FactorDataset):
    """dSprites (shape, scale, orientation, posX, posY), rendered on demand; see the module doc."""

    factor_names = ("shape", "scale", "orientation", "posX", "posY")
    factor_sizes = (len(SHAPES), len(SCALES), len(ORIENTATIONS), len(POSITIONS), len(POSITIONS))
    version = "1"

    def __init__(self, resolution: int = 64) -> None:
        if resolution not in ALLOWED_RESOLUTIONS:
            raise ValueError(
                f"ProceduralDSprites: resolution {resolution!r} is not supported; "
                f"allowed: {', '.join(str(r) for r in ALLOWED_RESOLUTIONS)}"
            )
        self.resolution = int(resolution)
        self.name = "dsprites-procedural" if resolution == CANVAS else f"dsprites-procedural-{resolution}"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.resolution, self.resolution)

    def factor_values(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Continuous factor values (n, 5) float64: shape id, scale, angle (rad), posX, posY."""
        f = self.factors(indices)
        return np.stack(
            [f[:, 0].astype(np.float64), SCALES[f[:, 1]], ORIENTATIONS[f[:, 2]], POSITIONS[f[:, 3]], POSITIONS[f[:, 4]]],
            axis=1,
        )

    def images(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Images at ``indices`` as float32 (n, 1, res, res) in [0, 1]; IndexError when out of range."""
        factors = self.factors(np.atleast_1d(np.asarray(indices, dtype=np.int64)).reshape(-1))
        out = np.empty((len(factors), 1, self.resolution, self.resolution), dtype=np.float32)
        for start in range(0, len(factors), _CHUNK):
            masks = render_masks(factors[start : start + _CHUNK])
            if self.resolution != CANVAS:
                masks = masks.astype(np.float32)
                # 2×2 area average (the only other allowed resolution is 32); sums of 0/1 are exact.
                pooled = (masks[:, 0::2, 0::2] + masks[:, 1::2, 0::2]) + (masks[:, 0::2, 1::2] + masks[:, 1::2, 1::2])
                masks = pooled * np.float32(0.25)
            out[start : start + len(masks), 0] = masks
        return out

    def describe(self) -> dict:
        d = super().describe()
        d["resolution"] = self.resolution
        d["procedural"] = True
        return d


def render_masks(factors: np.ndarray) -> np.ndarray:
    """Binary 64×64 masks (n, 64, 64) bool for factor classes (n, 5) in this module's order."""
    factors = np.asarray(factors, dtype=np.int64)
    shape, scale, orient, pos_x, pos_y = factors.T
    # Pixel offsets from the sprite centre, screen axes with y pointing up: (n, 1, W), (n, H, 1).
    dx = _PIXEL_CENTRES[None, None, :] - _CENTRE_PX[pos_x][:, None, None]
    dy = _CENTRE_PX[pos_y][:, None, None] - _PIXEL_CENTRES[None, :, None]
    # Inverse rotation by the orientation, then inverse scale: canonical (u, v), (n, H, W).
    inv = (np.float32(1.0) / _HALF_PX[scale])[:, None, None]
    c = _COS[orient][:, None, None] * inv
    s = _SIN[orient][:, None, None] * inv
    masks = np.empty((len(factors), CANVAS, CANVAS), dtype=bool)
    for k, inside in enumerate(_INSIDE_TESTS):
        sel = np.flatnonzero(shape == k)
        if sel.size == 0:
            continue
        u = c[sel] * dx[sel] + s[sel] * dy[sel]
        v = c[sel] * dy[sel] - s[sel] * dx[sel]
        masks[sel] = inside(u, v)
    return masks


def _inside_square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _inside_ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    w = v * np.float32(1.0 / _ELLIPSE_MINOR)
    return u * u + w * w <= 1.0


def _inside_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x = u * np.float32(_HEART_K)
    y = v * np.float32(_HEART_K) + np.float32(_HEART_DY)
    x2 = x * x
    r = x2 + y * y - np.float32(1.0)
    return r * r * r - x2 * (y * y * y) <= 0.0


_INSIDE_TESTS = (_inside_square, _inside_ellipse, _inside_heart)  # indexed by shape class
