"""Our latent DisDiff networks against the authors' (ThomasMrY/DisDiff), parameter for parameter and output for
output.

The reference is ``ldm/modules/diffusionmodules/openaimodel_shift.py: UNetModel`` with the ``unet_config`` of
``configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml`` (``seprate_decoder``, ``orth_emb``, 6 units × 32) and
``ldm/modules/encoders/modules.py: Encoder4`` with its ``cond_stage_config`` (d = 128, latent_dim = 192),
built from the reference code itself. Ours: :class:`bench.diffusion.ldm_openai.OpenAIUNet` (the frozen LDM
UNet), :class:`bench.diffusion.ldm_shift.LDMShiftDecoder` (shift decoder with ``repre_embed``),
:class:`methods.disdiff.PartEmbedding` and :class:`bench.diffusion.encoders.DisDiffEncoder`, at DisDiff's
``paper`` preset (:func:`benchmarks.reference_counts.disdiff_latent_networks`).

What it does:

1. builds a reference ``UNetModel`` with its ``init_model`` fed an empty checkpoint, gives every parameter
   (the zero-initialised output convs and the norms too) and every BatchNorm statistic seeded random values,
   saves its state in LDM's checkpoint layout (``{"state_dict": {"model.diffusion_model.<name>": ...}}``) and
   builds the reference network the reference's way from that checkpoint (``ckpt_path``, ``load_ema_ckpt``:
   ``init_model`` loads it and freezes the DPM part), checking that it loaded every tensor; a random
   ``Encoder4`` likewise;
2. converts the reference state (LatentDiffusion's layout: ``model.diffusion_model.*`` and
   ``cond_stage_model.*``), saved as a Lightning checkpoint, into our four state dicts with the converters
   a grid's ``pretrained`` stages use (:func:`convert`, :mod:`bench.released.ldm_family`) — renaming only;
   every reference key must be consumed and every one of ours filled, shapes equal — and
   loads them with ``strict=True``;
3. runs both on the same inputs — latents x (2, 3, 16, 16), t = 0, 250, 999 and a mixed batch, codes
   z (2, 192); images (2, 3, 64, 64) for the encoder — and compares the reference's ``forward(x, t,
   context=z)`` = ``Return_grad(pred, out_grad)`` with our ``decode_features`` (pred) and our shift decoder
   summed over the 6 units with their part offsets (out_grad); the encoder in eval mode (running statistics)
   and train mode (batch statistics).

The reference's ``orth_emb`` takes the matrix exponential with its own Padé-13 scaling-and-squaring
``torch_expm``, ours with ``torch.linalg.matrix_exp``. ``torch_expm(A)`` returns expm(−A) (its Padé step solves
with the two polynomials swapped; the first "info" row shows it is not expm(A), the next that it is expm(−A)),
so the reference's rotation is expm(W^T − W), which is what :class:`methods.disdiff.PartEmbedding` computes.
The rotation, the part offsets and an ``out_grad`` of our shift decoder driven by the reference's own offsets
are printed too, so the expm and the networks can be told apart. Differences: the largest absolute one and that
divided by the largest magnitude of the reference output (relative). The target is 1e-5 relative in fp32; the
script exits with status 1 when a parameter count differs (ours, the reference's,
:data:`benchmarks.reference_counts.DISDIFF_LATENT_COUNTS`) or a relative difference exceeds 1e-4.

The reference code is taken at run time from a checkout: ``--reference-dir`` a working tree (a folder holding
``ldm/``, used as it is) or a git clone / bare mirror (``git archive HEAD ldm`` into a temporary folder); default
``$BENCH_REFERENCE_DISDIFF``, else ``/work/.mirror/ThomasMrY+DisDiff/repo`` when it exists. Its forward needs
``einops`` (``pip install einops``; not a dependency of this project); third-party modules it imports but does
not use here (clip, kornia, ...) are stubbed as in ``benchmarks/reference_counts.py``. Nothing of the reference
is copied into this project.

Run: ``python benchmarks/disdiff_latent_equivalence.py [--reference-dir PATH] [--seed 0] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Mapping
from unittest import mock

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference_counts import (  # noqa: E402
    DISDIFF_CONFIG, DISDIFF_ENCODER, DISDIFF_LATENT_COUNTS, DISDIFF_UNET, STUBBED, MissingReference,
    _check_config, _disdiff_latent_split, _export, _git_show, _head_commit, _import_with_stubs,
    disdiff_latent_networks, n_params, reference_git_dir,
)

MIRROR = "/work/.mirror/ThomasMrY+DisDiff/repo"
#: LatentDiffusion's checkpoint layout: the DiffusionWrapper's UNet and the conditioning encoder
UNET_PREFIX = "model.diffusion_model."
ENCODER_PREFIX = "cond_stage_model."
#: the reference UNetModel's top-level modules, by the network of ours that holds them
FROZEN = ("time_embed", "input_blocks", "middle_block", "output_blocks", "out")
SHIFT = ("shift_middle_block", "shift_output_blocks", "shift_out", "repre_embed")
PART = ("part_latents", "part_emb")
TARGET_REL = 1e-5  # the fp32 target
FAIL_REL = 1e-4  # the exit-status bound


def convert(reference_state: Mapping[str, torch.Tensor], tmp: str) -> dict[str, dict[str, torch.Tensor]]:
    """Our state dicts ``{"unet", "shift", "part", "encoder"}`` from a reference state in LatentDiffusion's
    layout (``model.diffusion_model.<UNetModel key>``, ``cond_stage_model.<Encoder4 key>``), through the
    converters a grid uses (:mod:`bench.released.ldm_family`): the state is saved as a Lightning checkpoint,
    the ``ldm`` stage converts the frozen DPM from it and the ``disdiff`` stage the rest, at the ``paper``
    presets; every tensor of the file must be consumed, every one of ours filled, shapes equal."""
    from bench import registry
    from bench.released import convert as released

    path = os.path.join(tmp, "disdiff_random.ckpt")
    torch.save({"state_dict": dict(reference_state), "epoch": 0}, path)
    shape = (3, 64, 64)

    def params(method: str) -> dict:
        return registry.methods().load(method).from_preset("paper").get_params()

    vq = released.skeleton("vq-f4", params("vq-f4"), shape, {})  # not in the file: shapes only
    ldm = released.convert("ldm", path, params("ldm"), shape, {"first_stage": vq})
    dis = released.convert("disdiff", path, params("disdiff"), shape, {"ldm": ldm})
    return {"unet": ldm.unet_.state_dict(), "shift": dis.shift_.state_dict(), "part": dis.part_.state_dict(),
            "encoder": dis.encoder_.state_dict()}


# --------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _reference_code(path: str | None) -> Iterator[str]:
    """A folder with the reference's ``ldm`` package on ``sys.path``; yields a description of its source."""
    if path and os.path.isfile(os.path.join(path, "ldm", "modules", "diffusionmodules", "openaimodel_shift.py")):
        sys.path.insert(0, path)
        notes = [f"working tree {path}"]
        config = os.path.join(path, DISDIFF_CONFIG)
        if os.path.isfile(config):
            cfg = Path(config).read_text()
            notes += _check_config(cfg, "unet_config:", "first_stage_config:", DISDIFF_UNET, "unet_config")
            notes += _check_config(cfg, "cond_stage_config:", "dis_loss_type", DISDIFF_ENCODER, "cond_stage_config")
        else:
            notes.append(f"{DISDIFF_CONFIG} not there: the config values are not checked")
        try:
            yield "; ".join(notes)
        finally:
            sys.path.remove(path)
        return
    if not path and not os.environ.get("BENCH_REFERENCE_DISDIFF") and os.path.isdir(MIRROR):
        path = MIRROR
    git_dir = reference_git_dir("disdiff", path, option="--reference-dir")
    with tempfile.TemporaryDirectory(prefix="disdiff_ref_") as tmp:
        _export(git_dir, ["ldm"], tmp)
        sys.path.insert(0, tmp)
        try:
            notes = [f"git {git_dir} HEAD {_head_commit(git_dir)}"]
            cfg = _git_show(git_dir, DISDIFF_CONFIG)
            notes += _check_config(cfg, "unet_config:", "first_stage_config:", DISDIFF_UNET, "unet_config")
            notes += _check_config(cfg, "cond_stage_config:", "dis_loss_type", DISDIFF_ENCODER, "cond_stage_config")
            yield "; ".join(notes)
        finally:
            sys.path.remove(tmp)


