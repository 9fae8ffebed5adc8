"""Reading the authors' checkpoint files safely: their key layout without the tensor data, their tensors, their sha256.

The authors save with ``torch.save`` (a zip archive: ``<name>/data.pkl`` plus one entry per
storage); Lightning checkpoints (LDM, DisDiff, EncDiff, DiffAE) also pickle their
hyperparameters as arbitrary objects (OmegaConf configs, dataclasses), which
``torch.load(weights_only=True)`` refuses. So the pickle is read by an unpickler that builds
tensors and plain containers only and turns every other class into an inert placeholder —
no code from the file is ever run.

* :func:`read_layout`: the key layout, nested dicts flattened with ``"."``
  (``state_dict.model.diffusion_model.out.2.weight``), each tensor as a :class:`TensorInfo`
  (shape, dtype) — read from ``data.pkl`` alone, without reading a tensor's bytes, so a
  multi-GB file is checked in a fraction of a second before any work;
* :func:`read_tensors`: the same layout with the tensors themselves;
* :func:`file_sha256`: the file's identity (a different file is a different model).

A missing file, a truncated one (a zip archive's directory sits at its end) and a file that
is not a ``torch.save`` archive each raise :class:`CheckpointError` naming the path and what
was expected.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, not a torch.save archive, or of another layout."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's shape and dtype as the checkpoint declares them (its bytes are not read)."""

    shape: tuple[int, ...]
    dtype: str


Layout = dict[str, Any]  # flat key -> TensorInfo (read_layout) or torch.Tensor (read_tensors), or a plain value

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}
_SAFE = {("collections", "OrderedDict"), ("torch", "Size"), ("builtins", "set"), ("builtins", "frozenset"),
         ("builtins", "slice"), ("builtins", "complex")}


class _Inert:
    """What any class the file names becomes: it takes any arguments and state and does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _Inert()


def _inert_class(module: str, name: str) -> type:
    return type(f"Inert[{module}.{name}]", (_Inert,), {})


class _InertUnpickler(pickle.Unpickler):
    """Tensors, storages and plain containers as themselves; every other global as an inert class."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE or (module == "torch" and (name.endswith("Storage") or name in ("float32", "float16",
                                                                                                      "bfloat16"))):
            return super().find_class(module, name)
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return super().find_class(module, name)
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return super().find_class(module, name)
        if module in ("torch.nn.parameter", "torch") and name == "Parameter":
            return super().find_class(module, name)
        return _inert_class(module, name)


class _InertPickleModule:
    """A ``pickle_module`` for ``torch.load``: its unpickler is :class:`_InertUnpickler`."""

    Unpickler = _InertUnpickler
    load = staticmethod(pickle.load)
    __name__ = "bench.released.inert_pickle"


class _LayoutUnpickler(_InertUnpickler):
    """Reads ``data.pkl`` without the storages: each tensor becomes a :class:`TensorInfo`."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _tensor_info
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks, *rest: data
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return lambda func, new_type, args, state: func(*args)
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage type (a dtype name here), key, location, numel)
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        dtype = pid[1] if isinstance(pid[1], str) else str(getattr(pid[1], "dtype", "unknown")).replace("torch.", "")
        return dtype


def _tensor_info(storage: Any, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *rest: Any) -> TensorInfo:
    return TensorInfo(tuple(int(s) for s in size), str(storage))


def _archive(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (expected a file saved by torch.save; see the README's "
                              "\"Scoring released checkpoints\" for where the authors publish theirs)")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        size = path.stat().st_size
        raise CheckpointError(f"{path}: not a complete torch.save checkpoint ({size:,} bytes; {exc}): expected the zip "
                              "archive torch >= 1.6 writes; a download cut short ends like this") from None


def _data_pkl(archive: zipfile.ZipFile, path: Path) -> str:
    names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(names) != 1:
        raise CheckpointError(f"{path}: a zip archive but not a torch.save checkpoint (no single data.pkl in it)")
    return names[0]


def flatten(obj: Any, prefix: str = "") -> Layout:
    """Nested dicts → one level, keys joined with ``"."``; other values kept as they are."""
    out: Layout = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                out.update(flatten(value, name))
            else:
                out[name] = value
    else:
        out[prefix] = obj
    return out


def read_layout(path: str | os.PathLike) -> Layout:
    """The flattened key layout of a checkpoint, tensors as :class:`TensorInfo`, without reading tensor data."""
    path = Path(path)
    with _archive(path) as archive:
        name = _data_pkl(archive, path)
        try:
            data = archive.read(name)
            obj = _LayoutUnpickler(io.BytesIO(data)).load()
        except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(f"{path}: its data.pkl cannot be read ({type(exc).__name__}: {exc})") from None
    return flatten(obj)


def read_tensors(path: str | os.PathLike) -> Layout:
    """The flattened checkpoint with its tensors (on the CPU); classes it names stay inert placeholders."""
    path = Path(path)
    _archive(path).close()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a Lightning checkpoint's hyperparameters: read them inert
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_InertPickleModule)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: cannot be read, is it complete? ({type(exc).__name__}: {exc})") from None
    return flatten(obj)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """The file's sha256 (remembered per path, size and modification time within a process)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]
