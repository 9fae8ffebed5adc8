"""Parameter and FLOP counts of the PDAE, DisDiff and InfoDiffusion-baseline reference networks, built
from their public code (InfoDiffusion's AE/VAE baselines beside the project's ``infodiffusion`` preset).

What it measures, per network (batch of 1, CPU, no weights loaded):

* total parameters: every parameter of the networks that take part in one stage-2 training step
  (frozen pre-trained DPM + representation encoder + gradient estimator / shift branch);
* trainable parameters: the ones the reference trainer hands to its optimiser in stage 2;
* forward FLOPs per image: one whole training forward of the method, loss included, counted with
  ``torch.utils.flop_counter.FlopCounterMode``;
* fwd+bwd FLOPs per image: the same forward followed by ``loss.backward()``, in the same counter.

FlopCounterMode counts matmul / conv / attention kernels only (2 FLOPs per multiply-add);
elementwise ops, normalisation, softmax, ``linalg.solve`` etc. are not counted.  Backward FLOPs
only include the gradients autograd actually computes (no weight gradients for frozen layers; the
gradient checkpointing the reference code switches on is recomputed and therefore counted).

The reference code is taken from local git checkouts of the reference repositories at run time
(``git archive HEAD`` into a temporary directory, put on ``sys.path``); a clone or a bare mirror,
named by ``--pdae-reference`` / ``--disdiff-reference`` / ``--infodiffusion-reference`` or by the
environment variables ``BENCH_REFERENCE_PDAE`` / ``BENCH_REFERENCE_DISDIFF`` /
``BENCH_REFERENCE_INFODIFFUSION`` (:data:`REFERENCES`); the script stops with the ``git clone``
line to run when one is missing; third-party modules that the imported files need but
that are not installed here (einops, omegaconf, pytorch_lightning, clip, kornia, ...) are replaced
by tiny ``sys.modules`` placeholders that raise if anything actually calls them.  Nothing from the
references is copied into this project.

Run::

    python benchmarks/reference_counts.py [--pdae-reference DIR] [--disdiff-reference DIR]
                                          [--infodiffusion-reference DIR] [--threads 1]
                                          [--no-pixel] [--no-vq] [--no-details]

For the project's own networks, import and call :func:`count`::

    from benchmarks.reference_counts import count
    r = count(lambda: loss_of_one_training_step(batch_of_1), model.parameters())
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from typing import Any, Callable, Iterable
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

#: the reference code bases: name -> (GitHub repository, environment variable naming a local checkout)
REFERENCES: dict[str, tuple[str, str]] = {
    "pdae": ("ckczzj/PDAE", "BENCH_REFERENCE_PDAE"),
    "disdiff": ("ThomasMrY/DisDiff", "BENCH_REFERENCE_DISDIFF"),
    "infodiffusion": ("isjakewong/InfoDiffusion", "BENCH_REFERENCE_INFODIFFUSION"),
    "encdiff": ("SelenaGeRuiqi/EncDiff", "BENCH_REFERENCE_ENCDIFF"),
}


class MissingReference(FileNotFoundError):
    """A reference checkout is not there; the message (one line) says how to fetch it."""


def reference_git_dir(name: str, path: str | None = None, commit: str | None = None, option: str | None = None) -> str:
    """The git directory of the reference checkout ``name`` (a key of :data:`REFERENCES`).

    ``path`` (else the environment variable of :data:`REFERENCES`) is a clone (its ``.git`` is
    used) or a bare mirror. ``commit``: the commit the caller reads, which must be in it.
    ``option``: the command-line option that names the checkout (default ``--<name>-reference``).
    Raises :class:`MissingReference` with a one-line ``git clone`` instruction otherwise.
    """
    repo, env = REFERENCES[name]
    url = f"https://github.com/{repo}"
    path = path or os.environ.get(env)
    at = f" (the script reads its commit {commit})" if commit else ""
    fetch = f"`git clone {url}`{at} and pass {option or f'--{name}-reference'} PATH or set {env}=PATH"
    if not path:
        raise MissingReference(f"{repo} reference checkout not given: {fetch}")
    git_dir = os.path.join(path, ".git") if os.path.exists(os.path.join(path, ".git")) else path
    rev = f"{commit or 'HEAD'}^{{commit}}"
    ok = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", "--verify", "--quiet", rev],
                        capture_output=True).returncode == 0
    if not ok:
        raise MissingReference(f"{repo} reference checkout not found at {path}"
                               f"{f' (or it lacks commit {commit})' if commit else ''}: {fetch}")
    return git_dir


# --------------------------------------------------------------------------------------------
# Generic counter (reusable for the project's own networks)
# --------------------------------------------------------------------------------------------


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _as_loss(out: Any) -> torch.Tensor:
    """Reduce whatever ``model_forward`` returned to a scalar to call ``backward`` on."""
    if isinstance(out, torch.Tensor):
        return out if out.numel() == 1 else out.float().pow(2).mean()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        parts = [_as_loss(o) for o in out if isinstance(o, (torch.Tensor, tuple, list, dict))]
        return torch.stack([p.reshape(()) for p in parts]).sum()
    raise TypeError(f"cannot turn {type(out).__name__} into a loss")


class _NoModuleTracker:
    """Stands in for FlopCounterMode's ModuleTracker, whose backward hooks break inside custom
    autograd Functions (DisDiff's gradient-checkpointed attention); module attribution is done
    by :func:`count` with plain forward hooks instead."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def count(
    model_forward: Callable[[], Any],
    params: Iterable[nn.Parameter],
    trainable: Iterable[nn.Parameter] | None = None,
    batch_size: int = 1,
    modules: dict[str, nn.Module] | None = None,
) -> dict:
    """Count parameters and FLOPs of one training forward (and forward+backward).

    ``model_forward`` runs one training forward on a batch of ``batch_size`` and returns the loss
    (or any tensor / tuple of tensors, reduced to a scalar with a mean square).  ``params`` are all
    parameters involved (total count, duplicates removed); ``trainable`` are the ones the method
    optimises (default: those of ``params`` with ``requires_grad``).  ``modules`` (optional,
    ``{label: module}``) only serves the per-module forward breakdown.

    Returns a dict with ``total_params``, ``trainable_params``, ``fwd_flops``, ``fwdbwd_flops``,
    ``bwd_flops``, ``bwd_recompute_flops`` (part of ``bwd_flops`` spent re-running module forwards
    inside backward, i.e. gradient checkpointing) (all FLOPs per image, i.e. divided by
    ``batch_size``), ``fwd_flops_by_module``
    (forward FLOPs per image of each labelled module and of its direct children, inclusive),
    ``trainable_without_grad`` (number of trainable parameter elements that received no
    gradient) and the private ``_called_modules`` / ``_no_grad_ids`` used by
    :func:`unused_parameters`.
    """
    params = _unique(params)
    trainable = [p for p in params if p.requires_grad] if trainable is None else _unique(trainable)
    for p in params + trainable:
        p.grad = None
    modules = modules or {}
    names: dict[int, str] = {}
    for label, root in modules.items():
        for n, m in root.named_modules():
            names.setdefault(id(m), f"{label}.{n}" if n else label)

    fc = FlopCounterMode(display=False)
    if hasattr(fc, "mod_tracker"):
        fc.mod_tracker = _NoModuleTracker()
    called: set[int] = set()
    acc: dict[str, int] = {}
    stack: list[tuple[int, int]] = []
    in_forward = [True]

    recompute = [0]  # forward FLOPs of modules re-run inside backward (gradient checkpointing)

    def pre(m, args):
        called.add(id(m))
        stack.append((id(m), fc.get_total_flops()))

    def post(m, args, out):
        if not stack or stack[-1][0] != id(m):
            return
        _, start = stack.pop()
        delta = fc.get_total_flops() - start
        if in_forward[0]:
            if id(m) in names:
                acc[names[id(m)]] = acc.get(names[id(m)], 0) + delta
        elif not stack:
            recompute[0] += delta

    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        with fc:
            out = model_forward()
            fwd = fc.get_total_flops()
            in_forward[0] = False
            loss = _as_loss(out)
            if loss.requires_grad:
                loss.backward()
            total = fc.get_total_flops()
    finally:
        h1.remove()
        h2.remove()


    def inclusive(name: str, mod: nn.Module) -> int:
        """FLOPs of ``mod``: its own measurement if its forward ran, else the sum over its outermost
        descendants that ran (a module reachable twice, e.g. shared in a Sequential, counts once)."""
        if name in acc:
            return acc[name]
        ran = [m for m in mod.modules() if m is not mod and names.get(id(m)) in acc]
        covered = {id(sub) for m in ran for sub in m.modules() if sub is not m}
        return sum(acc[names[id(m)]] for m in ran if id(m) not in covered)

    by_module: dict[str, float] = {}
    for label, root in modules.items():
        by_module[label] = inclusive(label, root) / batch_size
        for cn, c in root.named_children():
            v = inclusive(f"{label}.{cn}", c)
            if v:
                by_module[f"{label}.{cn}"] = v / batch_size

    no_grad = [p for p in trainable if p.grad is None]
    result = {
        "total_params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in trainable),
        "fwd_flops": fwd / batch_size,
        "fwdbwd_flops": total / batch_size,
        "bwd_flops": (total - fwd) / batch_size,
        "bwd_recompute_flops": recompute[0] / batch_size,
        "fwd_flops_by_module": by_module,
        "trainable_without_grad": sum(p.numel() for p in no_grad),
        "_called_modules": called,
        "_no_grad_ids": {id(p) for p in no_grad},
    }
    for p in params + trainable:
        p.grad = None
    return result


