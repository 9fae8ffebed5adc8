"""One prepared GPU check: training, sampling, the autoencoder family, FID features and evaluation, beside the reference.

Run it on one H100/H200 (about 5-6 minutes before the last section, the tiny grid, which gets what
is left of ``--budget``, 480 s; ``--compile`` adds the compiled rows, whose compilation alone took
350 s for InfoDiffusion's training step on an H200)::

    python benchmarks/gpu_check.py --reference-dir .ref/InfoDiffusion-dev --json gpu_check.json

and on a CPU, at toy sizes, so the script never rots (a test runs this)::

    python benchmarks/gpu_check.py --cpu-smoke

It prints one table and writes the same rows as JSON (``--json``). Rows, each with its
batch size and precision:

* **train**: images/s of the adapters' own training step (``setup_training`` /
  ``train_step``: data pool on the device, bf16 autocast, channels-last, fused AdamW) at the
  ``paper`` presets on 64×64×3 images, eager and (``--compile``) with ``compile = true`` or
  the loss compiled into CUDA graphs (the seconds of the warm-up steps, compilation
  included, are recorded); InfoDiffusion at batch 64 and 256, DDPM, DiffAE and PDAE at 256;
* **reference**: isjakewong/InfoDiffusion's own training step (dev branch, as released in
  fp32) at batch 64 and 256, timed in the same process. Fetch it with
  ``git clone -b InfoDiffusion-dev https://github.com/isjakewong/InfoDiffusion`` and pass
  the folder as ``--reference-dir`` (without it the rows say "not given");
* **sample**: images/s of the DDIM chain (100 steps, DiffAE at its preset's 20) at batch
  256, eager and (``--compile``) compiled, with the largest difference between the two on
  the same noise;
* **ae-family**: β-VAE ``paper`` preset training images/s on 64×64 procedural dSprites
  (batches rendered on the host: the figure shows whether the family is starved);
* **fid-features**: images/s of the FID Inception network (random weights: the same cost)
  at batch 100 and 500, fp32;
* **evaluate**: images/s of rendering (CPU) and encoding (device) apart, then seconds of
  BetaVAE, FactorVAE and DCI at disentanglement_lib's study defaults on a β-VAE ``paper``
  model (trained for ``--eval-train-steps`` steps: the time does not depend on how well it is
  trained); DCI twice, with the spare cores' threads in the many-class factors' fits and with
  one thread per fit;
* **grid**: seconds of ``bench run --profile gpu-tiny-grid`` (every method's tiny preset, one
  seed, FactorVAE, DCI, FID, reconstruction) in a fresh process, last: it gets what is left of
  ``--budget`` (480 s: the check stays within 8 minutes) and at most ``--grid-timeout``, and
  says how many stages finished if that runs out.

Model FLOP utilisation (MFU) is FLOPs per image (``torch.utils.flop_counter`` on the meta
device) × images/s ÷ the dense bf16 peak of the GPU (989.4 TFLOP/s for H100 SXM and H200).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench import registry
from bench.adapter import resolve_device
from diffusion_throughput import (  # benchmarks/ is on sys.path when this script runs
    RandomImages, attach_components, peak_flops, reference_step_fn, sync, training_flops_per_image,
)

REPO = Path(__file__).resolve().parent.parent
GRID_PROFILE = "gpu-tiny-grid"
TRAIN_CASES = (("infodiffusion", 64), ("infodiffusion", 256), ("ddpm", 256), ("diffae", 256), ("pdae", 256))
SAMPLE_METHODS = ("ddpm", "infodiffusion", "pdae", "diffae")


class Table:
    """The check's rows: printed as one table at the end and written as JSON."""

    def __init__(self, path: Path | None = None, header: str = "") -> None:
        self.rows: list[dict[str, Any]] = []
        self.path, self.header = path, header

    def add(self, section: str, what: str, value: float | None, unit: str, note: str = "", **extra: Any) -> None:
        row = {"section": section, "what": what, "value": value, "unit": unit, "note": note, **extra}
        self.rows.append(row)
        self.save()
        shown = "—" if value is None else f"{value:,.1f}"
        print(f"  {section:<13} {what:<44} {shown:>12} {unit:<8} {note}", flush=True)

    def save(self) -> None:
        """Written after every row, so a run cut short keeps what it measured."""
        if self.path is not None:
            self.path.write_text(json.dumps({"header": self.header, "torch": torch.__version__, "rows": self.rows}, indent=1))

    def print(self, header: str) -> None:
        print("\n" + header)
        print("| section | what | value | unit | note |\n|---|---|---|---|---|")
        for r in self.rows:
            shown = "—" if r["value"] is None else f"{r['value']:,.1f}"
            print(f"| {r['section']} | {r['what']} | {shown} | {r['unit']} | {r['note']} |")


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = None
    for _ in range(repeats):
        out = fn()
    sync(device)
    return (time.perf_counter() - start) / repeats, out


