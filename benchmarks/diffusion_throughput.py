"""Training and sampling throughput of the diffusion adapters (and, optionally, the reference code).

For each adapter at its ``paper`` preset on 64×64 images this prints

* the parameters of the trained networks and the FLOPs of one training step per image,
  counted with ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward of the
  loss, on the meta device: no memory, no compute);
* training images/s through the adapter's own training step (``setup_training`` /
  ``train_step``: data pool on the device, bf16 autocast, channels-last, fused AdamW,
  optional ``torch.compile``), timed after warm-up between two device synchronisations;
* model FLOP utilisation = FLOPs/image × images/s ÷ the GPU's dense bf16 peak
  (H100 SXM and H200: 989.4 TFLOP/s; A100: 312; otherwise pass ``--peak-tflops``);
* DDIM sampling images/s of the decoder chain (``ddim_steps`` denoiser calls per image,
  with random codes for the autoencoders).

``--reference-dir`` points at a checkout of isjakewong/InfoDiffusion (dev branch) and adds
its training step, timed in the same process on the same GPU: "as released" (fp32, the
``print`` of three loss tensors per step that synchronises the host) and with bf16 autocast.

Examples::

    python benchmarks/diffusion_throughput.py                          # GPU, paper presets, batch 256
    python benchmarks/diffusion_throughput.py --compile --batch-size 256
    python benchmarks/diffusion_throughput.py --reference-dir /tmp/InfoDiffusion-dev
    python benchmarks/diffusion_throughput.py --tiny                   # CPU smoke check, seconds
    python benchmarks/diffusion_throughput.py --flops-only             # FLOPs and parameters only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import registry
from bench.adapter import resolve_device
from bench.data.base import ImageDataset

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
METHODS = ("ddpm", "diffae", "infodiffusion", "pdae", "disdiff")


class RandomImages(ImageDataset):
    """``n`` uniform-noise images (content does not change the cost of a step)."""

    name = "random-images"

    def __init__(self, n: int, shape: tuple[int, int, int], seed: int = 0) -> None:
        self.n, self.shape = n, shape
        self.data = np.random.default_rng(seed).random((n, *shape), dtype=np.float32)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.shape

    def __len__(self) -> int:
        return self.n

    def images(self, indices) -> np.ndarray:
        return self.data[np.asarray(indices)]


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def attach_components(adapter, shape: tuple[int, int, int], preset: str = "paper") -> None:
    """Give ``adapter`` its declared components at ``preset``, built (untrained: weights do not change FLOPs or speed)."""
    components = {}
    for name, spec in adapter.components.items():
        if not spec.needed(adapter.get_params()):
            continue
        ccls = registry.methods().load(spec.method)
        cpreset = spec.preset_for(preset)
        component = ccls(**{**ccls.presets[cpreset], **spec.params_for(adapter.get_params())})
        attach_components(component, shape, cpreset)  # latent DisDiff's ldm has its own first stage
        with torch.random.fork_rng(devices=[]):
            component._build(shape)
        component.input_shape, component._fitted = tuple(shape), True
        components[name] = component
    adapter.components_ = components


def training_flops_per_image(adapter, shape: tuple[int, int, int], batch: int = 2) -> tuple[float, int]:
    """(FLOPs of forward + backward of the training loss per image, trained parameters).

    The networks are built on the CPU (the adapter's own initialisation), moved to the meta
    device and run there on a batch drawn by the adapter's own ``_draw``: shapes only, so
    FlopCounterMode counts every matmul/convolution without computing anything.
    """
    with torch.random.fork_rng(devices=[]):
        adapter._build(shape)
        state = types.SimpleNamespace(generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                                      pool=torch.rand((batch, *shape)))
        saved = adapter._params["batch_size"]
        adapter._params["batch_size"] = batch
        try:
            drawn = adapter._draw(state)
        finally:
            adapter._params["batch_size"] = saved
    nets = adapter._nets()
    for net in nets.values():
        net.to("meta")
    if getattr(adapter, "components_", None):  # PDAE, DisDiff: the frozen DPM (forward only), DisDiff's encoder copy
        for value in vars(adapter).values():
            if isinstance(value, torch.nn.Module):
                value.to("meta")
        adapter._tables.clear()
    with FlopCounterMode(display=False) as counter:
        adapter._loss({k: v.to("meta") for k, v in drawn.items()}).backward()
    params = sum(p.numel() for net in nets.values() for p in net.parameters())
    return counter.get_total_flops() / batch, params


def time_training(adapter, data, device: torch.device, steps: int, warmup: int) -> float:
    """Images per second of ``adapter.train_step`` after ``warmup`` steps."""
    state = adapter.setup_training(data, seed=0, device=device)
    for _ in range(warmup):
        adapter.train_step(state)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = adapter.train_step(state)
    sync(device)
    elapsed = time.perf_counter() - start
    if not bool(torch.isfinite(loss)):
        raise RuntimeError(f"{type(adapter).__name__}: non-finite loss during the benchmark")
    return steps * adapter.batch_size / elapsed


@torch.no_grad()
def time_sampling(adapter, n: int, device: torch.device) -> float:
    """Images per second of the DDIM decoder chain (``ddim_steps`` steps) for ``n`` images."""
    generator = torch.Generator().manual_seed(0)
    x_T = adapter._x_T(n, generator).to(device)
    if hasattr(adapter, "latent_dim"):
        z = torch.randn((n, adapter.latent_dim), generator=generator).to(device)
        run = lambda: adapter._render(z, x_T, generator, adapter._denoiser)  # noqa: E731
    else:
        from bench.diffusion.samplers import sample_loop

        run = lambda: sample_loop(adapter._denoiser(), adapter._image_sampler(), x_T, generator)  # noqa: E731
    for net in adapter._nets().values():
        net.eval()
    run()  # warm-up (cuDNN autotuning, allocator)
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return n / (time.perf_counter() - start)


# -- the reference code ----------------------------------------------------------------------
def reference_step_fn(ref_dir: Path, device: torch.device, batch: int, amp: bool) -> tuple[Callable[[], Any], Any, Any]:
    """The training step of isjakewong/InfoDiffusion's ``run.py`` (dev branch) on CelebA-64 settings."""
    sys.path.insert(0, str(ref_dir))
    try:
        from models import InfoDiff  # noqa: PLC0415 (the reference's own module names)
    finally:
        sys.path.pop(0)
    args = argparse.Namespace(
        beta1=1e-5, betaT=1e-2, diffusion_steps=1000, input_size=64, unets_channels=64, encoder_channels=64,
        a_dim=32, mmd_weight=0.1, kld_weight=0.0, use_C=False, C_max=25, epochs=50, batch_size=batch,
        is_bottleneck=False, prior="regular",
    )
    torch.backends.cudnn.benchmark = True
    model = InfoDiff(args, device, (3, 64, 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    data = torch.rand((max(4 * batch, 1024), 3, 64, 64), device=device) * 2 - 1
    counter = {"i": 0}

    def step() -> torch.Tensor:
        i = counter["i"] % (data.shape[0] // batch)
        counter["i"] += 1
        x = data[i * batch:(i + 1) * batch]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            loss = model.loss_fn(args, x)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    return step, model, args


def time_reference(ref_dir: Path, device: torch.device, batch: int, amp: bool, steps: int, warmup: int) -> float:
    step, _, _ = reference_step_fn(ref_dir, device, batch, amp)
    with contextlib.redirect_stdout(io.StringIO()):  # its prints still synchronise the host every step
        for _ in range(warmup):
            step()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
    return steps * batch / (time.perf_counter() - start)


def reference_flops_per_image(ref_dir: Path, batch: int = 2) -> tuple[float, int, int]:
    """(FLOPs of forward + backward of the reference loss per image, its parameters, those trained).

    The reference builds a ``CrossAttnBlock`` in every ``AuxResBlock`` and never calls it
    (``use_crossattn=False``), and keeps its sinusoidal table as a frozen embedding: those
    parameters get no gradient and are left out of the third number.
    """
    step, model, args = reference_step_fn(ref_dir, torch.device("cpu"), batch, amp=False)
    x = torch.rand((batch, 3, 64, 64)) * 2 - 1
    with contextlib.redirect_stdout(io.StringIO()), FlopCounterMode(display=False) as counter:
        model.loss_fn(args, x).backward()
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.grad is not None)
    return counter.get_total_flops() / batch, total, trained


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--tiny", action="store_true", help="tiny presets at 32x32 on the CPU: a smoke check")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=None, help="default 64 (32 with --tiny)")
    parser.add_argument("--channels", type=int, default=3, help="3 like CelebA (the reference anchor); 1 for dSprites")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 (8 with --tiny)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30; 3 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10; 1 with --tiny)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training loss (CUDA)")
    parser.add_argument("--no-amp", action="store_true", help="train in fp32 instead of bf16 autocast")
    parser.add_argument("--sample-batch", type=int, default=None, help="images per DDIM timing (default 256; 4 with --tiny)")
    parser.add_argument("--ddim-steps", type=int, default=None, help="override the presets' ddim_steps")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device")
    parser.add_argument("--reference-dir", type=Path, default=None, help="a checkout of isjakewong/InfoDiffusion (dev)")
    parser.add_argument("--flops-only", action="store_true", help="count parameters and FLOPs only (no timing)")
    args = parser.parse_args(argv)

    device = torch.device("cpu") if args.tiny else resolve_device(args.device)
    side = args.image_size or (32 if args.tiny else 64)
    batch = args.batch_size or (8 if args.tiny else 256)
    steps, warmup = args.steps or (3 if args.tiny else 30), args.warmup or (1 if args.tiny else 10)
    sample_batch = args.sample_batch or (4 if args.tiny else 256)
    shape = (args.channels, side, side)
    peak = peak_flops(device, args.peak_tflops)
    data = RandomImages(max(batch, 64) if args.tiny else 4096, shape)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else device} | images {shape} | "
          f"batch {batch} | bf16 {'off' if args.no_amp else 'on'} | compile {'on' if args.compile else 'off'} | "
          f"peak {peak / 1e12 if peak else float('nan'):.1f} TFLOP/s")
    header = f"{'method':<22}{'params M':>10}{'GFLOP/img':>11}{'train img/s':>13}{'MFU %':>8}{'DDIM steps':>12}{'sample img/s':>14}"
    print(header)
    print("-" * len(header))
    for name in args.methods:
        cls = registry.methods().load(name)
        overrides: dict[str, Any] = {"batch_size": batch, "compile": args.compile, "amp_bf16": not args.no_amp}
        if args.ddim_steps:
            overrides["ddim_steps"] = args.ddim_steps
        preset = "tiny" if args.tiny else "paper"
        adapter = cls.from_preset(preset, **overrides)
        attach_components(adapter, shape, preset)
        flops, params = training_flops_per_image(adapter, shape)
        row = f"{name + ' (' + preset + ')':<22}{params / 1e6:>10.1f}{flops / 1e9:>11.2f}"
        if args.flops_only:
            print(row)
            continue
        adapter = cls.from_preset(preset, **overrides)
        attach_components(adapter, shape, preset)
        train_ips = time_training(adapter, data, device, steps, warmup)
        mfu = f"{100 * flops * train_ips / peak:>8.1f}" if peak else f"{'n/a':>8}"
        sample_ips = time_sampling(adapter, sample_batch, device)
        print(f"{row}{train_ips:>13.1f}{mfu}{adapter.ddim_steps:>12d}{sample_ips:>14.1f}")
        del adapter
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.reference_dir is not None:
        ref_flops, ref_params, ref_trained = reference_flops_per_image(args.reference_dir)
        print(f"reference parameters: {ref_params / 1e6:.2f} M built, {ref_trained / 1e6:.2f} M trained "
              f"(the rest is never called or frozen)")
        for amp, label in ((False, "reference fp32"), (True, "reference bf16")):
            if args.flops_only:
                print(f"{label:<22}{ref_params / 1e6:>10.1f}{ref_flops / 1e9:>11.2f}")
                break
            ips = time_reference(args.reference_dir, device, batch, amp, steps, warmup)
            mfu = f"{100 * ref_flops * ips / peak:>8.1f}" if peak else f"{'n/a':>8}"
            print(f"{label:<22}{ref_params / 1e6:>10.1f}{ref_flops / 1e9:>11.2f}{ips:>13.1f}{mfu}{'-':>12}{'-':>14}")


if __name__ == "__main__":
    main()