def unused_parameters(named_modules: dict[str, nn.Module], result: dict) -> list[tuple[str, int]]:
    """Parameters registered in ``named_modules`` whose owning module never ran in the counted
    forward and that received no gradient (``result`` from :func:`count`).  Returns
    ``[(qualified name, numel)]``."""
    out = []
    for root_name, root in named_modules.items():
        for mod_name, mod in root.named_modules():
            if id(mod) in result["_called_modules"]:
                continue
            for p_name, p in mod.named_parameters(recurse=False):
                if p.grad is None and (not p.requires_grad or id(p) in result["_no_grad_ids"]):
                    out.append((".".join(x for x in (root_name, mod_name, p_name) if x), p.numel()))
    return out


def n_params(module: nn.Module, trainable: bool | None = None) -> int:
    """Parameter count using ``nn.Module.parameters`` (immune to subclasses overriding it)."""
    ps = nn.Module.parameters(module)
    return sum(p.numel() for p in ps if trainable is None or p.requires_grad == trainable)


def _pretrained_match(pretrained: nn.Module, model: nn.Module, label: str) -> str:
    """Does the plain pre-trained DPM's state dict fill exactly the frozen part of ``model``?"""
    pre = pretrained.state_dict()
    own = dict(nn.Module.named_parameters(model))
    frozen = {k for k, p in own.items() if not p.requires_grad}
    missing = [k for k in pre if k not in own and k in dict(pretrained.named_parameters())]
    bad_shape = [k for k in pre if k in own and tuple(own[k].shape) != tuple(pre[k].shape)]
    not_loaded = sorted(frozen - set(pre))
    loaded_trainable = sorted(k for k in pre if k in own and k not in frozen)
    n_pre = n_params(pretrained)
    n_frozen = sum(own[k].numel() for k in frozen)
    ok = not (missing or bad_shape or not_loaded or loaded_trainable) and n_pre == n_frozen
    msg = (f"{label}: plain DPM {n_pre / 1e6:.3f} M params vs frozen part {n_frozen / 1e6:.3f} M; "
           + ("its state dict fills exactly the frozen part" if ok else
              f"MISMATCH missing={missing[:5]} bad_shape={bad_shape[:5]} frozen_not_loaded={not_loaded[:5]} "
              f"loaded_into_trainable={loaded_trainable[:5]}"))
    return msg


