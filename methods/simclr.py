"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations")
and SimCLR-Gauss (Mittal et al., DRL §3.1: views that differ only by additive Gaussian noise).

**Objective.** Two augmented views of every image in a batch of N go through the backbone f
(features h) and a projection head g (:class:`ProjectionHead`, google-research/simclr
``tf2/model.py``: ``num_proj_layers`` = 3 dense layers of h's width, the last to 128, every
one followed by BatchNorm, ReLU after all but the last, no dense biases, the last BN without
β); NT-Xent over the 2N views (Chen et al. eq. 1): for the positive pair (i, j),
``ℓ(i, j) = −log exp(sim(z_i, z_j)/τ) / Σ_{k ≠ i} exp(sim(z_i, z_k)/τ)`` with cosine
similarity, summed over the two views and averaged over the N pairs — the reference's
``reduce_mean(loss_a + loss_b)`` (``tf2/objective.py``), twice the mean over 2N anchors,
which matters under LARS: the loss scale sets the gradient against the weight decay; τ =
0.5 in the CIFAR settings.

**Representation.** ``encode`` returns h, the pooled backbone features *before* the
projection head, as every reference implementation evaluates (google-research/simclr,
solo-learn). ``repr_dim`` > 0 inserts a linear bottleneck h → repr_dim before the head and
returns its output instead: the harness's reading of the 32-d SimCLR of InfoDiffusion's
Table 6, whose setup the paper does not state.

**Augmentations** (batched on the training device, per image, no torchvision; the
google-research/simclr ``data_util.py`` pipeline): random resized crop (area 0.08–1,
aspect 3/4–4/3, 10 attempts, else the whole image) with a horizontal flip (p 0.5) in one
``grid_sample``; colour jitter with p 0.8 at strength s = 0.5 (brightness and contrast
factors in [1 − 0.8s, 1 + 0.8s], saturation likewise, hue shift up to 0.2s as a rotation of
the YIQ chroma plane, in a random order per batch); grayscale with p 0.2; optional Gaussian
blur (p 0.5, σ ∈ [0.1, 2], kernel 10 % of the side). Single-channel images get only the
crop, the flip, brightness and contrast. ``simclr-gauss``: the two views are x + σ ε and
x + σ ε' with nothing else; DRL gives no σ, we use 0.1 on images in [0, 1] (a tenth of the
range: views stay recognisable, yet differ pixel by pixel).

**Invariance by construction.** Crops, flips and colour jitter make the representation
invariant to position, scale, orientation sign and colour — exactly the factors of dSprites,
Shapes3D and similar datasets — so low factor-metric scores (FactorVAE, DCI, MIG) there are
expected and say nothing about SimCLR's quality on class labels.

**Optimisation.** LARS (You et al. 2017; momentum 0.9, trust coefficient 0.001, biases
and BatchNorm parameters excluded from weight decay and from the trust ratio) with a
linear warm-up and a cosine decay, the learning rate scaled linearly with the batch (lr ×
batch / 256), or Adam. ``paper`` is google-research/simclr's CIFAR-10 command (README):
ResNet-18 with the CIFAR stem, batch 512, 1000 epochs, learning_rate 1.0 (× 512/256), weight
decay 1e-4, τ = 0.5, colour-jitter strength 0.5, no blur, 10 warm-up epochs.

SimCLR cannot generate: it declares no ``sample``, ``decode`` or ``reconstruct``, so the
runner records FID and the reconstruction metrics as skipped with the reason.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.adapter import Adapter, DivergedError, as_images, resolve_device, seed_everything
from methods.backbones import BACKBONES, build_backbone

AUGMENTS = ("simclr", "gauss")
OPTIMISERS = ("lars", "adam")

