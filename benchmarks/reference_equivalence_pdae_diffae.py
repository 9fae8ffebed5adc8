"""Released PDAE / DiffAE checkpoints load into our adapters with the authors' outputs (issue 26).

For each method this script builds the authors' networks from a checkout of their code
(ckczzj/PDAE: ``model/unet.py: UNet``, ``model/shift_unet.py: ShiftUNet``,
``model/representation_learning/encoder/celeba64.py``, ``model/mlp_skip_net.py: MLPSkipNet``
with ``config/celeba64_latent.yml``; phizaz/diffae: ``templates.py:
celeba64d2c_autoenc`` / ``ffhq128_autoenc_130M`` → ``BeatGANsAutoencModel``, and
``templates_latent.py: celeba64d2c_autoenc_latent``, which adds the latent DDPM ``MLPSkipNet``), gives *every*
parameter random values (the zero-initialised convs and the norms too), saves them in the
authors' checkpoint format (``torch.save`` of the trainers' dicts; DiffAE's Lightning
``state_dict`` with ``model``/``ema_model``/``x_T``; the non-EMA copies get *other* random
values, so taking the wrong one would show), loads the file, converts it with
:mod:`bench.released.pdae` / :mod:`bench.released.diffae`, loads the result into our adapters
(``load_state_dict``, strict), and compares the outputs on the same inputs: the denoiser at
t = 0, 250, 999 and a mixed batch, PDAE's gradient estimator, the encoders' codes, DiffAE's
latent DDPM. It prints the
largest absolute and relative (to the reference output's largest magnitude) difference per
network, in fp32 on the CPU, and the parameter counts, ours against the reference's.

``--write-layouts`` also writes the authors' key names and shapes to
``tests/data/released/{pdae,diffae}_celeba64.json`` (the tests read them; no reference code there).

Usage::

    python benchmarks/reference_equivalence_pdae_diffae.py --pdae-reference PATH --diffae-reference PATH [--write-layouts]

(``PATH``: a clone or bare mirror of each repository; ``$BENCH_REFERENCE_PDAE`` /
``$BENCH_REFERENCE_DIFFAE`` otherwise.)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_counts import (  # noqa: E402
    STUBBED, _export, _head_commit, _import_with_stubs, _quiet, reference_git_dir,
)
from bench.released import _keymap as km  # noqa: E402
from bench.released import diffae as rdiffae  # noqa: E402
from bench.released import pdae as rpdae  # noqa: E402

TIMES = {"t=0": [0], "t=250": [250], "t=999": [999], "mixed": [0, 250, 999, 500]}
TOLERANCE = 1e-5  # relative, fp32

#: PDAE's CelebA-64 DPM (``pre-trained-dpms/celeba64/config.yml`` is on Google Drive, not in git; the
#: values of benchmarks/reference_counts.py: PDAE_CELEBA64_DPM)
from benchmarks.reference_counts import PDAE_CELEBA64_DPM, PDAE_LATENT_DENOISER  # noqa: E402

DIFFAE_ROOTS = ("model", "choices", "config_base", "config", "templates", "templates_latent", "templates_cls",
                "experiment", "experiment_classifier", "dataset", "diffusion", "renderer", "metrics", "dist_utils",
                "lmdb_writer", "dataset_util", "ssim", "align", "predict")


def diffae_git_dir(path: str | None) -> str:
    path = path or os.environ.get("BENCH_REFERENCE_DIFFAE")
    if not path:
        raise SystemExit("phizaz/diffae checkout not given: `git clone https://github.com/phizaz/diffae` and pass "
                         "--diffae-reference PATH or set BENCH_REFERENCE_DIFFAE=PATH")
    git_dir = os.path.join(path, ".git") if os.path.exists(os.path.join(path, ".git")) else path
    return git_dir


def randomize(module: nn.Module, gen: torch.Generator) -> None:
    """Every parameter random: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1²), norm scales ~ 1 + N(0, 0.1²)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            elif name.endswith("weight"):  # GroupNorm scale
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _save_load(obj: dict) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=False)