# --------------------------------------------------------------------------------------------
# Reference-code import helpers
# --------------------------------------------------------------------------------------------


def _head_commit(git_dir: str) -> str:
    r = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _git_show(git_dir: str, path: str) -> str:
    r = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], capture_output=True, text=True, check=True)
    return r.stdout


def _export(git_dir: str, paths: list[str], dest: str) -> None:
    """``git --git-dir=<git_dir> archive HEAD <paths> | tar -x -C <dest>``."""
    r = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "HEAD", *paths], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:
        if sys.version_info >= (3, 12) or hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # pragma: no cover
            tf.extractall(dest)


class _StubModule(types.ModuleType):
    """Placeholder for a missing third-party module: any attribute is a class that raises when
    instantiated / called, so module-level ``from x import y`` and ``class A(x.B)`` work."""

    __path__: list[str] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        full = f"{self.__name__}.{name}"

        def _fail(*a, **k):
            raise RuntimeError(f"{full} is a stub (module {self.__name__!r} is not installed)")

        cls = type(name, (), {"__init__": _fail, "__module__": self.__name__})
        setattr(self, name, cls)
        return cls


STUBBED: list[str] = []


def _import_with_stubs(name: str, own_roots: tuple[str, ...]):
    """Import ``name``; each time a module outside ``own_roots`` is missing, stub it and retry."""
    for _ in range(50):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            missing = e.name
            if not missing or missing.split(".")[0] in own_roots:
                raise
            parts = missing.split(".")
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                if sub not in sys.modules:
                    sys.modules[sub] = _StubModule(sub)
                    if i > 1:
                        setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[sub])
                    STUBBED.append(sub)
    raise ImportError(f"too many missing modules importing {name}")


@contextlib.contextmanager
def _reference_on_path(git_dir: str, paths: list[str], roots: tuple[str, ...]):
    for r in roots:
        mod = sys.modules.get(r)
        if mod is not None and not getattr(mod, "_reference_counts", False):
            raise RuntimeError(f"a module named {r!r} is already imported ({mod!r}); run in a fresh process")
    with tempfile.TemporaryDirectory(prefix="refcounts_") as tmp:
        _export(git_dir, paths, tmp)
        sys.path.insert(0, tmp)
        try:
            yield tmp
        finally:
            sys.path.remove(tmp)
            for r in roots:
                if r in sys.modules:
                    sys.modules[r]._reference_counts = True


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# --------------------------------------------------------------------------------------------
# Minimal YAML value check (PyYAML is not installed): compare the hard-coded configs with the
# reference configs, key by key, inside a section of the file.
# --------------------------------------------------------------------------------------------


def _yaml_scalar(s: str, anchors: dict) -> Any:
    s = s.strip()
    m = re.match(r"^&(\w+)\s+(.*)$", s)
    if m:
        v = _yaml_scalar(m.group(2), anchors)
        anchors[m.group(1)] = v
        return v
    if s.startswith("*"):
        return anchors.get(s[1:], s)
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [] if not inner else [_yaml_scalar(x, anchors) for x in inner.split(",")]
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def _yaml_section(text: str, start: str, end: str | None) -> dict:
    """``key: value`` pairs (any depth) between the first line containing ``start`` and the next
    line containing ``end``; block lists (``- x`` lines) are collected for empty values."""
    anchors: dict = {}
    out: dict = {}
    inside = False
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        m = re.match(r"^\s*([A-Za-z_]\w*):\s*(.*)$", line)
        if m and "&" in m.group(2):
            _yaml_scalar(m.group(2), anchors)  # record anchors everywhere
        if not inside:
            inside = start in line
            continue
        if end is not None and end in line:
            break
        if not m:
            continue
        key, val = m.group(1), m.group(2)
        if val == "":
            items = []
            for nxt in lines[i + 1:]:
                mm = re.match(r"^\s*-\s*(\S+)", nxt)
                if mm:
                    items.append(_yaml_scalar(mm.group(1), anchors))
                elif nxt.strip():
                    break
            if items:
                out.setdefault(key, items)
            continue
        out.setdefault(key, _yaml_scalar(val, anchors))
    return out


def _check_config(text: str, start: str, end: str | None, expected: dict, label: str) -> list[str]:
    found = _yaml_section(text, start, end)
    notes = []
    for k, v in expected.items():
        if k not in found:
            notes.append(f"{label}: key {k!r} not in the reference yaml (used {v!r})")
        elif (list(found[k]) if isinstance(found[k], (list, tuple)) else found[k]) != (
            list(v) if isinstance(v, (list, tuple)) else v
        ):
            notes.append(f"{label}: {k} = {found[k]!r} in yaml but {v!r} used")
    return notes


# --------------------------------------------------------------------------------------------
# PDAE (ckczzj/PDAE)
# --------------------------------------------------------------------------------------------

