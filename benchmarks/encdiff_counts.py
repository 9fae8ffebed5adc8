"""Parameters and FLOPs per training image of EncDiff's first stage and UNet: ours beside the reference's.

The reference is SelenaGeRuiqi/EncDiff at its first commit 596a29d (the authors' code), taken from a
local checkout (a clone or a bare mirror, ``git archive 596a29d ldm``) named by ``--reference PATH``
or ``$BENCH_REFERENCE_ENCDIFF`` (the script stops with the ``git clone`` line to run when it is
missing), its networks built with the shipped Shapes3D configs
(``configs/autoencoder/shapes3d_vq_4_16.yaml``, ``configs/latent-diffusion/shapes3d-vq-4-16-encdiff.yaml``).
Its forward needs ``einops`` (``pip install einops``; not a dependency of this project); other
third-party imports (omegaconf, pytorch_lightning, taming, ...) are stubbed as in
``benchmarks/reference_counts.py``. FLOPs are counted by ``torch.utils.flop_counter`` (matmul, conv and
attention kernels, 2 per multiply-add), per image at batch 1, on the CPU:

* first stage: one autoencoder forward of a 64×64×3 image (encoder, quant_conv, nearest-codebook
  search, post_quant_conv, decoder) and the L1 loss; backward into the autoencoder (the LPIPS and
  discriminator parts of the loss are not included: the same VGG16 / PatchGAN on both sides);
* UNet: one ε-prediction on a 16×16×3 latent with the concept tokens of one image (the encoder
  included), L1 loss, and its backward.

Run: ``python benchmarks/encdiff_counts.py [--reference PATH/TO/EncDiff]``.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks.reference_counts import (  # noqa: E402
    REFERENCES, MissingReference, _import_with_stubs, count, reference_git_dir,
)

COMMIT = "596a29d"


def reference(repo: str) -> dict[str, dict]:
    """Count the reference's networks; ``repo``: its git directory (:func:`reference_git_dir`)."""
    with tempfile.TemporaryDirectory(prefix="encdiff_ref_") as tmp:
        r = subprocess.run(["git", f"--git-dir={repo}", "archive", COMMIT, "ldm"], capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:
            tf.extractall(tmp, filter="data")
        sys.path.insert(0, tmp)
        try:
            model = _import_with_stubs("ldm.modules.diffusionmodules.model", ("ldm",))
            oa = _import_with_stubs("ldm.modules.diffusionmodules.openaimodel_enc", ("ldm",))
        finally:
            sys.path.remove(tmp)
    # UNetModel.__init__ imports omegaconf's ListConfig at run time (only for an isinstance check)
    import types

    for name in ("omegaconf", "omegaconf.listconfig"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["omegaconf.listconfig"].ListConfig = list
    dd = dict(ch=32, out_ch=3, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=[], dropout=0.0, in_channels=3,
              resolution=64, z_channels=3, double_z=False)
    enc, dec = model.Encoder(**dd), model.Decoder(**dd)
    quant_conv, post_quant_conv = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 3, 1)
    codebook = torch.nn.Embedding(2048, 3)
    x = torch.rand(1, 3, 64, 64) * 2 - 1

    def vq_loss():
        h = quant_conv(enc(x))
        zf = h.permute(0, 2, 3, 1).reshape(-1, 3)
        d = zf.pow(2).sum(1, keepdim=True) + codebook.weight.pow(2).sum(1) - 2 * zf @ codebook.weight.T
        zq = codebook(d.argmin(1)).view(1, 16, 16, 3).permute(0, 3, 1, 2)
        loss_vq = (zq.detach() - h).pow(2).mean() + 0.25 * (zq - h.detach()).pow(2).mean()
        zq = h + (zq - h).detach()
        return (x - dec(post_quant_conv(zq))).abs().mean() + loss_vq

    first = count(vq_loss, [*enc.parameters(), *dec.parameters(), *quant_conv.parameters(),
                            *post_quant_conv.parameters(), *codebook.parameters()])
    unet = oa.UNetModel(image_size=16, in_channels=3, out_channels=3, model_channels=64, attention_resolutions=[1, 2, 4],
                        num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_scale_shift_norm=True,
                        resblock_updown=True, use_spatial_transformer=True, context_dim=16, latent_unit=20)
    encoder = oa.Encoder4(d=128, context_dim=16, latent_unit=20)
    z, t = torch.randn(1, 3, 16, 16), torch.tensor([500])

    def unet_loss():
        tokens = encoder(x)
        return (unet(z, t, context=[tokens]) - torch.randn_like(z)).abs().mean()

    second = count(unet_loss, [*unet.parameters(), *encoder.parameters()])
    return {"first stage (reference)": first, "UNet + encoder (reference)": second}


def ours() -> dict[str, dict]:
    from bench.diffusion.first_stage import VQAutoencoder
    from bench.diffusion.ldm_unet import CrossAttentionUNet
    from methods.encdiff import EncDiffEncoder

    vq = VQAutoencoder()
    x = torch.rand(1, 3, 64, 64) * 2 - 1

    def vq_loss():
        rec, qloss, _ = vq(x)
        return (x - rec).abs().mean() + qloss

    unet = CrossAttentionUNet(in_channels=3, out_channels=3)
    encoder = EncDiffEncoder(in_channels=3, image_size=64, n_units=20, context_dim=16, channels=128, mode="scalar")
    z, t = torch.randn(1, 3, 16, 16), torch.tensor([500])

    def unet_loss():
        return (unet(z, t, encoder.tokens(encoder(x))) - torch.randn_like(z)).abs().mean()

    return {"first stage (ours)": count(vq_loss, vq.parameters()),
            "UNet + encoder (ours)": count(unet_loss, [*unet.parameters(), *encoder.parameters()])}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo, env = REFERENCES["encdiff"]
    p.add_argument("--reference", "--repo", dest="repo", metavar="PATH",
                   help=f"checkout (clone or bare mirror) of {repo} holding commit {COMMIT}; default: ${env}")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    try:
        git_dir = reference_git_dir("encdiff", args.repo, commit=COMMIT, option="--reference")
    except MissingReference as e:
        sys.exit(str(e))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = {**ours()}
    try:
        rows.update(reference(git_dir))
    except Exception as e:  # noqa: BLE001 - einops missing: print ours anyway
        print(f"reference not built: {e!r}", file=sys.stderr)
    print(f"{'network':32s} {'params':>12s} {'fwd GFLOPs':>11s} {'fwd+bwd GFLOPs':>15s}")
    for name in sorted(rows, key=lambda n: (n.split(" (")[0], n)):
        r = rows[name]
        print(f"{name:32s} {r['total_params']:12,d} {r['fwd_flops'] / 1e9:11.3f} {r['fwdbwd_flops'] / 1e9:15.3f}")


if __name__ == "__main__":
    main()