# -- training ------------------------------------------------------------------------------------
def train_rate(name: str, preset: str, batch: int, data, device, steps: int, warmup: int, mode: str,
               shape) -> tuple[float, float, float]:
    """(images/s, seconds of the warm-up steps (compile included), loss after the timed steps).

    ``mode``: ``eager``; ``compiled`` (the adapter's ``compile = true``: ``torch.compile`` of
    the loss, forward and backward); ``cudagraphs`` (the loss compiled with
    ``mode="reduce-overhead"``: CUDA graphs replay forward and backward).
    """
    cls = registry.methods().load(name)
    adapter = cls.from_preset(preset, batch_size=batch, compile=mode == "compiled")
    attach_components(adapter, shape, preset)
    state = adapter.setup_training(data, seed=0, device=device)
    if mode == "cudagraphs":
        graphed = torch.compile(adapter._loss, mode="reduce-overhead")

        def loss_fn(batch_: dict) -> torch.Tensor:
            torch.compiler.cudagraph_mark_step_begin()
            return graphed(batch_).clone()  # the graph's output buffer is reused by the next replay

        state.loss_fn = loss_fn
    first, _ = timed(lambda: [adapter.train_step(state) for _ in range(warmup)], device)
    seconds, losses = timed(lambda: [adapter.train_step(state) for _ in range(steps)], device)
    loss = float(losses[-1])
    if not np.isfinite(loss):
        raise RuntimeError(f"{name}: non-finite loss in the check")
    return steps * batch / seconds, first, loss


def section_train(table: Table, args, device, shape, peak) -> None:
    data = RandomImages(64 if args.cpu_smoke else 4096, shape)
    for name, batch in TRAIN_CASES:
        batch = args.smoke_batch or batch
        counted = registry.methods().load(name).from_preset(args.preset, batch_size=batch)
        attach_components(counted, shape, args.preset)
        flops, params = training_flops_per_image(counted, shape)
        modes = ["eager"]
        if args.compile and f"{name}:{batch}" in args.compile_train.split(","):
            modes.append("compiled")
        if args.compile and f"{name}:{batch}" in args.cudagraph_train.split(","):
            modes.append("cudagraphs")
        for mode in modes:
            try:
                ips, warm_s, loss = train_rate(name, args.preset, batch, data, device, args.steps, args.warmup,
                                               mode, shape)
            except Exception as exc:  # one failing case does not hide the others
                table.add("train", f"{name} b{batch} {mode}", None, "img/s",
                          f"failed: {type(exc).__name__}: {str(exc)[:160]}")
                continue
            mfu = f"MFU {100 * flops * ips / peak:.1f} %; " if peak else ""
            table.add("train", f"{name} b{batch} bf16 {mode}", ips, "img/s",
                      f"{mfu}{params / 1e6:.1f} M params; {args.warmup} warm-up steps {warm_s:.1f} s; loss {loss:.4f}",
                      method=name, batch=batch, mode=mode, warmup_s=warm_s, mfu=(flops * ips / peak) if peak else None)
            if device.type == "cuda":
                torch.cuda.empty_cache()


def section_reference(table: Table, args, device) -> None:
    if args.reference_dir is None or not (args.reference_dir / "models.py").is_file():
        table.add("reference", "isjakewong/InfoDiffusion dev, fp32", None, "img/s",
                  "not given: git clone -b InfoDiffusion-dev https://github.com/isjakewong/InfoDiffusion; "
                  "--reference-dir that folder")
        return
    import contextlib
    import io

    for batch in (args.smoke_batch or 64, args.smoke_batch or 256):
        step, _, _ = reference_step_fn(args.reference_dir, device, batch, amp=False)
        with contextlib.redirect_stdout(io.StringIO()):  # its per-step prints still synchronise the host
            timed(lambda: [step() for _ in range(args.warmup)], device)
            seconds, _ = timed(lambda: [step() for _ in range(args.steps)], device)
        table.add("reference", f"InfoDiffusion (reference) b{batch} fp32 as released", args.steps * batch / seconds,
                  "img/s", "same process, same GPU", batch=batch)
        if device.type == "cuda":
            torch.cuda.empty_cache()