# The DPM config (pre-trained-dpms/celeba64/config.yml) is only on Google Drive, not in git.
# These values reproduce the DiffAE CelebA-64 DDPM in PDAE's UNet conventions.
PDAE_CELEBA64_DPM = dict(
    input_channel=3,
    base_channel=64,
    channel_multiplier=[1, 2, 4, 8],
    num_residual_blocks_of_a_block=2,
    attention_resolutions=[4],  # downsample rate 4 = 16x16 at 64 px (DiffAE: attn at 16)
    num_heads=1,  # DiffAE net_beatgans_attn_head = 1
    head_channel=-1,  # -1: use num_heads
    use_new_attention_order=False,  # PDAE mnist config: "True for MNIST and False for the others"
    dropout=0.1,
    dims=2,
    learn_sigma=False,
)
PDAE_ENCODER = dict(latent_dim=512)  # config/celeba64_representation_learning.yml
PDAE_LATENT_DENOISER = dict(  # config/celeba64_latent.yml: latent_denoise_fn_config
    input_channel=512, model_channel=2048, num_layers=10, time_emb_channel=64, use_norm=True, dropout=0.0
)


def pdae_reference(repo: str | None = None) -> list[dict]:
    """Build PDAE's CelebA-64 networks and count them.  Returns rows ``{name, result, notes}``.

    ``repo``: a checkout of ckczzj/PDAE (None: ``$BENCH_REFERENCE_PDAE``)."""
    repo = reference_git_dir("pdae", repo)
    rows: list[dict] = []
    notes = [f"PDAE reference HEAD {_head_commit(repo)}"]
    notes += _check_config(_git_show(repo, "config/celeba64_representation_learning.yml"),
                           "encoder_config:", "decoder_config:", PDAE_ENCODER, "PDAE encoder_config")
    notes += _check_config(_git_show(repo, "config/celeba64_representation_learning.yml"),
                           "train_dataset_config:", "eval_dataset_config:", {"image_size": 64, "image_channel": 3},
                           "PDAE dataset")
    notes += _check_config(_git_show(repo, "config/celeba64_latent.yml"),
                           "latent_denoise_fn_config:", "dataloader_config:",
                           {k: v for k, v in PDAE_LATENT_DENOISER.items()}, "PDAE latent_denoise_fn_config")

    with _reference_on_path(repo, ["model"], ("model",)):
        shift_unet = _import_with_stubs("model.shift_unet", ("model",))
        enc_mod = _import_with_stubs("model.representation_learning.encoder.celeba64", ("model",))
        mlp_mod = _import_with_stubs("model.mlp_skip_net", ("model",))
        unet_mod = _import_with_stubs("model.unet", ("model",))

    torch.manual_seed(0)
    for latent_dim in (512, 32):
        encoder = enc_mod.CELEBA64Encoder(latent_dim=latent_dim)
        decoder = shift_unet.ShiftUNet(latent_dim=latent_dim, **PDAE_CELEBA64_DPM)
        encoder.train()
        decoder.set_train_mode()  # what the trainer calls; the frozen DPM stays in eval()

        # Trainable = exactly the optimiser groups of trainer/train_representation_learning.py.
        trainable = (list(encoder.parameters()) + list(decoder.label_emb.parameters())
                     + list(decoder.shift_middle_block.parameters()) + list(decoder.shift_output_blocks.parameters())
                     + list(decoder.shift_out.parameters()))
        req_grad = {id(p) for p in list(encoder.parameters()) + list(decoder.parameters()) if p.requires_grad}
        if req_grad != {id(p) for p in trainable}:
            notes.append("PDAE: optimiser groups differ from the requires_grad set")

        x0 = torch.randn(1, 3, 64, 64)

        def step(encoder=encoder, decoder=decoder, x0=x0):
            # diffusion/gaussian_diffusion.py: representation_learning_train_one_batch
            z = encoder(x0)
            t = torch.randint(0, 1000, (1,))
            noise = torch.randn_like(x0)
            x_t = 0.9 * x0 + 0.1 * noise  # q_sample (coefficients irrelevant for FLOPs)
            predicted_noise, gradient = decoder(x_t, t, z)
            shift_coef, weight = 0.5, 1.0  # extract_coef_at_t(shift_coef / weight, t)
            return (weight * (noise - (predicted_noise + shift_coef * gradient)) ** 2).mean()  # p_loss

        t0 = time.time()
        res = count(step, list(encoder.parameters()) + list(decoder.parameters()), trainable,
                    modules={"encoder": encoder, "decoder": decoder})
        frozen = n_params(decoder, trainable=False)
        row_notes = [
            f"frozen DPM (time_embed, input_blocks, middle_block, output_blocks, out) {frozen / 1e6:.3f} M;"
            f" shift branch (label_emb, shift_middle_block, shift_output_blocks, shift_out)"
            f" {n_params(decoder, trainable=True) / 1e6:.3f} M; encoder {n_params(encoder) / 1e6:.3f} M",
            f"counted in {time.time() - t0:.1f} s",
        ]
        if latent_dim == 512:
            row_notes.insert(1, _pretrained_match(unet_mod.UNet(**PDAE_CELEBA64_DPM), decoder,
                                                  "PDAE model/unet.py UNet (train_regular_diffusion)"))
        unused = unused_parameters({"encoder": encoder, "decoder": decoder}, res)
        if unused:
            row_notes.append(f"registered but unused: {unused}")
        rows.append({"name": f"PDAE CelebA64 stage 2, z={latent_dim} (enc + ShiftUNet)", "result": res,
                     "notes": row_notes})

    # Latent DPM (stage 3), trained on the inferred latents; everything trainable.
    mlp = mlp_mod.MLPSkipNet(**PDAE_LATENT_DENOISER)
    mlp.train()
    z0 = torch.randn(1, PDAE_LATENT_DENOISER["input_channel"])

    def latent_step():
        t = torch.randint(0, 1000, (1,))
        noise = torch.randn_like(z0)
        return ((mlp(0.9 * z0 + 0.1 * noise, t) - noise) ** 2).mean()

    res = count(latent_step, mlp.parameters(), modules={"mlp": mlp})
    rows.append({"name": "PDAE CelebA64 latent DPM (MLPSkipNet, z=512)", "result": res,
                 "notes": ["separate stage (latent DPM for sampling); not part of the stage-2 step"]})
    if len(notes) == 1:
        notes.append("hard-coded encoder / latent-denoiser values match the PDAE yaml files "
                     "(the DPM config is not in git: pre-trained-dpms/celeba64/config.yml is on Google Drive)")
    rows[0]["notes"] = notes + rows[0]["notes"]
    return rows


