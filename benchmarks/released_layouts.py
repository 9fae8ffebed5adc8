"""Write down the key layout (names and shapes) of DisDiff's released ``disdiff.ckpt`` from the authors' code, as data.

``tests/data/released/disdiff_shapes3d.json`` is what ``tests/test_released.py`` builds its random
checkpoints from, so the tests need no reference code. The layout is LatentDiffusion's
``state_dict`` for ``configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml`` as the reference code
builds it (ThomasMrY/DisDiff, ``ldm/models/diffusion/ddpm.py``):

* ``model.diffusion_model.*``: ``openaimodel_shift.UNetModel`` built by its own ``init_model`` from
  an LDM checkpoint (so it holds the ``scale_factor`` buffer it copies from there);
* ``model_ema.*``: LitEma (``ldm/modules/ema.py``) of the parameters that are trainable once the
  UNet froze its DPM part (``decay``, ``num_updates``, then the names without dots);
* ``cond_stage_model.*``: ``Encoder4``; ``first_stage_model.*``: ``VQModelInterface``'s encoder,
  decoder (``ldm/modules/diffusionmodules/model.py``), ``quant_conv``, ``post_quant_conv`` and
  taming's ``quantize.embedding`` (its loss is ``torch.nn.Identity`` in this config);
* the schedule buffers ``register_schedule`` registers (DisDiff adds ``shift_coef`` and
  ``ddim_coef``; ``lvlb_weights`` is not persistent) and ``scale_factor`` (``scale_by_std``).

Run: ``python benchmarks/released_layouts.py [--reference-dir PATH]`` (default: the DisDiff mirror).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.disdiff_latent_equivalence import UNET_PREFIX, _reference_code  # noqa: E402
from benchmarks.reference_counts import (  # noqa: E402
    DISDIFF_DDCONFIG, DISDIFF_ENCODER, DISDIFF_UNET, DISDIFF_VQ, _import_with_stubs,
)

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "released" / "disdiff_shapes3d.json"
SCHEDULE = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
            "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
            "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
            "shift_coef", "ddim_coef")


def layout(reference_dir: str | None) -> dict[str, list[int]]:
    with _reference_code(reference_dir) as notes:
        osm = _import_with_stubs("ldm.modules.diffusionmodules.openaimodel_shift", ("ldm",))
        encm = _import_with_stubs("ldm.modules.encoders.modules", ("ldm",))
        aem = _import_with_stubs("ldm.modules.diffusionmodules.model", ("ldm",))
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            with mock.patch.object(torch, "load", lambda *a, **k: {"state_dict": {}}):
                first = osm.UNetModel(**DISDIFF_UNET)
            ckpt = f"{tmp}/ldm.ckpt"
            torch.save({"state_dict": {**{UNET_PREFIX + k: v for k, v in first.state_dict().items()},
                                       "scale_factor": torch.tensor(0.8)}}, ckpt)
            unet = osm.UNetModel(**{**DISDIFF_UNET, "ckpt_path": ckpt})
            encoder = encm.Encoder4(**DISDIFF_ENCODER)
            enc, dec = aem.Encoder(**DISDIFF_DDCONFIG), aem.Decoder(**DISDIFF_DDCONFIG)
    out: dict[str, list[int]] = {}
    out.update({f"model.diffusion_model.{k}": list(v.shape) for k, v in unet.state_dict().items()})
    out.update({"model_ema.decay": [], "model_ema.num_updates": []})
    out.update({"model_ema." + ("diffusion_model." + k).replace(".", ""): list(p.shape)
                for k, p in unet.named_parameters() if p.requires_grad})
    out.update({f"cond_stage_model.{k}": list(v.shape) for k, v in encoder.state_dict().items()})
    out.update({f"first_stage_model.encoder.{k}": list(v.shape) for k, v in enc.state_dict().items()})
    out.update({f"first_stage_model.decoder.{k}": list(v.shape) for k, v in dec.state_dict().items()})
    z, e = DISDIFF_DDCONFIG["z_channels"], DISDIFF_VQ["embed_dim"]
    out.update({"first_stage_model.quantize.embedding.weight": [DISDIFF_VQ["n_embed"], e],
                "first_stage_model.quant_conv.weight": [e, z, 1, 1], "first_stage_model.quant_conv.bias": [e],
                "first_stage_model.post_quant_conv.weight": [z, e, 1, 1], "first_stage_model.post_quant_conv.bias": [z]})
    out.update({name: [1000] for name in SCHEDULE})
    out["scale_factor"] = []
    print(notes, file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", default=None)
    args = p.parse_args(argv)
    data = layout(args.reference_dir)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"source": "ThomasMrY/DisDiff configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml",
                               "keys": data}, indent=0))
    print(f"{len(data)} keys -> {OUT}")


if __name__ == "__main__":
    main()