SIMCLR_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18",
    "width": 64,            # ResNet base width
    "widen": 2,             # WRN widen factor
    "conv_channels": [32, 32, 64, 64],
    "hidden": 256,          # conv backbone's dense width
    "repr_dim": 0,          # 0: h itself; > 0: a linear bottleneck h -> repr_dim is the representation
    "proj_dim": 128,
    "proj_layers": 3,
    "temperature": 0.5,
    "augment": "simclr",
    "crop_min_area": 0.08,
    "flip": True,
    "jitter_strength": 0.5,
    "jitter_p": 0.8,
    "grayscale_p": 0.2,
    "blur": False,
    "gauss_sigma": 0.1,
    "optimizer": "lars",
    "lr": 1.0,              # LARS: scaled by batch_size / 256
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "warmup_epochs": 10.0,
    "batch_size": 512,
    "steps": 97_700,        # 1000 epochs of CIFAR-10's 50,000 images at batch 512
    "log_every": 100,
    "eval_batch_size": 512,
}
SIMCLR_RANGES: dict[str, Any] = {
    "backbone": BACKBONES, "width": ">= 1", "widen": ">= 1", "conv_channels": "each >= 1", "hidden": ">= 1",
    "repr_dim": ">= 0", "proj_dim": ">= 1", "proj_layers": ">= 1", "temperature": "> 0", "augment": AUGMENTS, "crop_min_area": "(0, 1]",
    "jitter_strength": ">= 0", "jitter_p": "[0, 1]", "grayscale_p": "[0, 1]", "gauss_sigma": ">= 0",
    "optimizer": OPTIMISERS, "lr": "> 0", "weight_decay": ">= 0", "momentum": "[0, 1)", "warmup_epochs": ">= 0",
    "batch_size": ">= 2", "steps": ">= 1", "log_every": ">= 1", "eval_batch_size": ">= 1",
}
TINY_SIMCLR: dict[str, Any] = {"backbone": "conv", "conv_channels": [16, 16, 32, 32], "hidden": 64, "optimizer": "adam",
                               "lr": 1e-3, "weight_decay": 0.0, "batch_size": 32, "steps": 100, "log_every": 20}


# -- augmentations --------------------------------------------------------------------------
def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def random_resized_crop(x: torch.Tensor, g: torch.Generator, *, min_area: float = 0.08, flip: bool = True,
                        attempts: int = 10) -> torch.Tensor:
    """Per image: a crop of area U(min_area, 1) and aspect log-U(3/4, 4/3), resized back, flipped with p 0.5."""
    n, dev = x.shape[0], x.device
    area = _uniform(n * attempts, min_area, 1.0, g, dev).view(attempts, n)
    log_ratio = _uniform(n * attempts, math.log(3 / 4), math.log(4 / 3), g, dev).view(attempts, n)
    w, h = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()  # fractions of the side
    ok = (w <= 1) & (h <= 1)
    first = torch.where(ok.any(0), ok.float().argmax(0), torch.zeros(n, dtype=torch.long, device=dev))
    pick = lambda v: v.gather(0, first[None]).squeeze(0)  # noqa: E731
    w, h = pick(w), pick(h)
    w, h = torch.where(ok.any(0), w, torch.ones_like(w)), torch.where(ok.any(0), h, torch.ones_like(h))
    cx = _uniform(n, 0, 1, g, dev) * (1 - w) + w / 2
    cy = _uniform(n, 0, 1, g, dev) * (1 - h) + h / 2
    sx = w * (torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0) if flip else 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = sx, 2 * cx - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def color_jitter(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    """SimCLR's colour distortion at ``strength`` (brightness, contrast, saturation, hue in a random order)."""
    n, dev = x.shape[0], x.device
    b = c = s = 0.8 * strength
    hue = 0.2 * strength
    ops = ["brightness", "contrast"] + (["saturation", "hue"] if x.shape[1] == 3 else [])
    order = torch.randperm(len(ops), generator=g, device=dev).tolist()
    for i in order:
        op = ops[i]
        if op == "brightness":
            x = x * _uniform(n, max(0.0, 1 - b), 1 + b, g, dev)[:, None, None, None]
        elif op == "contrast":
            mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * _uniform(n, max(0.0, 1 - c), 1 + c, g, dev)[:, None, None, None] + mean
        elif op == "saturation":
            gray = _gray(x)
            x = (x - gray) * _uniform(n, max(0.0, 1 - s), 1 + s, g, dev)[:, None, None, None] + gray
        else:  # hue: rotate the chroma (I, Q) plane of YIQ by 2π·delta
            angle = _uniform(n, -hue, hue, g, dev) * 2 * math.pi
            to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
            yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
            cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
            i_, q_ = yiq[:, 1], yiq[:, 2]
            yiq = torch.stack([yiq[:, 0], cos * i_ - sin * q_, sin * i_ + cos * q_], dim=1)
            x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)
        x = x.clamp(0, 1)
    return x


