"""A codes file: the ``.npz`` table that ``bench score`` reads, loaded and validated.

The file is a NumPy ``.npz`` archive (``np.savez``) with

* ``codes`` — float (N, D), required, finite;
* ``factors`` — integer class indices (N, K) of ground-truth factors, optional, with an
  optional ``factor_names`` (K strings);
* ``attributes`` — binary 0/1 (N, A), optional, with optional ``attribute_names``;
* ``labels`` — integer class labels (N,), optional.

Every malformed file raises :class:`CodesFileError` with a message that names the file, the
key and the fix.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bench.registry import did_you_mean

_KEYS = ("codes", "factors", "factor_names", "attributes", "attribute_names", "labels")


class CodesFileError(ValueError):
    """A codes file that cannot be scored; the message names the file, the key and the fix."""


def load_codes_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a codes ``.npz`` file (see the module docstring for the keys).

    Returns:
        ``{"codes": float64 (N, D), "factors": int64 (N, K), "factor_names": list[str],
        "attributes": int64 (N, A), "attribute_names": list[str], "labels": int64 (N,),
        "source": str}`` with only the keys present in the file (plus ``source``).

    Raises:
        FileNotFoundError: no such file.
        CodesFileError: not an ``.npz`` archive, or a key is missing, unknown or malformed.
    """
    path = Path(path)
    if path.is_dir():
        raise CodesFileError(f"{path}: is a directory; expected a codes .npz file (np.savez(path, codes=..., factors=...))")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such codes file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CodesFileError(f"{path}: not a NumPy .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CodesFileError(f"{path}: holds a single array; expected an .npz archive of named arrays (np.savez(path, codes=...))")
    with archive:
        _check_headers(path, archive.zip)
        arrays = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "pickle" in str(exc):  # object arrays need pickle, which is refused
                    raise CodesFileError(f"{path}: key {key!r} cannot be read without pickle ({exc}); "
                                         "store plain arrays") from None
                raise _damaged(path, key, exc) from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as exc:
                raise _damaged(path, key, exc) from None
    return validate_codes(arrays, str(path))


def _damaged(path: Path, key: str, exc: BaseException) -> CodesFileError:
    return CodesFileError(f"{path}: key {key!r} cannot be read: the file is damaged or truncated "
                          f"({type(exc).__name__}: {exc}); write it again with np.savez")


def _check_headers(path: Path, archive: zipfile.ZipFile) -> None:
    """Each member's .npy header against the bytes the member holds, before anything is allocated.

    A damaged header can claim terabytes; the array is read only when its header is consistent.
    """
    for info in archive.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        try:
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(f)
                offset = f.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise _damaged(path, key, exc) from None
        if dtype.hasobject:
            continue  # refused, with its own message, when it is read
        needed = math.prod(shape) * dtype.itemsize
        if needed > info.file_size - offset:
            raise CodesFileError(f"{path}: key {key!r} claims shape {tuple(shape)} of {dtype} ({needed:,} bytes) but holds "
                                 f"{info.file_size - offset:,} bytes: the file is damaged or truncated; write it again")


def validate_codes(arrays: Mapping[str, Any], source: str = "codes") -> dict[str, Any]:
    """Validate named arrays as a codes table; ``source`` (a file name) prefixes every error."""
    unknown = [k for k in arrays if k not in _KEYS]
    if unknown:
        key = unknown[0]
        raise CodesFileError(f"{source}: unknown key {key!r}{did_you_mean(key, _KEYS)}; expected keys: {', '.join(_KEYS)}")
    if "codes" not in arrays:
        raise CodesFileError(f"{source}: missing key 'codes' (float array N x D); keys present: {sorted(arrays)}")
    out: dict[str, Any] = {"source": source}

    codes = np.asarray(arrays["codes"])
    if codes.dtype.kind != "f":
        raise CodesFileError(f"{source}: key 'codes' must be a float array, got dtype {codes.dtype} (use .astype(np.float32))")
    if codes.ndim != 2 or codes.shape[0] < 2 or codes.shape[1] < 1:
        raise CodesFileError(f"{source}: key 'codes' must have shape (N, D) with N >= 2 and D >= 1, got {codes.shape}")
    bad = ~np.isfinite(codes)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CodesFileError(
            f"{source}: key 'codes' has {int(bad.sum())} NaN or infinite values (first at row {row}, column {col})"
        )
    n = codes.shape[0]
    out["codes"] = codes.astype(np.float64)

    if "factors" in arrays:
        factors = _int_array(arrays["factors"], "factors", source, ndim=2, n=n, what="class indices (N x K)")
        if (factors < 0).any():
            raise CodesFileError(f"{source}: key 'factors' must be class indices >= 0, found {int(factors.min())}")
        out["factors"] = factors
    if "attributes" in arrays:
        attributes = np.asarray(arrays["attributes"])
        if attributes.dtype.kind not in "biuf" or attributes.ndim != 2 or attributes.shape[0] != n or attributes.shape[1] < 1:
            raise CodesFileError(
                f"{source}: key 'attributes' must be a binary (N x A) array with N = {n} rows like 'codes', "
                f"got dtype {attributes.dtype}, shape {attributes.shape}"
            )
        values = np.unique(attributes)
        if not np.isin(values, (0, 1)).all():
            raise CodesFileError(
                f"{source}: key 'attributes' must hold only 0 and 1, found {values[~np.isin(values, (0, 1))][:5].tolist()}"
                " (CelebA's list_attr_celeba.txt uses -1/1: store (attributes > 0))"
            )
        out["attributes"] = attributes.astype(np.int64)
    if "labels" in arrays:
        out["labels"] = _int_array(arrays["labels"], "labels", source, ndim=1, n=n, what="class labels (N,)")
    for names_key, data_key in (("factor_names", "factors"), ("attribute_names", "attributes")):
        if names_key in arrays:
            names = np.asarray(arrays[names_key])
            if data_key not in out:
                raise CodesFileError(f"{source}: key {names_key!r} given without {data_key!r}")
            width = out[data_key].shape[1]
            if names.dtype.kind not in "US" or names.shape != (width,):
                raise CodesFileError(
                    f"{source}: key {names_key!r} must be {width} strings (one per column of {data_key!r}), "
                    f"got dtype {names.dtype}, shape {names.shape}"
                )
            out[names_key] = [str(s) for s in names]
    return out


def _int_array(value: Any, key: str, source: str, *, ndim: int, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        hint = " (map values to classes with np.unique(column, return_inverse=True))" if arr.dtype.kind == "f" else ""
        raise CodesFileError(f"{source}: key {key!r} must be integer {what}, got dtype {arr.dtype}{hint}")
    if arr.ndim != ndim or arr.shape[0] != n or (ndim == 2 and arr.shape[1] < 1):
        raise CodesFileError(f"{source}: key {key!r} must be {what} with N = {n} rows like 'codes', got shape {arr.shape}")
    return arr.astype(np.int64)
