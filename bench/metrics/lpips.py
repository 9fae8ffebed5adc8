"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), VGG variant.

d(x, y) = Σ_l mean_{h,w} ‖w_l ⊙ (φ̂_l(x) − φ̂_l(y))‖² over the VGG16 activations relu1_2,
relu2_2, relu3_3, relu4_3, relu5_3, each unit-normalised over channels (φ̂), with the learnt
non-negative 1×1 "linear calibration" weights w_l (LPIPS v0.1) and LPIPS's input scaling
(shift [−.030, −.088, −.188], scale [.458, .448, .450]) on images in [−1, 1]: the loss of
taming-transformers' ``LPIPS`` that latent diffusion's VQ autoencoders train with.

VGG16's feature stack is rebuilt here in plain torch (torchvision's ``vgg16().features``
layout: 13 3×3 convs with ReLU, 5 max-pools), so torchvision is not needed. Two weight files,
neither of which can be downloaded on an offline machine:

* the ImageNet VGG16 weights (torchvision's ``vgg16-397923af.pth``, 528 MB; only the
  ``features.*`` tensors are read): ``vgg_weights=PATH``, ``$BENCH_VGG16_WEIGHTS``, or
  torchvision's download cache ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``;
* the 7 KB linear layers (``lpips/weights/v0.1/vgg.pth`` of the PyPI ``lpips`` package):
  ``linear_weights=PATH`` / ``$BENCH_LPIPS_LINEAR`` (the ``.pth`` file, or the ``lpips``
  wheel itself, read as a zip), or the installed ``lpips`` package's file, found without
  importing it (``pip install --no-deps lpips`` is enough).

Without them :func:`load_lpips` raises :class:`LPIPSUnavailableError`: the ``lpips`` metric
is then recorded as ``skipped`` with the reason — never as a number — and the VQ first stage
trains with perceptual weight 0 and records that in its hyperparameters.
"""

from __future__ import annotations

import importlib.util
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.metrics import MetricUnavailableError

VGG_FILENAME = "vgg16-397923af.pth"
LINEAR_MEMBER = "lpips/weights/v0.1/vgg.pth"
#: torchvision vgg16 ``features`` indices of the convolutions, and the ReLU ending each LPIPS slice
_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
          (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
_SLICE_ENDS = (4, 9, 16, 23, 30)
CHANNELS = (64, 128, 256, 512, 512)


class LPIPSUnavailableError(MetricUnavailableError):
    """The VGG16 or the LPIPS linear weights are not on this machine."""


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` (indices and shapes match its state dict)."""
    layers: list[nn.Module] = []
    convs = {i: (cin, cout) for i, cin, cout in _CONVS}
    for i in range(31):
        if i in convs:
            layers.append(nn.Conv2d(*convs[i], 3, padding=1))
        elif i in (4, 9, 16, 23, 30):
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """LPIPS-VGG v0.1 (see the module docstring); frozen, inputs in [−1, 1], output (B,) distances."""

    def __init__(self, vgg_state: dict[str, torch.Tensor], linear_state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.features = vgg16_features()
        self.features.load_state_dict({k[len("features."):]: v for k, v in vgg_state.items() if k.startswith("features.")})
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(linear_state[f"lin{i}.model.1.weight"])
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        h = torch.cat([(x - self.shift) / self.scale, (y - self.shift) / self.scale])
        total, start = 0.0, 0
        for lin, end in zip(self.lins, _SLICE_ENDS):
            h = self.features[start:end](h)
            start = end
            fx, fy = h.chunk(2)
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fx - fy).pow(2)).mean(dim=(2, 3))
        return total.flatten()


def _vgg_path(explicit: str | os.PathLike | None) -> Path:
    if explicit is not None or os.environ.get("BENCH_VGG16_WEIGHTS"):
        path = Path(explicit if explicit is not None else os.environ["BENCH_VGG16_WEIGHTS"])
        origin = "vgg_weights=" if explicit is not None else "BENCH_VGG16_WEIGHTS"
        if not path.is_file():
            raise LPIPSUnavailableError(f"LPIPS: {origin}{path} is not a file (expected torchvision's {VGG_FILENAME})")
        return path
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints" / VGG_FILENAME
    if hub.is_file():
        return hub
    raise LPIPSUnavailableError(
        f"LPIPS needs ImageNet VGG16 weights, which cannot be downloaded here: put torchvision's {VGG_FILENAME} at "
        f"{hub}, or set BENCH_VGG16_WEIGHTS=PATH"
    )


def _linear_state(explicit: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    source = explicit if explicit is not None else os.environ.get("BENCH_LPIPS_LINEAR")
    if source is None:
        spec = importlib.util.find_spec("lpips")  # the installed package's file, without importing lpips
        if spec is None or not spec.submodule_search_locations:
            raise LPIPSUnavailableError("LPIPS needs its 7 KB linear layers: `pip install --no-deps lpips`, or set "
                                        "BENCH_LPIPS_LINEAR to lpips/weights/v0.1/vgg.pth or to the lpips wheel")
        source = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "vgg.pth"
    path = Path(source)
    if not path.is_file():
        raise LPIPSUnavailableError(f"LPIPS: linear weights {path} not found")
    if zipfile.is_zipfile(path):  # the wheel itself (a torch file is a zip too, without this member)
        with zipfile.ZipFile(path) as archive:
            if LINEAR_MEMBER in archive.namelist():
                return torch.load(io.BytesIO(archive.read(LINEAR_MEMBER)), map_location="cpu", weights_only=True)
        if path.suffix == ".whl":
            raise LPIPSUnavailableError(f"LPIPS: {path} has no {LINEAR_MEMBER} (expected the lpips wheel)")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lpips(vgg_weights: str | os.PathLike | None = None, linear_weights: str | os.PathLike | None = None) -> LPIPS:
    """The LPIPS network with its weights (raises :class:`LPIPSUnavailableError` naming what is missing)."""
    linear = _linear_state(linear_weights)
    vgg = torch.load(_vgg_path(vgg_weights), map_location="cpu", weights_only=True)
    missing = [f"features.{i}.weight" for i, _, _ in _CONVS if f"features.{i}.weight" not in vgg]
    if missing:
        raise LPIPSUnavailableError(f"LPIPS: the VGG16 file lacks {missing[:2]} (expected torchvision's {VGG_FILENAME})")
    return LPIPS(vgg, linear)


def lpips_available() -> str | None:
    """None when LPIPS can be built here, else the reason it cannot."""
    try:
        _linear_state(None)
        _vgg_path(None)
    except LPIPSUnavailableError as exc:
        return str(exc)
    return None


def lpips(dataset, reconstruct, random_state, *, num_samples: int = 1000, batch_size: int = 64,
          vgg_weights: str = "", linear_weights: str = "") -> dict[str, float]:
    """Mean LPIPS between ``num_samples`` dataset images and their reconstructions (lower is closer)."""
    net = load_lpips(vgg_weights or None, linear_weights or None)  # before any expensive work
    rs = random_state if isinstance(random_state, np.random.RandomState) else np.random.RandomState(random_state)
    idx = np.sort(rs.choice(len(dataset), size=min(num_samples, len(dataset)), replace=False))
    values = []
    for start in range(0, len(idx), batch_size):
        x = dataset.images(idx[start:start + batch_size])
        rec = reconstruct(x)
        with torch.no_grad():
            values.append(net(torch.from_numpy(x) * 2 - 1, torch.from_numpy(np.asarray(rec)) * 2 - 1).numpy())
    return {"lpips": float(np.concatenate(values).mean())}