def _optimizer_state(module: nn.Module) -> dict:
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in params:
        p.grad = None
    return opt.state_dict()


def _diff(ref: torch.Tensor, ours: torch.Tensor) -> tuple[float, float]:
    ref, ours = ref.double(), ours.double()
    absd = (ref - ours).abs().max().item()
    return absd, absd / max(ref.abs().max().item(), 1e-30)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _purge(roots: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in roots:
            del sys.modules[name]


def _import_reference(git_dir: str, paths: list[str], roots: tuple[str, ...], names: list[str]) -> dict[str, Any]:
    _purge(roots)
    tmp = tempfile.mkdtemp(prefix="released_ref_")
    _export(git_dir, paths, tmp)
    sys.path.insert(0, tmp)
    try:
        with _quiet():
            return {n: _import_with_stubs(n, roots) for n in names}
    finally:
        sys.path.remove(tmp)


# --------------------------------------------------------------------------------------------
# PDAE
# --------------------------------------------------------------------------------------------


def pdae_rows(git_dir: str, write_layouts: bool) -> tuple[list[tuple], list[tuple], dict]:
    from methods.ddpm import DDPM
    from methods.pdae import PDAE

    mods = _import_reference(git_dir, ["model"], ("model",),
                             ["model.unet", "model.shift_unet", "model.representation_learning.encoder.celeba64",
                              "model.mlp_skip_net"])
    gen = torch.Generator().manual_seed(0)
    shape = rpdae.RELEASED_INPUT_SHAPE

    # stage 1: the DPM checkpoint (trainer/train_regular_diffusion.py: save)
    ref_unet = mods["model.unet"].UNet(**PDAE_CELEBA64_DPM).eval()
    randomize(ref_unet, gen)
    other = mods["model.unet"].UNet(**PDAE_CELEBA64_DPM)
    randomize(other, gen)
    dpm_file = _save_load({"step": 1000, "denoise_fn": other.state_dict(), "ema_denoise_fn": ref_unet.state_dict(),
                           "optimizer": _optimizer_state(other), "scaler": {"scale": 65536.0, "_growth_tracker": 0}})
    dpm_params = DDPM.presets["released-pdae-celeba64"]
    dpm = DDPM(**dpm_params)
    dpm.load_state_dict({"nets": rpdae.dpm_to_ours(km.flatten(dpm_file), dpm_params), "history": []}, shape)
    dpm._fitted = True
    exported = rpdae.dpm_to_reference(dpm.state_dict(), dpm_params)
    flat = km.flatten(dpm_file)
    dpm_round = all(torch.equal(exported[k], flat[k]) for k in exported) and len(exported) == len(ref_unet.state_dict())

    # stage 2: the PDAE checkpoint (trainer/train_representation_learning.py: save; the DPM loaded strict=False)
    enc_cls = mods["model.representation_learning.encoder.celeba64"].CELEBA64Encoder
    shift_cls = mods["model.shift_unet"].ShiftUNet
    ref_enc = enc_cls(latent_dim=512).eval()
    randomize(ref_enc, gen)
    ref_dec = shift_cls(latent_dim=512, **PDAE_CELEBA64_DPM)
    randomize(ref_dec, gen)
    ref_dec.load_state_dict(ref_unet.state_dict(), strict=False)  # load_trained_ddpm
    ref_dec.eval()
    other_enc, other_dec = enc_cls(latent_dim=512), shift_cls(latent_dim=512, **PDAE_CELEBA64_DPM)
    randomize(other_enc, gen)
    randomize(other_dec, gen)
    pdae_file = _save_load({"encoder": other_enc.state_dict(), "ema_encoder": ref_enc.state_dict(),
                            "decoder": other_dec.state_dict(), "ema_decoder": ref_dec.state_dict(),
                            "optimizer": _optimizer_state(other_enc), "scaler": {"scale": 65536.0}})
    params = PDAE.presets["released"]
    nets = rpdae.to_ours(km.flatten(pdae_file), params)
    for key, value in nets["unet"].items():  # the frozen DPM in ema_decoder is the DPM checkpoint's
        if not torch.equal(value, dpm.state_dict()["nets"]["unet"][key]):
            raise AssertionError(f"PDAE: ema_decoder's frozen {key} differs from ema_denoise_fn's")
    # the latent DDPM (trainer/train_latent_diffusion.py: save) and its code statistics (sampler/infer_latents.py)
    mlp_cls = mods["model.mlp_skip_net"].MLPSkipNet
    ref_mlp = mlp_cls(**PDAE_LATENT_DENOISER).eval()
    randomize(ref_mlp, gen)
    other_mlp = mlp_cls(**PDAE_LATENT_DENOISER)
    randomize(other_mlp, gen)
    latent_file = _save_load({"step": 1000, "encoder": ref_enc.state_dict(), "decoder": ref_dec.state_dict(),
                              "latent_denoise_fn": other_mlp.state_dict(),
                              "ema_latent_denoise_fn": ref_mlp.state_dict(),
                              "optimizer": _optimizer_state(other_mlp), "scaler": {"scale": 65536.0}})
    stats = _save_load({"mean": torch.randn(512, generator=gen), "std": torch.rand(512, generator=gen) + 0.5})
    latent_flat = {**km.flatten(latent_file), **km.flatten({"latents": stats})}
    latent_state = rpdae.latent_to_ours(latent_flat, params)

    model = PDAE(**params)
    model.components_ = {"dpm": dpm}
    model.load_state_dict({"nets": {"encoder": nets["encoder"], "shift": nets["shift"]}, "history": [],
                           "latent": latent_state}, shape)
    exported = rpdae.to_reference({**model.state_dict()["nets"], "unet": nets["unet"]}, params)
    flat = km.flatten(pdae_file)
    pdae_round = all(torch.equal(exported[k], flat[k]) for k in exported)
    exported = rpdae.latent_to_reference(model.state_dict(), params)
    latent_round = (all(torch.equal(exported[k], latent_flat[k]) for k in exported)
                    and len(exported) == len(ref_mlp.state_dict()) + 2)

    rows = []
    x = torch.randn(4, *shape, generator=gen)
    with torch.no_grad():
        ours_unet = dpm.unet_.eval()
        for label, ts in TIMES.items():
            t = torch.tensor((ts * 4)[:4] if len(ts) == 1 else ts)
            rows.append(("PDAE DPM ε(x_t, t)", label, *_diff(ref_unet(x, t), ours_unet(x, t))))
        z_ref = ref_enc(x)
        z = model.encoder_.eval()(x)
        rows.append(("PDAE encoder z", "-", *_diff(z_ref, z)))
        for label, ts in TIMES.items():
            t = torch.tensor((ts * 4)[:4] if len(ts) == 1 else ts)
            eps_ref, g_ref = ref_dec(x, t, z_ref)
            eps, h, skips, temb = model.frozen_.eval()(x, t)
            g = model.shift_.eval()(h, skips, temb, z_ref)
            rows.append(("PDAE ShiftUNet ε (frozen)", label, *_diff(eps_ref, eps)))
            rows.append(("PDAE G(x_t, z, t)", label, *_diff(g_ref, g)))
        zt = torch.randn(4, 512, generator=gen)
        for label, ts in TIMES.items():
            t = torch.tensor((ts * 4)[:4] if len(ts) == 1 else ts)
            rows.append(("PDAE latent ε(z_t, t)", label, *_diff(ref_mlp(zt, t), model.latent_net_.eval()(zt, t))))
    trained_ref = (_count(ref_dec.label_emb) + _count(ref_dec.shift_middle_block)
                   + _count(ref_dec.shift_output_blocks) + _count(ref_dec.shift_out))
    counts = [("PDAE DPM (ddpm released-pdae-celeba64)", _count(ours_unet), _count(ref_unet)),
              ("PDAE encoder", _count(model.encoder_), _count(ref_enc)),
              ("PDAE G (shift branch)", _count(model.shift_), trained_ref),
              ("PDAE trained (encoder + G)", _count(model.encoder_) + _count(model.shift_), trained_ref + _count(ref_enc)),
              ("PDAE latent DDPM", _count(model.latent_net_), _count(ref_mlp))]
    checks = {"PDAE DPM export→import→export identity": dpm_round, "PDAE export→import→export identity": pdae_round,
              "PDAE latent export→import→export identity": latent_round}
    if write_layouts:
        _write(rpdae.LAYOUT_FILE, {
            "source": f"ckczzj/PDAE {_head_commit(git_dir)}: model/unet.py UNet, model/shift_unet.py ShiftUNet, "
                      f"model/representation_learning/encoder/celeba64.py (latent_dim 512), DPM config "
                      f"benchmarks/reference_counts.py PDAE_CELEBA64_DPM; EMA entries of the trainers' checkpoints",
            "dpm": {f"ema_denoise_fn.{k}": list(v.shape) for k, v in ref_unet.state_dict().items()},
            "pdae": {**{f"ema_encoder.{k}": list(v.shape) for k, v in ref_enc.state_dict().items()},
                     **{f"ema_decoder.{k}": list(v.shape) for k, v in ref_dec.state_dict().items()}},
            "latent": {**{f"ema_latent_denoise_fn.{k}": list(v.shape) for k, v in ref_mlp.state_dict().items()},
                       "latents.mean": [512], "latents.std": [512]},
        })
    return rows, counts, checks


# --------------------------------------------------------------------------------------------
# DiffAE
# --------------------------------------------------------------------------------------------


def diffae_rows(git_dir: str, write_layouts: bool) -> tuple[list[tuple], list[tuple], dict]:
    from methods.diffae import DiffAE

    files = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "--name-only", "HEAD"],
                           capture_output=True, text=True, check=True).stdout.split()
    mods = _import_reference(git_dir, [f for f in files if f.endswith(".py")], DIFFAE_ROOTS,
                             ["templates", "templates_latent"])
    gen = torch.Generator().manual_seed(1)
    rows, counts, checks = [], [], {}
    # the autoencoders' checkpoints, and a latent-DDPM checkpoint (which holds its autoencoder too)
    for module, template, preset, side in (("templates", "celeba64d2c_autoenc", "released-celeba64", 64),
                                           ("templates", "ffhq128_autoenc_130M", "released-ffhq128", 128),
                                           ("templates_latent", "celeba64d2c_autoenc_latent", "released-celeba64", 64)):
        latent = module == "templates_latent"
        with _quiet():
            conf = getattr(mods[module], template)()
            ref = conf.make_model_conf().make_model().eval()
            other = conf.make_model_conf().make_model()
        randomize(ref, gen)
        randomize(other, gen)
        state = {**{f"model.{k}": v for k, v in other.state_dict().items()},
                 **{f"ema_model.{k}": v for k, v in ref.state_dict().items()},
                 "x_T": torch.randn(16, 3, side, side, generator=gen)}
        if latent:  # LitModel's z-normalisation buffers, (1, D)
            state["conds_mean"] = torch.randn(1, 512, generator=gen)
            state["conds_std"] = torch.rand(1, 512, generator=gen) + 0.5
        ckpt = _save_load({"epoch": 10, "global_step": 1000, "pytorch-lightning_version": "1.4.5",
                           "state_dict": state, "optimizer_states": [_optimizer_state(other)], "lr_schedulers": [],
                           "callbacks": {}})
        params = DiffAE.presets[preset]
        shape = (3, side, side)
        model = DiffAE(**params)
        model.load_state_dict(rdiffae.adapter_state(rdiffae.to_ours(km.flatten(ckpt), params, shape)), shape)
        exported = rdiffae.to_reference(model.state_dict(), params, shape)
        flat = km.flatten(ckpt)
        checks[f"DiffAE {template} export→import→export identity"] = (
            all(torch.equal(exported[k], flat[k]) for k in exported)
            and len(exported) == len(ref.state_dict()) + 2 * latent)
        if latent:
            n = 4
            zt = torch.randn(n, 512, generator=gen)
            with torch.no_grad():
                for label, ts in TIMES.items():
                    t = torch.tensor((ts * n)[:n] if len(ts) == 1 else ts[:n])
                    rows.append((f"DiffAE {template} latent ε(z_t, t)", label,
                                 *_diff(ref.latent_net(zt, t).pred, model.latent_net_.eval()(zt, t))))
            counts.append((f"DiffAE {template} latent DDPM", _count(model.latent_net_), _count(ref.latent_net)))
            if write_layouts:
                data = json.loads(rdiffae.LAYOUT_FILE.read_text())
                data["latent"] = {**{f"state_dict.ema_model.latent_net.{k}": list(v.shape)
                                     for k, v in ref.latent_net.state_dict().items()},
                                  "state_dict.conds_mean": [1, 512], "state_dict.conds_std": [1, 512]}
                data["source"] += "; latent: templates_latent.py celeba64d2c_autoenc_latent (MLPSkipNet, LitModel buffers)"
                _write(rdiffae.LAYOUT_FILE, data)
            continue
        n = 2 if side == 128 else 4
        x = torch.randn(n, *shape, generator=gen)
        x_t = torch.randn(n, *shape, generator=gen)
        with torch.no_grad():
            z_ref = ref.encoder(x)
            z = model.encoder_.eval()(x)
            rows.append((f"DiffAE {template} encoder z", "-", *_diff(z_ref, z)))
            for label, ts in TIMES.items():
                t = torch.tensor((ts * n)[:n] if len(ts) == 1 else ts[:n])
                out_ref = ref(x_t, t, cond=z_ref).pred
                out = model.unet_.eval()(x_t, t, z_ref)
                rows.append((f"DiffAE {template} ε(x_t, t, z)", label, *_diff(out_ref, out)))
        counts += [(f"DiffAE {template} denoiser", _count(model.unet_), _count(ref) - _count(ref.encoder)),
                   (f"DiffAE {template} encoder", _count(model.encoder_), _count(ref.encoder))]
        if write_layouts and template == "celeba64d2c_autoenc":
            _write(rdiffae.LAYOUT_FILE, {
                "source": f"phizaz/diffae {_head_commit(git_dir)}: templates.py celeba64d2c_autoenc -> "
                          f"BeatGANsAutoencModel; Lightning checkpoint state_dict.ema_model entries",
                "diffae": {f"state_dict.ema_model.{k}": list(v.shape) for k, v in ref.state_dict().items()},
            })
    return rows, counts, checks


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=0) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pdae-reference", default=None)
    ap.add_argument("--diffae-reference", default=None)
    ap.add_argument("--write-layouts", action="store_true")
    ap.add_argument("--only", choices=("pdae", "diffae"), default=None)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    rows, counts, checks = [], [], {}
    if args.only in (None, "pdae"):
        r = pdae_rows(reference_git_dir("pdae", args.pdae_reference), args.write_layouts)
        rows += r[0]; counts += r[1]; checks.update(r[2])  # noqa: E702
    if args.only in (None, "diffae"):
        r = diffae_rows(diffae_git_dir(args.diffae_reference), args.write_layouts)
        rows += r[0]; counts += r[1]; checks.update(r[2])  # noqa: E702
    print(f"\n| network | t | max abs diff | max rel diff | ≤ {TOLERANCE:g} |")
    print("|---|---|---|---|---|")
    ok = True
    for name, t, absd, rel in rows:
        ok &= rel <= TOLERANCE
        print(f"| {name} | {t} | {absd:.3e} | {rel:.3e} | {'yes' if rel <= TOLERANCE else 'NO'} |")
    print("\n| network | ours | reference | equal |")
    print("|---|---|---|---|")
    for name, ours, ref in counts:
        ok &= ours == ref
        print(f"| {name} | {ours:,} | {ref:,} | {'yes' if ours == ref else 'NO'} |")
    print()
    for name, good in checks.items():
        ok &= bool(good)
        print(f"{name}: {'yes' if good else 'NO'}")
    print("stubbed modules (not installed here):", ", ".join(sorted(set(STUBBED))) or "none")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
