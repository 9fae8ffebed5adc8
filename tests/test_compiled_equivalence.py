"""A compiled training step and a compiled sampler compute the eager functions (issue 25; DESIGN.md, "Speed on a GPU").

``compile = true`` compiles the training loss (forward and backward) and the networks the
samplers call; by default only on CUDA. The environment variable ``BENCH_COMPILE_BACKEND``
(:func:`methods.diffusion_training.compile_backend`) compiles on the CPU too, with the named
backend, which is how these tests reach the compiled paths without a GPU. For every
diffusion method (ddpm, diffae, infodiffusion, pdae, disdiff, encdiff, drl, vdrl) at its
``tiny`` preset on 16 px TinyBars, with the same seed:

(a) one step: the compiled model draws the same batch, and its loss and every parameter's
    gradient equal the eager model's; a second call of the compiled loss compiles nothing new
    (the lazily filled device tables are filled before the first call, see ``_warm_caches``);
(b) a 5-step ``fit`` gives the eager loss curve (and the same latent-DDPM curve, trained on
    the codes of the compiled-trained encoder);
(c) ``sample``, ``reconstruct``, ``decode`` (and DDPM's ``encode``, EncDiff's attention maps)
    with the compiled networks equal the eager ones on the same fixed noise.

Backends. Most checks use ``aot_eager``: TorchDynamo's graph capture and AOTAutograd's
functionalised forward/backward graphs (the path inductor also takes), the graphs then run
by the eager kernels, so no C++ is generated: compiling a method's training step took 3.5–11 s
on the 2-core CI machine (ddpm 5, diffae 5, infodiffusion 3.5, pdae 3.5, disdiff 9, encdiff 11,
drl 4, vdrl 4; loaded by other jobs), its samplers 1.5–3 s. The real inductor backend is checked
on DDPM's sampler (a forward graph): 26–32 s to compile there with an empty inductor cache
(``/tmp/torchinductor_<user>``; a few seconds with a warm one). Inductor's forward + backward
compile of the tiny DDPM training step took 86 s there (cold cache), over this file's one-minute
allowance for it, so the training step is checked with ``aot_eager`` only (on a GPU,
``benchmarks/gpu_check.py --compile`` runs and times the inductor step).

Tolerances (float32 on the CPU; the bf16 autocast of CUDA is off here): loss ``rtol`` 1e-5,
gradients ``rtol`` 1e-4 / ``atol`` 1e-6, loss curves ``rtol`` 1e-4 (AdamW normalises each
update, so a rounding difference in a near-zero gradient moves a weight by up to lr; inductor
reached 1e-4 after 5 steps), images ``atol`` 1e-4 in [0, 1] and codes ``atol`` 1e-4. All are far
inside bf16's resolution (2⁻⁸ ≈ 3.9e-3). aot_eager runs the eager kernels on the captured
graph and matched bit for bit when these tests were written; inductor fuses and reorders
float reductions (≈ 1e-7 on images) and draws dropout masks from its own generator.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from methods.ddpm import DDPM
from methods.diffae import DiffAE
from methods.disdiff import DisDiff, ldm_params
from methods.drl import DRL, VDRL
from methods.diffusion_training import COMPILE_BACKEND_ENV, compile_backend, native_cpu_convolutions
from methods.encdiff import EncDiff
from methods.infodiffusion import InfoDiffusion
from methods.pdae import PDAE, dpm_params
from methods.ldm import LDM
from methods.vqgan import VQF4
from tests.conftest import TinyBars

LOSS_RTOL = 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6
CURVE_RTOL = 1e-4
IMAGE_ATOL = 1e-4
CODE_ATOL = 1e-4

METHODS = {"ddpm": DDPM, "diffae": DiffAE, "infodiffusion": InfoDiffusion, "pdae": PDAE, "disdiff": DisDiff,
           "encdiff": EncDiff, "drl": DRL, "vdrl": VDRL}
#: 5 logged steps; small pools and a 2-step latent DDPM keep each method to seconds
FAST = {"steps": 5, "batch_size": 8, "log_every": 1, "data_pool": 64, "eval_batch_size": 8,
        "latent_steps": 2, "latent_batch_size": 8, "latent_samples": 32}


def test_compiling_stays_cuda_only_unless_a_backend_is_forced(monkeypatch, tiny_data):
    monkeypatch.delenv(COMPILE_BACKEND_ENV, raising=False)
    assert compile_backend("cpu") is None and compile_backend("cuda") == "inductor"
    assert compile_backend("cuda", enabled=False) is None
    model = DDPM.from_preset("tiny", compile=True, data_pool=16)
    assert not _is_compiled(model.setup_training(tiny_data).loss_fn)  # compile = true alone: eager on the CPU
    assert model._inference_net(model.unet_) is model.unet_
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    assert compile_backend("cpu") == "aot_eager" and compile_backend("cpu", enabled=False) is None
    model = DDPM.from_preset("tiny", data_pool=16)  # compile = false: the variable alone compiles nothing
    assert not _is_compiled(model.setup_training(tiny_data).loss_fn)
    assert model._inference_net(model.unet_) is model.unet_


@pytest.fixture(scope="module")
def data() -> TinyBars:
    return TinyBars()


@pytest.fixture(scope="module")
def components(data) -> dict[str, dict[str, Any]]:
    """The trained stages PDAE (a tiny DPM), latent DisDiff (a tiny latent DPM) and EncDiff (a tiny VQ first stage)
    need; quality is irrelevant."""
    dpm = DDPM(**{**DDPM.presets["tiny"], **dpm_params(PDAE.from_preset("tiny").get_params()), "steps": 5}).fit(data)
    vq = VQF4.from_preset("tiny", steps=4).fit(data, seed=0)
    ldm = LDM(**{**LDM.presets["tiny"], **ldm_params(DisDiff.from_preset("tiny").get_params()), "steps": 5})
    ldm.fit(data, components={"first_stage": vq})
    return {"pdae": {"dpm": dpm}, "disdiff": {"ldm": ldm}, "encdiff": {"first_stage": vq}}


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """Every test compiles from scratch, and one that hits dynamo's recompile limit fails instead of running eagerly.

    (The graphs of a network class are shared by every model in the process: left alone, the
    models of earlier tests would use up ``UNet.forward``'s 8 cache entries.)
    """
    torch._dynamo.reset()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
    torch._dynamo.reset()


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")


def _graphs() -> int:
    """Graphs compiled so far in this process (a graph a model of the same class already compiled is reused)."""
    return counters["stats"]["unique_graphs"]


def _is_compiled(fn: Any) -> bool:
    return getattr(fn, "_torchdynamo_orig_callable", None) is not None


def _compiled_nets(model) -> list[torch.nn.Module]:
    """The compiled wrappers :meth:`_inference_net` made (each shares its network's parameters)."""
    return [wrapper for net, wrapper in model.__dict__.get("_compiled_nets", {}).values()
            if isinstance(wrapper, torch._dynamo.eval_frame.OptimizedModule) and wrapper._orig_mod is net]


def _model(name: str, comps: dict[str, Any], **overrides: Any):
    cls = METHODS[name]
    params = {k: v for k, v in FAST.items() if k in cls.defaults}
    model = cls.from_preset("tiny", **{**params, **overrides})
    model.components_ = dict(comps)  # what fit(components=...) stores; setup_training reads it
    return model


def _fit(name: str, comps: dict[str, Any], data, **overrides: Any):
    model = _model(name, {}, **overrides)
    return model.fit(data, seed=0, **({"components": comps} if comps else {}))


def _first_step(model, data) -> tuple[dict[str, torch.Tensor], float, dict[str, torch.Tensor], Any]:
    """The batch, loss and gradients of one step from the seeded initialisation (no optimiser step)."""
    state = model.setup_training(data, seed=0)
    batch = state.draw(state)
    with native_cpu_convolutions(bool(model.cpu_native_conv)):
        loss = state.loss_fn(batch)
        loss.backward()
    grads = {f"{net_name}.{k}": p.grad.detach().clone() for net_name, net in model._nets().items()
             for k, p in net.named_parameters() if p.grad is not None}
    return batch, float(loss.detach()), grads, state


@contextlib.contextmanager
def _compiled(model, on: bool = True) -> Iterator[None]:
    """Inside, ``model`` samples with ``compile = on`` (the switch it was trained with is restored after)."""
    saved = model._params["compile"]
    model._params["compile"] = on
    try:
        yield
    finally:
        model._params["compile"] = saved


def _inference_outputs(model, data) -> dict[str, np.ndarray]:
    x = data.images(np.arange(4))
    out = {"sample": model.sample(4, seed=1), "reconstruct": model.reconstruct(x)}
    if "decode" in model.capabilities:
        z = model.encode(x)
        out["decode"] = model.decode(z[::-1].copy())
    if isinstance(model, DDPM):
        out["encode"] = model.encode(x)  # DDIM inversion, through the compiled UNet
    if isinstance(model, EncDiff):
        out["attention_maps"] = model.attention_maps(x[:2])
    return out


@pytest.mark.parametrize("name", list(METHODS))
def test_compiled_step_loss_curve_and_samplers_equal_eager(name, data, components, aot_eager):
    comps = components.get(name, {})
    timings = {}

    # (a) one step: same batch, same loss, same gradients; the second call traces nothing new
    batch_e, loss_e, grads_e, _ = _first_step(_model(name, comps), data)
    start = time.perf_counter()
    model_c = _model(name, comps, compile=True)
    batch_c, loss_c, grads_c, state_c = _first_step(model_c, data)
    timings["train compile + step"] = time.perf_counter() - start
    assert _is_compiled(state_c.loss_fn), f"{name}: compile=True and {COMPILE_BACKEND_ENV} did not compile the loss"
    for key in batch_e:
        torch.testing.assert_close(batch_c[key], batch_e[key], rtol=0, atol=0)
    assert loss_c == pytest.approx(loss_e, rel=LOSS_RTOL)
    assert grads_c.keys() == grads_e.keys() and grads_e
    for key in grads_e:
        torch.testing.assert_close(grads_c[key], grads_e[key], rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=key)
    settled = _graphs()
    with native_cpu_convolutions(bool(model_c.cpu_native_conv)):
        state_c.loss_fn(state_c.draw(state_c))
    assert _graphs() == settled, f"{name}: the compiled loss was traced again on its second call"

    # (b) a short run: the same loss curve (and the latent DDPM's, trained on the compiled run's codes)
    eager = _fit(name, comps, data)
    compiled = _fit(name, comps, data, compile=True)  # reuses the graph compiled in (a)
    curve_e, curve_c = np.array(eager.history_), np.array(compiled.history_)
    assert curve_e.shape == curve_c.shape == (FAST["steps"], 2)
    np.testing.assert_allclose(curve_c, curve_e, rtol=CURVE_RTOL)
    if getattr(eager, "latent_history_", None):
        np.testing.assert_allclose(np.array(compiled.latent_history_), np.array(eager.latent_history_), rtol=CURVE_RTOL)

    # (c) the samplers with compiled networks, on the eager-trained weights and the same seeds
    plain = _inference_outputs(eager, data)
    start = time.perf_counter()
    with _compiled(eager):
        fast = _inference_outputs(eager, data)
    timings["inference compile + run"] = time.perf_counter() - start
    assert _compiled_nets(eager), f"{name}: sampling with compile=True compiled no network"
    for key, want in plain.items():
        atol = CODE_ATOL if key == "encode" else IMAGE_ATOL
        np.testing.assert_allclose(fast[key], want, rtol=0, atol=atol, err_msg=f"{name}.{key}")
    print(f"{name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))  # shown with -s


def test_time_conditioned_drl_compiles_its_per_step_encoder(data, aot_eager):
    """DRL with E(x_0, t) calls the encoder at every ODE step of ``reconstruct``: compiled, it decodes the same."""
    model = _fit("drl", {}, data, time_conditioned=True, steps=2)
    x = data.images(np.arange(4))
    plain = model.reconstruct(x)
    with _compiled(model):
        fast = model.reconstruct(x)
        cache = model.__dict__["_compiled_nets"]
    assert {id(model._eval_net("unet")), id(model._eval_net("encoder"))} <= {key[0] for key in cache}
    np.testing.assert_allclose(fast, plain, rtol=0, atol=IMAGE_ATOL)


@pytest.mark.skipif(not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++")),
                    reason="inductor generates C++ on the CPU: no C++ compiler found")
def test_ddpm_sampler_compiled_by_inductor_equals_eager(data, monkeypatch):
    """The real backend (C++ codegen on the CPU): DDPM's DDIM sampler and inversion, ≈ 30 s to compile here."""
    model = _fit("ddpm", {}, data, steps=2)
    x = data.images(np.arange(4))
    plain = {"sample": model.sample(4, seed=1), "reconstruct": model.reconstruct(x)}
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "inductor")
    with _compiled(model):
        fast = {"sample": model.sample(4, seed=1), "reconstruct": model.reconstruct(x)}
    assert [key[1] for key in model.__dict__["_compiled_nets"]] == ["inductor"] and _compiled_nets(model)
    for key, want in plain.items():
        np.testing.assert_allclose(fast[key], want, rtol=0, atol=IMAGE_ATOL, err_msg=key)