# --------------------------------------------------------------------------------------------
# DisDiff (ThomasMrY/DisDiff)
# --------------------------------------------------------------------------------------------

DISDIFF_CONFIG = "configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml"
DISDIFF_STAGE1_CONFIG = "configs/latent-diffusion/shapes3d-vq-4-16.yaml"  # the pre-trained LDM it loads
DISDIFF_UNET = dict(  # unet_config.params
    image_size=16, in_channels=3, out_channels=3, model_channels=64, attention_resolutions=[1, 2, 4],
    num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, repre_emb_channels=32, use_scale_shift_norm=True,
    resblock_updown=True, seprate_decoder=True, orth_emb=True, ckpt_path="/my/checkpoint/path", load_ema_ckpt=True,
    latent_unit=6,
)
DISDIFF_ENCODER = dict(d=128, latent_dim=192)  # cond_stage_config.params (Encoder4)
DISDIFF_VQ = dict(embed_dim=3, n_embed=2048)  # first_stage_config.params (VQModelInterface)
DISDIFF_DDCONFIG = dict(double_z=False, z_channels=3, resolution=64, in_channels=3, out_ch=3, ch=32,
                        ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
DISDIFF_PIXEL_UNET = {**DISDIFF_UNET, "image_size": 64, "attention_resolutions": [4]}  # not a repo config
#: latent DisDiff's parameter counts as the reference code builds :data:`DISDIFF_CONFIG` (UNetModel with
#: DISDIFF_UNET, Encoder4 with DISDIFF_ENCODER; ``disdiff_reference`` re-checks them when it builds the reference,
#: ``benchmarks/disdiff_latent_equivalence.py`` too); ours are printed beside them by :func:`disdiff_latent_ours`
DISDIFF_LATENT_COUNTS: dict[str, int] = {
    "LDM UNet (frozen: time_embed, input/middle/output blocks, out)": 29_422_467,
    "shift parts (shift blocks, shift_out, repre_embed, part_latents, part_emb)": 22_738_691,
    "Encoder4 (d=128, latent_dim=192)": 1_516_480,
    "trained total (shift parts + Encoder4)": 24_255_171,
}


class _VQFirstStage(nn.Module):
    """The parameterised parts of ``ldm.models.autoencoder.VQModelInterface`` composed from the
    reference ``Encoder`` / ``Decoder`` (the class itself needs pytorch_lightning and taming):
    encode = encoder + quant_conv; decode(force_not_quantize=True) = post_quant_conv + decoder.
    ``quantize`` stands for taming's VectorQuantizer2 (one ``nn.Embedding(n_embed, embed_dim)``,
    remap=None); it is only used for parameter counting, never in the DisDiff training step."""

    def __init__(self, Encoder, Decoder, ddconfig: dict, n_embed: int, embed_dim: int):
        super().__init__()
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = nn.Embedding(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def encode(self, x):
        return self.quant_conv(self.encoder(x))

    def decode(self, h):
        return self.decoder(self.post_quant_conv(h))


def _build_disdiff_unet(osm, params: dict):
    """UNetModel without its checkpoint: ``init_model`` runs unchanged but ``torch.load`` returns
    an empty state dict, so only its freezing part has an effect."""
    with mock.patch.object(torch, "load", lambda *a, **k: {"state_dict": {}}), _quiet():
        return osm.UNetModel(**params)


def disdiff_reference(repo: str | None = None, pixel: bool = True, vq: bool = True) -> list[dict]:
    """Build DisDiff's Shapes3D networks and count them.  Returns rows ``{name, result, notes}``.

    ``repo``: a checkout of ThomasMrY/DisDiff (None: ``$BENCH_REFERENCE_DISDIFF``)."""
    repo = reference_git_dir("disdiff", repo)
    rows: list[dict] = []
    notes = [f"DisDiff reference HEAD {_head_commit(repo)}"]
    cfg = _git_show(repo, DISDIFF_CONFIG)
    notes += _check_config(cfg, "unet_config:", "first_stage_config:", DISDIFF_UNET, "DisDiff unet_config")
    notes += _check_config(cfg, "cond_stage_config:", "dis_loss_type", DISDIFF_ENCODER, "DisDiff cond_stage_config")
    notes += _check_config(cfg, "cond_stage_config:", "data:", {"dis_loss_type": "Z", "dis_weight": 0.05},
                           "DisDiff model.params")
    notes += _check_config(cfg, "first_stage_config:", "ddconfig:", DISDIFF_VQ, "DisDiff first_stage_config")
    notes += _check_config(cfg, "ddconfig:", "lossconfig:", DISDIFF_DDCONFIG, "DisDiff ddconfig")
    notes += _check_config(cfg, "model:", "scheduler_config:",
                           {"conditioning_key": "adm", "cond_stage_trainable": True, "dis_loss_flag": True,
                            "loss_type": "l1", "image_size": 16, "channels": 3}, "DisDiff model.params")

    if len(notes) == 1:
        notes.append(f"hard-coded unet / Encoder4 / VQ / loss values match {DISDIFF_CONFIG}")
    with _reference_on_path(repo, ["ldm"], ("ldm",)):
        osm = _import_with_stubs("ldm.modules.diffusionmodules.openaimodel_shift", ("ldm",))
        encm = _import_with_stubs("ldm.modules.encoders.modules", ("ldm",))
        aem = _import_with_stubs("ldm.modules.diffusionmodules.model", ("ldm",)) if vq else None
        om = _import_with_stubs("ldm.modules.diffusionmodules.openaimodel", ("ldm",))

    def build(unet_params, with_vq: bool, latent_hw: int | None):
        torch.manual_seed(0)
        unet = _build_disdiff_unet(osm, unet_params)
        unet.train()  # overridden: only the shift branch / embeddings go to train mode
        encoder = encm.Encoder4(**DISDIFF_ENCODER)  # cond_stage_trainable: trained jointly
        encoder.train()
        first = None
        if with_vq:
            with _quiet():
                first = _VQFirstStage(aem.Encoder, aem.Decoder, DISDIFF_DDCONFIG, **DISDIFF_VQ)
            first.eval().requires_grad_(False)  # LatentDiffusion.instantiate_first_stage
        n_units = unet_params["latent_unit"]
        x_img = torch.randn(1, 3, 64, 64)
        ce = nn.CrossEntropyLoss(reduction="none")

        def decode(z):  # differentiable_decode_first_stage(z, force_not_quantize=True)
            if first is not None:
                return first.decode(z / 0.8)
            if latent_hw is None:  # pixel space: x0 is the image itself
                return z
            return F.interpolate(z, scale_factor=64 // latent_hw, mode="nearest")  # stand-in, 0 FLOPs

        def step():
            # LatentDiffusion.get_input (no_grad) + forward + p_losses + dis_loss
            with torch.no_grad():
                if first is not None:
                    z = first.encode(x_img) * 0.8  # encode_first_stage * scale_factor
                elif latent_hw is None:
                    z = x_img
                else:
                    z = torch.randn(1, 3, latent_hw, latent_hw)
            cond = encoder(x_img)  # get_learned_conditioning (cond_stage_key = first_stage_key = image)
            t = torch.randint(0, 1000, (1,))
            noise = torch.randn_like(z)
            x_noisy = 0.9 * z + 0.1 * noise
            sampled_concept = np.random.randint(n_units, size=x_noisy.shape[0])
            out = unet(x_noisy, t, context=cond, sampled_concept=sampled_concept)  # Return_grad_full

            eval_encoder = copy.deepcopy(encoder)  # dis_loss, train_enc_flag False
            eval_encoder.requires_grad_(False)
            eval_encoder.eval()
            ddim_coef, c1, c2 = -0.5, 1.1, 0.3
            with torch.no_grad():
                z_start = c1 * x_noisy - c2 * out.pred  # predict_start_from_noise
                pred_z = torch.stack(eval_encoder(decode(z_start)).chunk(n_units, dim=1), dim=1)
            eps_new_hat = out.pred + ddim_coef * out.sub_grad
            z_start_new = c1 * x_noisy - c2 * eps_new_hat
            pred_z_new = torch.stack(eval_encoder(decode(z_start_new)).chunk(n_units, dim=1), dim=1)
            cond_s = torch.stack(cond.chunk(n_units, dim=1), dim=1)
            with torch.no_grad():
                norm_org = torch.norm(pred_z - cond_s.detach(), dim=-1)
            norm_z = torch.norm(pred_z_new - cond_s.detach(), dim=-1)
            logits_deta = torch.norm(pred_z - pred_z_new, dim=-1)
            target = torch.from_numpy(sampled_concept)
            dis_weight = ((z_start - z_start_new.detach()) ** 2).mean(dim=(1, 2, 3))  # dis_loss_type Z
            dis = dis_weight * 0.05 * (ce(norm_org - norm_z, target) + ce(logits_deta, target))
            eps_pred = out.pred + 0.5 * out.out_grad  # return_wrap(..., shift_coef)
            return (eps_pred - noise).abs().mean() + dis.mean()  # loss_type l1

        # Total: all registered parameters (UNetModel.parameters() is overridden to return only the
        # shift branch, so nn.Module.parameters is used).  Trainable: LatentDiffusion.configure_optimizers
        # = DiffusionWrapper.parameters() -> UNetModel.parameters() (override) + cond_stage_model.
        all_params = list(nn.Module.parameters(unet)) + list(encoder.parameters())
        if first is not None:
            all_params += list(first.parameters())
        trainable = list(unet.parameters()) + list(encoder.parameters())
        extra = []
        req = {id(p) for p in nn.Module.parameters(unet) if p.requires_grad}
        if req != {id(p) for p in unet.parameters()}:
            extra.append("UNet: requires_grad set differs from the overridden parameters()")
        mods = {"unet": unet, "encoder": encoder}
        if first is not None:
            mods["first_stage"] = first
        t0 = time.time()
        res = count(step, all_params, trainable, modules=mods)
        extra.append(f"counted in {time.time() - t0:.1f} s")
        unused = [u for u in unused_parameters(mods, res) if not u[0].startswith("first_stage.quantize")]
        if unused:
            extra.append(f"registered but unused: {unused}")
        extra.insert(0, f"UNet frozen DPM {n_params(unet, False) / 1e6:.3f} M, shift branch + embeddings "
                        f"{n_params(unet, True) / 1e6:.3f} M, Encoder4 {n_params(encoder) / 1e6:.3f} M"
                        + (f", VQ first stage (frozen) {n_params(first) / 1e6:.3f} M" if first is not None else ""))
        return res, extra

    res, extra = build(DISDIFF_UNET, with_vq=False, latent_hw=16)
    stage1 = _yaml_section(_git_show(repo, DISDIFF_STAGE1_CONFIG), "unet_config:", "first_stage_config:")
    stage1 = {k: v for k, v in stage1.items() if k != "target"}
    with _quiet():
        plain = om.UNetModel(**stage1)
        shift = _build_disdiff_unet(osm, DISDIFF_UNET)
    extra.insert(1, _pretrained_match(plain, shift, f"DisDiff stage-1 openaimodel.UNetModel ({DISDIFF_STAGE1_CONFIG})"))
    built = _disdiff_latent_split(n_params(shift, False), n_params(shift, True),
                                  n_params(encm.Encoder4(**DISDIFF_ENCODER)))
    extra.insert(2, "counts match DISDIFF_LATENT_COUNTS" if built == list(DISDIFF_LATENT_COUNTS.values()) else
                 f"MISMATCH with DISDIFF_LATENT_COUNTS: built {built}, written {list(DISDIFF_LATENT_COUNTS.values())}")
    rows.append({"name": "DisDiff Shapes3D stage 2, latent 16x16x3, VQ excluded", "result": res,
                 "notes": notes + extra + ["x0-hat for the 2 frozen-encoder passes = 4x nearest upsample of the "
                                           "predicted latent (stand-in for the VQ decoder, 0 FLOPs)"]})
    if vq:
        try:
            res, extra = build(DISDIFF_UNET, with_vq=True, latent_hw=16)
            rows.append({"name": "DisDiff Shapes3D stage 2 + frozen VQ-f4 (1 enc, 2 dec)", "result": res,
                         "notes": extra})
        except Exception as e:  # noqa: BLE001
            rows.append({"name": "DisDiff + VQ first stage", "result": None, "notes": [f"not built: {e!r}"]})
    if pixel:
        try:
            res, extra = build(DISDIFF_PIXEL_UNET, with_vq=False, latent_hw=None)
            rows.append({"name": "DisDiff pixel-space variant, UNet@64px attn ds[4]", "result": res,
                         "notes": extra + ["not a repo config: shapes3d unet_config with image_size 64, "
                                           "attention_resolutions [4]; no first stage"]})
        except Exception as e:  # noqa: BLE001
            rows.append({"name": "DisDiff pixel-space variant", "result": None, "notes": [f"not built: {e!r}"]})
    return rows


def _disdiff_latent_split(frozen: int, shift: int, encoder: int) -> list[int]:
    """The four numbers of :data:`DISDIFF_LATENT_COUNTS`, in its order."""
    return [frozen, shift, encoder, shift + encoder]


def disdiff_latent_networks() -> dict[str, nn.Module]:
    """Our latent DisDiff networks at the ``paper`` preset (the sizes of :data:`DISDIFF_CONFIG`), built as
    ``DisDiff`` builds them: ``unet`` (the frozen LDM UNet), ``shift`` (the shift decoder with ``repre_embed``),
    ``part`` (the orthogonal part embedding) and ``encoder`` (Encoder4 on 64 px images)."""
    from bench.diffusion.encoders import DisDiffEncoder
    from bench.diffusion.ldm_openai import OpenAIUNet
    from bench.diffusion.ldm_shift import LDMShiftDecoder
    from methods.disdiff import DisDiff, PartEmbedding

    p = DisDiff.from_preset("paper").get_params()
    unet = OpenAIUNet(in_channels=3, out_channels=3, latent_size=16, model_channels=p["base_channels"],
                      channel_mult=p["channel_mult"], num_res_blocks=p["num_res_blocks"],
                      attention_resolutions=p["attention_resolutions"], num_heads=p["num_heads"], dropout=p["dropout"])
    shift = LDMShiftDecoder(unet, p["unit_dim"], dropout=p["shift_dropout"], num_heads=p["shift_num_heads"])
    part = PartEmbedding(unet.arch["time_dim"])
    encoder = DisDiffEncoder(in_channels=3, image_size=64, out_dim=p["num_units"] * p["unit_dim"],
                             channels=p["enc_width"])
    return {"unet": unet, "shift": shift, "part": part, "encoder": encoder}


def disdiff_latent_ours() -> list[tuple[str, int, int]]:
    """(network, ours, reference) for latent DisDiff: our modules counted, beside :data:`DISDIFF_LATENT_COUNTS`
    (no reference checkout needed)."""
    nets = disdiff_latent_networks()
    ours = _disdiff_latent_split(n_params(nets["unet"]), n_params(nets["shift"]) + n_params(nets["part"]),
                                 n_params(nets["encoder"]))
    return [(name, n, ref) for (name, ref), n in zip(DISDIFF_LATENT_COUNTS.items(), ours)]


def _counts_table(rows: list[tuple[str, int, int]], source: str) -> str:
    head = ("network", "ours", "reference", "match")
    body = [(name, f"{a:,}", f"{b:,}", "equal" if a == b else f"DIFFERS by {a - b:+,}") for name, a, b in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([f"parameters ({source})", fmt(head), sep] + [fmt(b).rstrip() for b in body])


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


#: InfoDiffusion's baseline settings per dataset (data.py: get_dataset_config): image shape, encoder_channels
INFODIFFUSION_BASELINES = {"fashion-mnist": ((1, 32, 32), 32), "cifar10": ((3, 32, 32), 64), "celeba": ((3, 64, 64), 64)}


def infodiffusion_baselines(repo: str | None = None) -> list[dict]:
    """InfoDiffusion's VAE-family baseline (models.py ``VAE``, a_dim 32, KL weight 1) beside ours
    (``VAE.from_preset("infodiffusion")`` at the same widths); one training forward of batch 1.

    ``repo``: a checkout of isjakewong/InfoDiffusion (None: ``$BENCH_REFERENCE_INFODIFFUSION``)."""
    from methods.vae import VAE

    repo = reference_git_dir("infodiffusion", repo)
    rows: list[dict] = []
    with _reference_on_path(repo, ["models.py", "modules.py", "utils.py"], ("models", "modules", "utils")):
        models = _import_with_stubs("models", ("models", "modules", "utils"))
    for name, (shape, channels) in INFODIFFUSION_BASELINES.items():
        args = types.SimpleNamespace(input_size=shape[1], encoder_channels=channels, a_dim=32, mmd_weight=0.0,
                                     kld_weight=1.0, use_C=False)
        torch.manual_seed(0)
        ref = models.VAE(args, "cpu", shape)
        x = torch.rand(1, *shape) * 2 - 1
        with _quiet():
            res = count(lambda: ref.loss_fn(args, x), ref.parameters())
        rows.append({"name": f"InfoDiffusion VAE baseline, {name} (reference)", "result": res,
                     "notes": [f"reference HEAD {_head_commit(repo)}",
                               f"encoder {n_params(ref.encoder):,}, decoder {n_params(ref.decoder):,}"]})
        ours = VAE.from_preset("infodiffusion", unet_channels=channels,
                               unet_attention_resolutions=[shape[1] // 4])  # the reference's attention level 2
        ours._build(shape)
        xo = torch.rand(1, *shape)
        noise = torch.randn(1, 32)
        res = count(lambda: ours._loss(xo, noise, torch.Generator()),
                    list(ours.encoder_.parameters()) + list(ours.decoder_.parameters()))
        rows.append({"name": f"InfoDiffusion VAE baseline, {name} (ours)", "result": res,
                     "notes": [f"encoder {n_params(ours.encoder_):,}, decoder {n_params(ours.decoder_):,}"]})
    return rows


def _table(rows: list[dict]) -> str:
    head = ("network", "total params", "trainable", "fwd GFLOPs/img", "fwd+bwd GFLOPs/img")
    body = []
    for r in rows:
        res = r["result"]
        if res is None:
            body.append((r["name"], "-", "-", "-", "-"))
        else:
            body.append((r["name"], f"{res['total_params'] / 1e6:.3f} M", f"{res['trainable_params'] / 1e6:.3f} M",
                         f"{res['fwd_flops'] / 1e9:.3f}", f"{res['fwdbwd_flops'] / 1e9:.3f}"))
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), sep] + [fmt(b) for b in body])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, what in (("pdae", ""), ("disdiff", ""), ("infodiffusion", " (its baselines)")):
        repo, env = REFERENCES[name]
        p.add_argument(f"--{name}-reference", f"--{name}-repo", dest=f"{name}_repo", metavar="PATH",
                       help=f"checkout (clone or bare mirror) of {repo}{what}; default: ${env}")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-pixel", action="store_true", help="skip the DisDiff pixel-space variant")
    p.add_argument("--no-vq", action="store_true", help="skip the DisDiff row that includes the VQ first stage")
    p.add_argument("--no-details", action="store_true", help="print only the table")
    args = p.parse_args(argv)
    missing = []
    for name in ("pdae", "disdiff", "infodiffusion"):
        try:
            setattr(args, f"{name}_repo", reference_git_dir(name, getattr(args, f"{name}_repo")))
        except MissingReference as e:
            missing.append(str(e))
    latent = _counts_table(disdiff_latent_ours(), f"latent DisDiff, ours beside ThomasMrY/DisDiff {DISDIFF_CONFIG}")
    if missing:
        print(latent)
        sys.exit("\n".join(missing))
    torch.set_num_threads(args.threads)
    np.random.seed(0)

    rows: list[dict] = []
    for label, fn in (("PDAE", lambda: pdae_reference(args.pdae_repo)),
                      ("DisDiff", lambda: disdiff_reference(args.disdiff_repo, pixel=not args.no_pixel,
                                                            vq=not args.no_vq)),
                      ("InfoDiffusion baselines", lambda: infodiffusion_baselines(args.infodiffusion_repo))):
        try:
            rows += fn()
        except Exception as e:  # noqa: BLE001
            rows.append({"name": f"{label} (not built)", "result": None, "notes": [f"failed: {e!r}"]})

    print(_table(rows))
    print("(GFLOPs = 1e9 FLOPs, 2 per multiply-add, matmul/conv/attention only; batch 1; "
          "fwd+bwd = one training forward + loss.backward())")
    print()
    print(latent)
    if args.no_details:
        return
    print()
    print("stubbed modules (not installed here):", ", ".join(sorted(set(STUBBED))) or "none")
    for r in rows:
        print(f"\n* {r['name']}")
        for n in r["notes"]:
            print(f"    - {n}")
        res = r["result"]
        if res is None:
            continue
        print(f"    - bwd GFLOPs/img {res['bwd_flops'] / 1e9:.3f} (of which gradient-checkpoint recompute "
              f"{res['bwd_recompute_flops'] / 1e9:.3f}); trainable params without grad {res['trainable_without_grad']}")
        by = res["fwd_flops_by_module"]
        roots = [k for k in by if "." not in k]
        for root in roots:
            kids = {k: v for k, v in by.items() if k.startswith(root + ".")}
            kid_s = ", ".join(f"{k[len(root) + 1:]} {v / 1e9:.3f}" for k, v in sorted(kids.items(), key=lambda kv: -kv[1]))
            rest = by[root] - sum(kids.values())
            if abs(rest) > 1e3:
                kid_s += f", (in {root}.forward itself) {rest / 1e9:.3f}"
            print(f"    - fwd GFLOPs {root} {by[root] / 1e9:.3f}" + (f": {kid_s}" if kid_s else ""))
        other = res["fwd_flops"] - sum(by[k] for k in roots)
        if abs(other) > 1e3:
            print(f"    - fwd GFLOPs outside these modules (frozen encoder copies, loss) {other / 1e9:.3f}")

if __name__ == "__main__":
    main()