def _randomise(module: nn.Module, gen: torch.Generator) -> None:
    """Seeded random values for every parameter and BatchNorm statistic: weights N(0, 1/fan_in), norm scales
    1 + N(0, 0.1²), biases N(0, 0.1²), ``part_latents`` N(0, 1) (the reference's own ``randn`` init); running
    means N(0, 0.1²), running variances U(0.75, 1.25)."""
    with torch.no_grad():
        for name, p in nn.Module.named_parameters(module):
            if name.startswith("part_latents"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.75 + 0.5 * torch.rand(b.shape, generator=gen))


def build_reference(osm, encm, seed: int, tmp: str) -> tuple[nn.Module, nn.Module, list[str]]:
    """(UNetModel loaded from a random checkpoint, random Encoder4, notes) of the reference."""
    gen = torch.Generator().manual_seed(seed)
    log = io.StringIO()
    with mock.patch.object(torch, "load", lambda *a, **k: {"state_dict": {}}), contextlib.redirect_stdout(log):
        first = osm.UNetModel(**DISDIFF_UNET)  # init_model on an empty checkpoint
    _randomise(first, gen)
    ckpt = os.path.join(tmp, "ldm_random.ckpt")
    torch.save({"state_dict": {UNET_PREFIX + k: v for k, v in first.state_dict().items()}}, ckpt)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        unet = osm.UNetModel(**{**DISDIFF_UNET, "ckpt_path": ckpt})  # init_model loads it (load_ema_ckpt: live weights)
    saved, loaded = first.state_dict(), unet.state_dict()
    bad = [k for k in saved if k not in loaded or not torch.equal(saved[k], loaded[k])] + \
          [k for k in loaded if k not in saved]
    if bad:
        raise RuntimeError(f"the reference's init_model did not load {len(bad)} tensors of the checkpoint, "
                           f"first {bad[0]!r}")
    notes = [f"reference UNetModel built from a random checkpoint of {len(saved)} tensors by its own init_model "
             f"(it printed: {' '.join(log.getvalue().split()) or 'nothing'})"]
    encoder = encm.Encoder4(**DISDIFF_ENCODER)
    _randomise(encoder, gen)
    return unet, encoder, notes