def gaussian_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """With p 0.5 per image: a Gaussian blur of σ ~ U(0.1, 2) (kernel ~10 % of the side, odd)."""
    n, c, h, w = x.shape
    k = max(3, int(0.1 * h) // 2 * 2 + 1)
    sigma = _uniform(n, 0.1, 2.0, g, x.device)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    kern = kern / kern.sum(1, keepdim=True)  # (n, k)
    xs = x.reshape(1, n * c, h, w)
    kx = kern.repeat_interleave(c, 0)[:, None, None, :]
    ky = kern.repeat_interleave(c, 0)[:, None, :, None]
    xs = F.conv2d(F.pad(xs, (k // 2, k // 2, 0, 0), mode="reflect"), kx, groups=n * c)
    xs = F.conv2d(F.pad(xs, (0, 0, k // 2, k // 2), mode="reflect"), ky, groups=n * c)
    blurred = xs.reshape(n, c, h, w)
    apply = (torch.rand(n, generator=g, device=x.device) < 0.5)[:, None, None, None]
    return torch.where(apply, blurred, x)


# -- LARS -----------------------------------------------------------------------------------
class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al. 2017; SimCLR's ``lars_optimizer.py``).

    Parameter groups with ``exclude=True`` (biases, BatchNorm) get neither weight decay nor
    the trust ratio.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["exclude"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = p.norm(), grad.norm()
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    grad = grad * trust
                buf = self.state[p].get("momentum")
                buf = grad.clone() if buf is None else buf.mul_(group["momentum"]).add_(grad)
                self.state[p]["momentum"] = buf
                p.add_(buf, alpha=-group["lr"])


class ProjectionHead(nn.Module):
    """google-research/simclr's nonlinear head (``tf2/model.py: ProjectionHead``, ``LinearLayer``).

    ``layers`` dense layers (weights N(0, 0.01²), no bias): the first ``layers − 1`` keep the
    width and are followed by BatchNorm (γ and β) and ReLU, the last maps to ``out_dim`` and is
    followed by BatchNorm with γ only (``center=False``). BN momentum 0.1 (TF decay 0.9), eps 1e-5.
    """

    def __init__(self, width: int, out_dim: int, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for j in range(layers):
            last = j == layers - 1
            dense = nn.Linear(width, out_dim if last else width, bias=False)
            nn.init.normal_(dense.weight, std=0.01)
            mods += [dense, nn.BatchNorm1d(out_dim if last else width, eps=1e-5, momentum=0.1)]
            if not last:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)
        last_bn = self.net[-1]
        last_bn.bias = None  # center=False: no β (BatchNorm's functional form accepts bias=None)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020, eq. 1) as google-research/simclr's ``add_contrastive_loss``:
    mean over the N pairs of loss_a + loss_b, i.e. twice the mean over the 2N anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return 2.0 * F.cross_entropy(sim, targets)


class SimCLR(Adapter):
    """Contrastive representation learning (see the module docstring); no generative capability."""

    defaults: ClassVar[dict[str, Any]] = dict(SIMCLR_DEFAULTS)
    ranges = SIMCLR_RANGES
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(TINY_SIMCLR), "paper": {}}
    capabilities = frozenset()
    # 2: google-research/simclr's 3-layer head with BN on every layer, loss = mean(loss_a + loss_b)
    version = "2"

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        c, h, w = input_shape
        if h != w:
            raise ValueError(f"{type(self).__name__}: images must be square, got {h}x{w}")
        self.input_shape = tuple(input_shape)
        self.backbone_ = build_backbone(self.backbone, c, h, width=self.width, widen=self.widen,
                                        conv_channels=self.conv_channels, hidden=self.hidden)
        feat = self.backbone_.out_dim
        self.bottleneck_ = nn.Linear(feat, self.repr_dim) if self.repr_dim else nn.Identity()
        rep = self.repr_dim or feat
        self.head_ = ProjectionHead(rep, self.proj_dim, self.proj_layers)
        self.device_ = torch.device("cpu")

    def _nets(self) -> list[nn.Module]:
        return [self.backbone_, self.bottleneck_, self.head_]

    def to(self, device) -> "SimCLR":
        self.device_ = torch.device(device)
        for net in self._nets():
            net.to(self.device_)
        return self

    @property
    def code_dim(self) -> int:
        """h's width (512·width/64 for ResNet-18, 2048·width/64 for ResNet-50, 64·widen for WRN), or ``repr_dim``."""
        if self.repr_dim:
            return int(self.repr_dim)
        return {"resnet18": 8 * self.width, "resnet50": 32 * self.width, "wrn28": 64 * self.widen,
                "conv": self.hidden}[self.backbone]

    def _representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck_(self.backbone_(x))

    # -- training ----------------------------------------------------------------------
    def views(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One augmented view of each image of ``x`` (in [0, 1]), drawn from ``g``."""
        if self.augment == "gauss":
            return x + self.gauss_sigma * torch.randn(x.shape, generator=g, device=x.device)
        v = random_resized_crop(x, g, min_area=self.crop_min_area, flip=self.flip)
        if self.jitter_strength > 0:
            jittered = color_jitter(v, g, self.jitter_strength)
            apply = (torch.rand(x.shape[0], generator=g, device=x.device) < self.jitter_p)[:, None, None, None]
            v = torch.where(apply, jittered, v)
        if x.shape[1] == 3 and self.grayscale_p > 0:
            gray = (torch.rand(x.shape[0], generator=g, device=x.device) < self.grayscale_p)[:, None, None, None]
            v = torch.where(gray, _gray(v).expand_as(v), v)
        if self.blur:
            v = gaussian_blur(v, g)
        return v

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            params = [p for net in self._nets() for p in net.parameters()]
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        decay, exclude = [], []
        for net in self._nets():
            for name, p in net.named_parameters():
                (exclude if p.ndim == 1 else decay).append(p)  # biases and BatchNorm weights: 1-d
        lr = self.lr * self.batch_size / 256  # simclr: learning_rate_scaling = "linear"
        return LARS([{"params": decay}, {"params": exclude, "exclude": True, "weight_decay": 0.0}],
                    lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> "SimCLR":
        dev = resolve_device(device)
        seed_everything(seed)
        rng = np.random.default_rng(seed)
        g = torch.Generator(device=dev).manual_seed(seed)
        self._build(data.image_shape)
        self.to(dev)
        for net in self._nets():
            net.train()
        optimiser = self._optimizer()
        per_epoch = max(1, math.ceil(len(data) / self.batch_size))
        warm = self.warmup_epochs * per_epoch
        total = self.steps

        def factor(step: int) -> float:  # linear warm-up, then cosine to 0 (simclr model_util.WarmUpAndCosineDecay)
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1.0, total - warm)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
        self.history_: list[tuple[int, float]] = []
        bar = tqdm(range(1, self.steps + 1), desc=f"fit {type(self).__name__}", disable=not progress, leave=False)
        nonfinite = torch.zeros((), dtype=torch.bool, device=dev)
        for step in bar:
            idx = rng.integers(0, len(data), size=self.batch_size)
            x = torch.from_numpy(data.images(idx)).to(dev)
            v1, v2 = self.views(x, g), self.views(x, g)
            h = self._representation(torch.cat([v1, v2]))
            z = self.head_(h)
            loss = nt_xent(z[: len(x)], z[len(x):], self.temperature)
            nonfinite |= ~torch.isfinite(loss.detach())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            lr = optimiser.param_groups[0]["lr"]
            optimiser.step()
            scheduler.step()
            if step % self.log_every == 0 or step == self.steps:
                value = float(loss.detach())
                self.history_.append((step, value))
                self.log_scalars(step, loss=value, lr=lr)
                bar.set_postfix(loss=f"{value:.3f}")
                if bool(nonfinite):
                    raise DivergedError(f"{type(self).__name__}: loss became NaN/inf by step {step} "
                                        f"(lr={self.lr}, batch_size={self.batch_size}); lower the learning rate")
        for net in self._nets():
            net.eval()
        self._fitted = True
        return self

    # -- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: np.ndarray, *, stochastic: bool = False, seed: int | None = None) -> np.ndarray:
        """The representation h (or the ``repr_dim`` bottleneck) of images ``x``, (N, D)."""
        self.check_fitted()
        if stochastic:
            raise TypeError(f"{type(self).__name__} encodes deterministically; stochastic=True is not available")
        x = as_images(x, self.input_shape)
        for net in self._nets():
            net.eval()
        out = [self._representation(torch.from_numpy(x[i:i + self.eval_batch_size]).to(self.device_)).float().cpu()
               for i in range(0, len(x), self.eval_batch_size)]
        dim = self.repr_dim or self.backbone_.out_dim
        return torch.cat(out).numpy() if out else np.zeros((0, dim), np.float32)

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"backbone": {k: v.cpu() for k, v in self.backbone_.state_dict().items()},
                "bottleneck": {k: v.cpu() for k, v in self.bottleneck_.state_dict().items()},
                "head": {k: v.cpu() for k, v in self.head_.state_dict().items()},
                "history": [list(h) for h in self.history_]}

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        self._build(input_shape)
        self.backbone_.load_state_dict(state["backbone"])
        self.bottleneck_.load_state_dict(state["bottleneck"])
        self.head_.load_state_dict(state["head"])
        for net in self._nets():
            net.eval()
        self.history_ = [tuple(h) for h in state.get("history", [])]


class SimCLRGauss(SimCLR):
    """SimCLR-Gauss (DRL §3.1): the only augmentation is additive Gaussian noise x + σ ε (σ = ``gauss_sigma``).

    Its encoder is WRN-28-2, the one DRL's App. F gives every method of its downstream comparison.
    """

    # 2: WRN-28-2 (was ResNet-18), the reference head and loss scale (SimCLR's version 2)
    defaults = {**SIMCLR_DEFAULTS, "augment": "gauss", "backbone": "wrn28", "widen": 2}
