"""Registries: lazy listing, duplicate rejection, did-you-mean; no shadowing of PyPI packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.registry import Registry, UnknownNameError

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_name_suggests_the_closest():
    reg = Registry("method")
    reg.register("beta-vae", "methods.vae:BetaVAE")
    with pytest.raises(UnknownNameError, match="unknown method 'betavae' \\(did you mean 'beta-vae'\\?\\)"):
        reg.get("betavae")


def test_duplicate_and_malformed_registrations_are_rejected():
    reg = Registry("metric")
    reg.register("mig", "bench.metrics.mig:mig")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("mig", "elsewhere:mig")
    with pytest.raises(ValueError, match="module:attr"):
        reg.register("sap", "bench.metrics.sap.sap")


def test_every_registered_target_imports():
    from bench import registry

    for reg in (registry.methods(), registry.datasets(), registry.metrics()):
        for entry in reg:
            assert callable(entry.load()), entry.name


def test_listing_does_not_import_torch():
    code = "import sys; from bench import registry; registry.populate(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_bench_ls_lists_everything():
    out = subprocess.run([sys.executable, "-m", "bench", "ls"], capture_output=True, text=True, cwd=ROOT, check=True)
    for name in ("ae", "vae", "beta-vae", "infovae", "dsprites-procedural", "factorvae", "dci"):
        assert name in out.stdout


def test_top_level_datasets_folder_does_not_shadow_hugging_face(tmp_path):
    assert not (ROOT / "datasets" / "__init__.py").exists()
    assert not list((ROOT / "datasets").glob("*.py")), "datasets/ must hold cards, not Python modules"
    # an installed `datasets` package, placed on the path *after* the repository root
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("WHO = 'installed'\n")
    code = f"import sys; sys.path.append({str(tmp_path / 'site')!r}); import datasets; print(datasets.WHO)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "installed"