# -- sampling ------------------------------------------------------------------------------------
def built_adapter(name: str, preset: str, device, shape, **params: Any):
    """A paper-preset adapter with its networks built (random weights: the cost of sampling is the same)."""
    cls = registry.methods().load(name)
    adapter = cls.from_preset(preset, **params)
    attach_components(adapter, shape, preset)
    with torch.random.fork_rng(devices=[]):
        adapter._build(shape)
    adapter.input_shape, adapter._fitted = tuple(shape), True
    adapter.to(device)
    for net in adapter._nets().values():
        net.eval()
    return adapter


@torch.no_grad()
def sample_chain(adapter, n: int, device) -> torch.Tensor:
    from bench.diffusion.samplers import sample_loop

    generator = torch.Generator().manual_seed(0)
    x_T = adapter._x_T(n, generator).to(device)
    if hasattr(adapter, "latent_dim"):
        z = torch.randn((n, adapter.latent_dim), generator=generator).to(device)
        return adapter._render(z, x_T, generator, adapter._denoiser)
    return sample_loop(adapter._denoiser(), adapter._image_sampler(), x_T, generator)


def section_sample(table: Table, args, device, shape) -> None:
    n = args.smoke_batch or 256
    for name in SAMPLE_METHODS:
        steps = {"ddim_steps": args.sample_steps} if name != "diffae" else {}
        outputs = {}
        for compile_ in ((False, True) if args.compile and name in args.compile_sample.split(",") else (False,)):
            try:
                adapter = built_adapter(name, args.preset, device, shape, compile=compile_, **steps)
                chain = functools.partial(sample_chain, adapter, n, device)
                first, _ = timed(chain, device)
                seconds, x0 = timed(chain, device)
            except Exception as exc:
                table.add("sample", f"{name} b{n} {'compiled' if compile_ else 'eager'}", None, "img/s",
                          f"failed: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            outputs[compile_] = torch.as_tensor(np.asarray(x0.float().cpu() if torch.is_tensor(x0) else x0))
            diff = ""
            if compile_ and False in outputs:
                diff = f"; max |compiled - eager| {float((outputs[True] - outputs[False]).abs().max()):.3g}"
            table.add("sample", f"{name} DDIM-{adapter.ddim_steps} b{n} {'compiled' if compile_ else 'eager'}",
                      n / seconds, "img/s", f"first run {first:.1f} s{diff}", method=name, compiled=compile_)
            del adapter
            if device.type == "cuda":
                torch.cuda.empty_cache()


# -- the autoencoder family, FID features, evaluation --------------------------------------------
def section_ae(table: Table, args, device) -> Any:
    data = registry.datasets().create(args.ae_dataset)
    cls = registry.methods().load("beta-vae")
    params = {**cls.presets[args.preset], "steps": args.ae_steps, "log_every": args.ae_steps}
    cls(**{**params, "steps": min(50, args.ae_steps)}).fit(data, seed=0, device=device)  # warm-up: allocator, cuDNN
    adapter = cls(**params)
    seconds, _ = timed(lambda: adapter.fit(data, seed=1, device=device), device)
    table.add("ae-family", f"beta-vae {args.preset} b{adapter.batch_size} on {args.ae_dataset}",
              args.ae_steps * adapter.batch_size / seconds, "img/s", f"{args.ae_steps} steps in {seconds:.1f} s")
    return data


def section_fid(table: Table, args, device) -> None:
    from bench.metrics.fid import extract_features
    from bench.metrics.fid_inception import FIDInceptionV3

    net = FIDInceptionV3().to(device).eval()
    n = args.fid_images
    images = np.random.default_rng(0).random((n, 3, 64, 64), dtype=np.float32)
    for batch in (100, 500):
        with torch.no_grad():
            extract_features(images[:batch], net, batch_size=batch, device=device)  # warm-up
            seconds, _ = timed(lambda: extract_features(images, net, batch_size=batch, device=device), device)
        table.add("fid-features", f"Inception pool3, batch {batch}, fp32", n / seconds, "img/s", f"{n} images")


def section_evaluate(table: Table, args, device, data) -> None:
    from bench.evaluation import evaluate
    from bench.metrics import dci as dci_module

    cls = registry.methods().load("beta-vae")
    adapter = cls(**{**cls.presets[args.preset], "steps": args.eval_train_steps, "log_every": args.eval_train_steps})
    adapter.fit(data, seed=0, device=device)
    params = {} if not args.cpu_smoke else {
        "betavae": {"num_train": 100, "num_eval": 50},
        "factorvae": {"num_train": 200, "num_eval": 100, "num_variance_estimate": 500},
        "dci": {"num_train": 200, "num_test": 100}}
    # BetaVAE and FactorVAE render and encode ~1.9 M and ~1 M images at the study defaults: which of the two
    # bounds them (the rendering runs on the CPU, one process; the encoder on the device)
    n = 2000 if args.cpu_smoke else 100_000
    idx = np.random.default_rng(0).integers(0, len(data), n)
    adapter.encode(data.images(idx[:1000]))  # warm-up: first touch, cuDNN
    seconds, images = timed(lambda: data.images(idx), torch.device("cpu"))
    table.add("evaluate", f"render {data.name} (CPU, one process)", n / seconds, "img/s", f"{n} images")
    seconds, _ = timed(lambda: adapter.encode(images), device)
    table.add("evaluate", f"encode with beta-vae {args.preset} (batches of 512)", n / seconds, "img/s", f"{n} images")
    trees = [dci_module.trees_per_stage(np.arange(size)) for size in data.factor_sizes]
    threads = dci_module.threads_per_factor(trees, -1)  # DCI's own choice with n_jobs=-1
    for metric, label, max_threads in (("betavae", "", None), ("factorvae", "", None),
                                       ("dci", f", threads per factor's fit {threads}", None),
                                       ("dci", ", one thread per factor's fit", 1)):
        saved = dci_module.MAX_THREADS_PER_FIT
        dci_module.MAX_THREADS_PER_FIT = max_threads or saved  # 1: without the spare cores' threads
        try:
            start = time.perf_counter()
            rows = evaluate(metric, params.get(metric, {}), adapter, data, 0, {"model_id": "gpu-check"})
            seconds = time.perf_counter() - start
        finally:
            dci_module.MAX_THREADS_PER_FIT = saved
        values = ", ".join(f"{r['metric']}={r['value']:.3f}" for r in rows if r["status"] == "ok")
        table.add("evaluate", f"{metric} at {'the study defaults' if not params else 'toy sizes'}{label}", seconds,
                  "s", values or rows[0].get("reason", ""))


def section_grid(table: Table, args, device, seconds_left: float) -> None:
    """The tiny every-method grid (bench.toml's ``gpu-tiny-grid``) as a user runs it: ``bench run`` in a fresh
    process, into an empty results folder, stopped when the check's time budget runs out."""
    import collections
    import csv
    import re
    import subprocess
    import tempfile

    limit = min(args.grid_timeout, seconds_left)
    what = f"bench run --profile {GRID_PROFILE}" + (" (CPU smoke: ae only, 2 steps)" if args.cpu_smoke else "")
    if seconds_left < 30:
        table.add("grid", what, None, "s", f"not run: {seconds_left:.0f} s of the --budget left")
        return
    from bench.metrics.fid_inception import FIDInceptionV3
    from bench.metrics.fid_weights import FIDUnavailableError, find_weights

    with tempfile.TemporaryDirectory(prefix="gpu-check-grid-") as root:
        results, env, fid_note = str(Path(root) / "results"), dict(os.environ), ""
        try:
            find_weights()
        except FIDUnavailableError:  # FID still costs what it costs: its rows are timed on random weights
            stand_in = Path(root) / "random-inception.pth"
            torch.save(FIDInceptionV3().state_dict(), stand_in)
            env["BENCH_FID_WEIGHTS"], fid_note = str(stand_in), "; FID on random Inception weights (timing only)"
            env["BENCH_CACHE"] = root  # their reference statistics are not kept
        command = [sys.executable, "-m", "bench", "run", "--config", str(REPO / "bench.toml"),
                   "--profile", GRID_PROFILE, "--device", str(device), "--results", results, "--no-progress"]
        if args.cpu_smoke:
            command += ["--methods", "ae", "--set", 'overrides."*".steps=2',
                        "--set", 'metric_params.dci.importance="gbt"',  # the exact trees are quick at 100 rows
                        "--set", "metric_params.dci.num_train=100", "--set", "metric_params.dci.num_test=50",
                        "--set", "metric_params.factorvae.num_train=20", "--set", "metric_params.factorvae.num_eval=10",
                        "--set", "metric_params.factorvae.num_variance_estimate=100",
                        "--set", "metric_params.fid.num_samples=8", "--set", "metric_params.fid.num_reference=16",
                        "--set", "metric_params.reconstruction.num_samples=8"]
        start = time.perf_counter()
        # its own process group: on a timeout the run and its worker processes stop together
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                   env=env, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=limit)
            seconds, code = time.perf_counter() - start, process.returncode
        except subprocess.TimeoutExpired:  # what it finished is counted
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            seconds, code = None, None
        table_csv = Path(results) / "results.csv"  # the metric rows' statuses: ok / skipped / failed
        statuses: collections.Counter = collections.Counter()
        if table_csv.is_file():
            with open(table_csv, newline="") as rows:
                statuses.update(row["status"] for row in csv.DictReader(rows))
    finished = re.findall(r"^\[(\d+)/(\d+)\] (\w+)", output, flags=re.M)
    total = finished[-1][1] if finished else "?"
    failed = sum(1 for _, _, state in finished if state != "done")
    shown = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    note = f"{len(finished)} of {total} stages finished, {failed} failed; rows: {shown or 'none'}{fid_note}"
    if seconds is None:
        note = f"stopped after {limit:.0f} s: {note}"
    elif code != 0:
        note = f"exit status {code}: {note}; {output.strip().splitlines()[-1][:160] if output.strip() else ''}"
    table.add("grid", what, seconds, "s", note, stages=len(finished), failed=failed, rows=dict(statuses))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same code paths at toy sizes on the CPU")
    parser.add_argument("--reference-dir", type=Path, default=None, help="a checkout of isjakewong/InfoDiffusion (dev)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--sections", default="train,reference,sample,ae,fid,evaluate,grid")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds the whole check may take: the grid, last, stops when they run out")
    parser.add_argument("--grid-timeout", type=float, default=300, help="the most seconds the grid may take")
    parser.add_argument("--compile", action="store_true",
                        help="also time the compiled cases below (InfoDiffusion's b64 compile took 350 s on an H200)")
    parser.add_argument("--compile-train", default="infodiffusion:64,infodiffusion:256,ddpm:256",
                        help="method:batch cases also timed with compile = true")
    parser.add_argument("--cudagraph-train", default="infodiffusion:64",
                        help="method:batch cases also timed with the loss compiled in reduce-overhead mode")
    parser.add_argument("--compile-sample", default="ddpm,infodiffusion", help="methods also sampled compiled")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=8, help="untimed training steps first (compile happens here)")
    parser.add_argument("--sample-steps", type=int, default=100)
    args = parser.parse_args(argv)
    args.preset, args.smoke_batch = "paper", None
    args.ae_dataset, args.ae_steps, args.eval_train_steps, args.fid_images = "dsprites-procedural", 1000, 200, 5000
    if args.cpu_smoke:
        args.preset, args.smoke_batch, args.steps, args.warmup, args.sample_steps = "tiny", 2, 1, 1, 2
        args.ae_dataset, args.ae_steps, args.eval_train_steps, args.fid_images = "dsprites-procedural-32", 2, 2, 4
        args.compile = False  # inductor on a CPU takes minutes; tests/test_compiled_equivalence.py covers compiled == eager
    device = torch.device("cpu") if args.cpu_smoke else resolve_device("auto")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    shape = (3, 32, 32) if args.cpu_smoke else (3, 64, 64)
    peak = peak_flops(device, None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    header = (f"gpu_check: {name} | torch {torch.__version__} | images {shape} | presets {args.preset} | "
              f"bf16 autocast on CUDA | compile {'on' if args.compile else 'off'}")
    print(header, flush=True)
    table = Table(args.json, header)
    sections = set(args.sections.split(","))
    start = time.perf_counter()
    data = None
    for section, run in (("train", lambda: section_train(table, args, device, shape, peak)),
                         ("reference", lambda: section_reference(table, args, device)),
                         ("sample", lambda: section_sample(table, args, device, shape)),
                         ("fid", lambda: section_fid(table, args, device)),
                         ("ae", lambda: section_ae(table, args, device)),
                         ("evaluate", lambda: section_evaluate(table, args, device, data or registry.datasets().create(args.ae_dataset))),
                         ("grid", lambda: section_grid(table, args, device, args.budget - (time.perf_counter() - start)))):
        if section not in sections:
            continue
        t0 = time.perf_counter()
        out = run()
        if section == "ae":
            data = out
        print(f"  [{section}: {time.perf_counter() - t0:.0f} s]", flush=True)
    table.header = f"{header} | {time.perf_counter() - start:.0f} s in all"
    table.save()
    table.print(table.header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