def reference_counts(unet: nn.Module, encoder: nn.Module) -> list[int]:
    """The four numbers of DISDIFF_LATENT_COUNTS for the reference modules (``UNetModel.parameters`` is
    overridden to yield the shift parts only, so every count goes through ``nn.Module.parameters``)."""
    tops = {name for name, _ in unet.named_children()}
    unknown = sorted(tops - set(FROZEN) - set(SHIFT) - set(PART))
    if any(n_params(getattr(unet, t)) for t in unknown):
        raise RuntimeError(f"reference UNetModel has parameters outside the known parts: {unknown}")
    frozen = sum(n_params(getattr(unet, t)) for t in FROZEN)
    shift = sum(n_params(getattr(unet, t)) for t in SHIFT + PART)
    return _disdiff_latent_split(frozen, shift, n_params(encoder))


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


def _diff(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    if ours.shape != ref.shape:
        raise RuntimeError(f"output shapes differ: ours {tuple(ours.shape)}, reference {tuple(ref.shape)}")
    a = (ours.double() - ref.double()).abs().max().item()
    return a, a / max(ref.double().abs().max().item(), 1e-30)


def our_gradient(nets: dict[str, nn.Module], h, skips, temb, z: torch.Tensor, units: int,
                 offsets: torch.Tensor | None = None) -> torch.Tensor:
    """DisDiff's full gradient: Σ_c shift(h, skips, temb + part(units)[c], z^c)."""
    offsets = nets["part"](units) if offsets is None else offsets
    width = z.shape[1] // units
    return sum(nets["shift"](h, skips, temb + offsets[c], z[:, c * width:(c + 1) * width]) for c in range(units))


def compare(osm, ref_unet: nn.Module, ref_encoder: nn.Module, nets: dict[str, nn.Module],
            seed: int) -> list[tuple[str, float, float]]:
    """(output, max |ours − reference|, that / max |reference|) for every compared output."""
    gen = torch.Generator().manual_seed(seed + 1)
    units = DISDIFF_UNET["latent_unit"]
    x = torch.randn(2, 3, 16, 16, generator=gen)
    z = torch.randn(2, units * DISDIFF_UNET["repre_emb_channels"], generator=gen)
    images = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    rows = []
    ref_unet.eval()  # overridden: the shift parts; init_model put the frozen DPM in eval mode
    for n in nets.values():
        n.eval()
    with torch.no_grad():
        W = ref_unet.part_latents.weight
        A = W - W.T
        rot_ref = osm.torch_expm(A.unsqueeze(0))[:units]
        rows.append(("reference torch_expm(A) vs matrix_exp(A), A = W - W^T (info)",
                     *_diff(torch.linalg.matrix_exp(A)[:units], rot_ref)))
        rows.append(("reference torch_expm(A) vs matrix_exp(-A)", *_diff(torch.linalg.matrix_exp(-A)[:units], rot_ref)))
        A64 = A.double()
        rows.append(("reference torch_expm(A) vs matrix_exp(-A), both in fp64",
                     *_diff(torch.linalg.matrix_exp(-A64)[:units], osm.torch_expm(A64.unsqueeze(0))[:units])))
        rot_ours = torch.linalg.matrix_exp(nets["part"].latents.T - nets["part"].latents)[:units]
        rows.append((f"part rotation [:{units}], ours vs reference", *_diff(rot_ours, rot_ref)))
        offsets_ref = ref_unet.part_emb(rot_ref)
        rows.append((f"part offsets part_emb(...)[:{units}]", *_diff(nets["part"](units), offsets_ref)))
        cases = {"t=0": [0, 0], "t=250": [250, 250], "t=999": [999, 999], "t=[17, 803]": [17, 803]}
        for label, ts in cases.items():
            t = torch.tensor(ts)
            out = ref_unet(x, t, context=z)
            h, skips, conds = nets["unet"].features(x, t)
            pred = nets["unet"].decode_features(h, skips, conds)
            rows.append((f"pred ({label})", *_diff(pred, out.pred)))
            grad = our_gradient(nets, h, skips, conds["t"], z, units)
            rows.append((f"out_grad ({label})", *_diff(grad, out.out_grad)))
            if label == "t=[17, 803]":
                rows.append((f"out_grad ({label}), ours on the reference's part offsets",
                             *_diff(our_gradient(nets, h, skips, conds["t"], z, units, offsets_ref), out.out_grad)))
        ref_encoder.eval()
        nets["encoder"].eval()
        rows.append(("Encoder4 (eval: running statistics)", *_diff(nets["encoder"](images), ref_encoder(images))))
        ref_encoder.train()
        nets["encoder"].train()
        rows.append(("Encoder4 (train: batch statistics)", *_diff(nets["encoder"](images), ref_encoder(images))))
        stats = [_diff(a, b) for a, b in zip(nets["encoder"].buffers(), ref_encoder.buffers()) if a.is_floating_point()]
        rows.append(("Encoder4 running statistics after that train step",
                     max(d[0] for d in stats), max(d[1] for d in stats)))
    return rows


def _table(head: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i in (0, len(head) - 1) else c.rjust(w)  # noqa: E731
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", metavar="PATH",
                   help="ThomasMrY/DisDiff: a working tree holding ldm/, or a git clone / bare mirror "
                        f"(default: $BENCH_REFERENCE_DISDIFF, else {MIRROR})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    try:
        with _reference_code(args.reference_dir) as where:
            osm = _import_with_stubs("ldm.modules.diffusionmodules.openaimodel_shift", ("ldm",))
            encm = _import_with_stubs("ldm.modules.encoders.modules", ("ldm",))
    except MissingReference as e:
        print(e, file=sys.stderr)
        return 2
    print(f"reference: ThomasMrY/DisDiff, {where}")
    print(f"config: {DISDIFF_CONFIG} (unet_config, cond_stage_config)")
    print("stubbed modules (not installed here, not called):", ", ".join(sorted(set(STUBBED))) or "none")

    with tempfile.TemporaryDirectory(prefix="disdiff_ckpt_") as tmp:
        ref_unet, ref_encoder, notes = build_reference(osm, encm, args.seed, tmp)
    for n in notes:
        print(n)
    nets = disdiff_latent_networks()
    reference_state = {**{UNET_PREFIX + k: v for k, v in ref_unet.state_dict().items()},
                       **{ENCODER_PREFIX + k: v for k, v in ref_encoder.state_dict().items()}}
    with tempfile.TemporaryDirectory(prefix="disdiff_convert_") as tmp:
        converted = convert(reference_state, tmp)
    for name, net in nets.items():
        net.load_state_dict(converted[name], strict=True)
    print(f"converted {len(reference_state)} reference tensors into "
          + ", ".join(f"{name} ({len(converted[name])})" for name in nets) + "; loaded with strict=True")

    ours = _disdiff_latent_split(n_params(nets["unet"]), n_params(nets["shift"]) + n_params(nets["part"]),
                                 n_params(nets["encoder"]))
    theirs = reference_counts(ref_unet, ref_encoder)
    failed = False
    body = []
    for (name, expected), a, b in zip(DISDIFF_LATENT_COUNTS.items(), ours, theirs):
        ok = a == b == expected
        failed |= not ok
        body.append((name, f"{a:,}", f"{b:,}", f"{expected:,}", "equal" if ok else "DIFFERS"))
    print()
    print(_table(("network", "ours", "reference", "written", "match"), body))

    rows = compare(osm, ref_unet, ref_encoder, nets, args.seed)
    body = []
    for name, a, r in rows:
        if name.endswith("(info)"):  # not a check: shows what torch_expm computes
            status = "info: torch_expm(A) is not expm(A)" if r > FAIL_REL else "info"
        else:
            status = "ok" if r <= TARGET_REL else ("above the 1e-5 target" if r <= FAIL_REL else "FAIL")
            failed |= r > FAIL_REL
        body.append((name, f"{a:.3e}", f"{r:.3e}", status))
    print()
    print(_table(("output (fp32, batch 2)", "max abs diff", "max rel diff", "status"), body))
    print(f"(relative = max |ours - reference| / max |reference|; target <= {TARGET_REL:g}, exit status 1 above "
          f"{FAIL_REL:g})")
    print("RESULT:", "FAIL" if failed else "our latent DisDiff networks equal the reference's")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
