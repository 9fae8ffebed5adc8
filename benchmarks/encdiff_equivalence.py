"""EncDiff's networks and LDM's VQ-f4 first stage against the authors' (SelenaGeRuiqi/EncDiff at 596a29d),
through the converters a grid's ``pretrained`` stages use.

1. Builds the reference networks from a checkout of the authors' code at the shipped Shapes3D
   configs (``configs/autoencoder/shapes3d_vq_4_16.yaml``, ``configs/latent-diffusion/shapes3d-vq-4-16-encdiff.yaml``):
   ``ldm/modules/diffusionmodules/model.py`` ``Encoder`` / ``Decoder`` with 1×1 ``quant_conv`` /
   ``post_quant_conv`` and a codebook (``VQModelInterface``; taming's ``quantize.embedding``),
   ``openaimodel_enc.py`` ``UNetModel`` and ``Encoder4``; every parameter and BatchNorm statistic gets
   seeded random values (zero-initialised convs and norms too);
2. saves them in the authors' layout — a LatentDiffusion Lightning checkpoint (``first_stage_model.*``,
   ``model.diffusion_model.*``, ``model_ema.*`` with EMA copies = the live weights + 0.01·noise, so reading the
   EMA is checked, ``cond_stage_model.*``, schedule buffers, ``scale_factor``) — and converts it with
   :mod:`bench.released.ldm_family` into our ``vq-f4`` and ``encdiff`` adapters at the ``paper`` presets
   (every tensor consumed, every one of ours filled);
3. runs both on the same inputs: first-stage encode (pre-quantisation latent) and decode of 64×64×3
   images; the UNet's ε at t = 0, 250, 999 and a mixed batch on 16×16×3 latents with the concept tokens of
   the encoder (EMA UNet weights on the reference side too), the encoder's concept tokens in eval mode.

Prints the largest absolute and relative difference per output and the parameter counts; exits 1 above
1e-4 relative (target 1e-5). The reference's forward needs ``einops``; other third-party imports are stubbed
(``benchmarks/reference_counts.py``). Nothing of the reference is copied into this project.

Run: ``python benchmarks/encdiff_equivalence.py [--reference PATH] [--seed 0]`` (default: the EncDiff mirror).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.disdiff_latent_equivalence import _randomise  # noqa: E402
from benchmarks.reference_counts import _import_with_stubs, n_params  # noqa: E402

COMMIT = "596a29d"
MIRROR = "/work/.mirror/SelenaGeRuiqi+EncDiff/repo"
DD = dict(ch=32, out_ch=3, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=[], dropout=0.0, in_channels=3,
          resolution=64, z_channels=3, double_z=False)
UNET = dict(image_size=16, in_channels=3, out_channels=3, model_channels=64, attention_resolutions=[1, 2, 4],
            num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_scale_shift_norm=True, resblock_updown=True,
            use_spatial_transformer=True, context_dim=16, latent_unit=20)
ENCODER = dict(d=128, context_dim=16, latent_unit=20)


def reference(git_dir: str, seed: int):
    tmp = tempfile.mkdtemp(prefix="encdiff_ref_")
    out = subprocess.run(["git", f"--git-dir={git_dir}", "archive", COMMIT, "ldm"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tf:
        tf.extractall(tmp, filter="data")
    sys.path.insert(0, tmp)
    model = _import_with_stubs("ldm.modules.diffusionmodules.model", ("ldm",))
    oa = _import_with_stubs("ldm.modules.diffusionmodules.openaimodel_enc", ("ldm",))
    for name in ("omegaconf", "omegaconf.listconfig"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["omegaconf.listconfig"].ListConfig = list
    gen = torch.Generator().manual_seed(seed)
    nets = {"encoder": model.Encoder(**DD), "decoder": model.Decoder(**DD), "quant_conv": nn.Conv2d(3, 3, 1),
            "post_quant_conv": nn.Conv2d(3, 3, 1), "quantize": nn.Module(), "unet": oa.UNetModel(**UNET),
            "cond": oa.Encoder4(**ENCODER)}
    nets["quantize"].embedding = nn.Embedding(2048, 3)
    for net in nets.values():
        _randomise(net, gen)
        net.eval()
    return nets


def checkpoint(ref: dict, gen: torch.Generator, path: str) -> dict[str, torch.Tensor]:
    """The reference networks in LatentDiffusion's layout; returns the EMA UNet weights written."""
    state: dict[str, torch.Tensor] = {}
    for part in ("encoder", "decoder", "quant_conv", "post_quant_conv", "quantize"):
        state.update({f"first_stage_model.{part}.{k}": v for k, v in ref[part].state_dict().items()})
    unet = ref["unet"].state_dict()
    state.update({f"model.diffusion_model.{k}": v for k, v in unet.items()})
    ema = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in ref["unet"].named_parameters()}
    state.update({"model_ema." + ("diffusion_model." + k).replace(".", ""): v for k, v in ema.items()})
    state.update({"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(1000, dtype=torch.int)})
    state.update({f"cond_stage_model.{k}": v for k, v in ref["cond"].state_dict().items()})
    betas = torch.linspace(0.0015 ** 0.5, 0.0155 ** 0.5, 1000, dtype=torch.float64) ** 2
    state.update({"betas": betas.float(), "alphas_cumprod": torch.cumprod(1 - betas, 0).float(),
                  "scale_factor": torch.tensor(0.83)})
    torch.save({"state_dict": state, "epoch": 1, "global_step": 1000}, path)
    return ema


def _diff(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    a = (ours.double() - ref.double()).abs().max().item()
    return a, a / max(ref.double().abs().max().item(), 1e-30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", default=os.environ.get("BENCH_REFERENCE_ENCDIFF", MIRROR))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not os.path.isdir(args.reference):
        print(f"no reference checkout at {args.reference}: git clone https://github.com/SelenaGeRuiqi/EncDiff",
              file=sys.stderr)
        return 2
    ref = reference(args.reference, args.seed)
    from bench import registry
    from bench.released import convert as released

    gen = torch.Generator().manual_seed(args.seed + 1)
    shape = (3, 64, 64)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "encdiff.ckpt")
        ema = checkpoint(ref, gen, path)
        with torch.no_grad():
            for k, p_ in ref["unet"].named_parameters():  # the reference evaluates in its ema_scope
                p_.copy_(ema[k])

        def params(method: str) -> dict:
            return registry.methods().load(method).from_preset("paper").get_params()

        vq = released.convert("vq-f4", path, params("vq-f4"), shape, {})
        enc = released.convert("encdiff", path, params("encdiff"), shape, {"first_stage": vq})
    print(f"reference: SelenaGeRuiqi/EncDiff {COMMIT} ({args.reference}); converted with bench.released "
          f"(scale factor {enc.scale_factor_:.2f})")
    counts = [("VQ-f4 first stage", n_params(vq.ae_), sum(n_params(ref[k]) for k in
                                                            ("encoder", "decoder", "quant_conv", "post_quant_conv", "quantize"))),
              ("EncDiff UNet", n_params(enc.unet_), n_params(ref["unet"])),
              ("EncDiff Encoder4", n_params(enc.encoder_), n_params(ref["cond"]))]
    print(f"\n{'network':20s} {'ours':>12s} {'reference':>12s}")
    for name, a, b in counts:
        print(f"{name:20s} {a:12,d} {b:12,d}{'' if a == b else '  DIFFERENT'}")
    x = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    rows = []
    with torch.no_grad():
        h_ref = ref["quant_conv"](ref["encoder"](x))
        rows.append(("first stage encode (pre-quantisation h)", *_diff(vq.ae_.encode_prequant(x), h_ref)))
        rows.append(("first stage decode (unquantised h)", *_diff(vq.ae_.decode_latent(h_ref, quantize=False),
                                                                 ref["decoder"](ref["post_quant_conv"](h_ref)))))
        codes_ref = ref["cond"](x)
        codes = enc.encoder_(x)
        rows.append(("Encoder4 concept tokens (eval)", *_diff(enc.encoder_.tokens(codes).flatten(1), codes_ref.flatten(1))))
        z = torch.randn(2, 3, 16, 16, generator=gen)
        for t in ([0, 0], [250, 250], [999, 999], [17, 803]):
            tt = torch.tensor(t)
            rows.append((f"UNet eps (t={t})", *_diff(enc.unet_(z, tt, enc.encoder_.tokens(codes)),
                                                     ref["unet"](z, tt, context=[codes_ref]))))
    print(f"\n{'output (fp32, batch 2)':45s} {'max abs':>11s} {'max rel':>11s}")
    worst = 0.0
    for name, a, r in rows:
        worst = max(worst, r)
        print(f"{name:45s} {a:11.3e} {r:11.3e}")
    print(f"(relative = max |ours - reference| / max |reference|; target <= 1e-05; worst {worst:.2e})")
    return 1 if worst > 1e-4 or any(a != b for _, a, b in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
