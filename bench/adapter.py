"""The method adapter contract, with scikit-learn manners.

Every method in ``methods/`` subclasses :class:`Adapter`:

* the constructor only stores keyword hyperparameters (validated against the class's
  ``defaults``: unknown names and wrong types fail at construction, before any training);
  :meth:`get_params` returns them and is written into every result row;
* ``fit(data, *, seed, device) -> self`` learns; learned state lives in attributes;
* ``encode(x) -> (N, D)`` codes (mean codes for stochastic encoders, sampled codes with
  ``stochastic=True`` where the capability is declared); an adapter declaring
  ``"stochastic_encode"`` also has ``encode_posterior(x) -> (mean, logvar)``, the diagonal
  Gaussian q(z|x) (UDR's per-latent KL filter reads it);
* ``sample(n) -> images`` in [0, 1] for a generative method, which declares ``"sample"``;
  a method that cannot generate (SimCLR) does not declare it and inherits a ``sample`` that
  raises :class:`NotGenerativeError` naming the method; the runner then records FID as
  ``skipped`` with the reason and draws no samples panel;
* optional capabilities are *declared* in ``capabilities`` and never guessed:
  ``"sample"``, ``"decode"``, ``"reconstruct"``, ``"stochastic_encode"``, ``"latent_units"``
  (multi-dimensional latent units; then ``latent_unit_dim`` > 1), ``"time_conditioned"``
  (``encode(x, t=...)`` gives a code per diffusion time t ∈ [0, 1]);
* optionally ``extra_figures(originals) -> {name: (rows, cols, C, H, W) array}``: method-specific
  panels the runner stores with the figures and the report/site draw (EncDiff's attention maps);
* ``save(path)`` / ``load(path)`` round-trip a fitted adapter; checkpoints are loaded
  with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import abc
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from bench.atomic import writing
from bench.params import Range, check_range, check_type
from bench.registry import did_you_mean

CAPABILITIES = frozenset({"sample", "decode", "reconstruct", "stochastic_encode", "latent_units", "time_conditioned"})


SHARES = ("dataset", "seed")


@dataclass(frozen=True)
class Component:
    """A model of another registered method that an adapter is trained on (a pre-trained DPM, ...).

    The runner trains it once as a stage of its own, saves it, and hands it loaded to the
    dependant's ``fit(..., components={name: adapter})`` and ``load(path, components=...)``.

    * ``method``: the registered method name of the component;
    * ``params``: its hyperparameters over its preset — a dict, or a function of the
      dependant's hyperparameters returning one (e.g. the DPM's width from the dependant's);
    * ``preset``: the component's preset: a name, or a dict from the dependant's preset to the
      component's (DisDiff's ``paper-pixel`` trains the ``ddpm`` preset ``paper``); default and
      for a preset the dict does not name: the dependant's preset;
    * ``share``: ``"dataset"`` — one component per dataset, trained with seed 0, shared by
      every seed of every dependant that asks for the same one; ``"seed"`` — one per seed;
    * ``when``: a function of the dependant's hyperparameters saying whether it needs the
      component at all (pixel-space EncDiff needs no first stage); default: always.
    """

    method: str
    params: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] = field(default_factory=dict)
    preset: str | dict[str, str] | None = None
    share: str = "dataset"
    when: Callable[[dict[str, Any]], bool] | None = None

    def needed(self, dependant_params: dict[str, Any]) -> bool:
        return True if self.when is None else bool(self.when(dependant_params))

    def __post_init__(self) -> None:
        if self.share not in SHARES:
            raise ValueError(f"Component({self.method!r}): share must be one of {SHARES}, got {self.share!r}")

    def preset_for(self, dependant_preset: str) -> str:
        """The component's preset when the dependant is trained with ``dependant_preset``."""
        if isinstance(self.preset, dict):
            return self.preset.get(dependant_preset, dependant_preset)
        return self.preset or dependant_preset

    def params_for(self, dependant_params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.params(dependant_params) if callable(self.params) else self.params)


class NotFittedError(RuntimeError):
    """Raised when an adapter is used before :meth:`Adapter.fit` (or :meth:`Adapter.load`)."""


class NotGenerativeError(TypeError):
    """``sample`` of a method that does not declare the ``"sample"`` capability."""


class DivergedError(RuntimeError):
    """Raised by a training loop whose loss became NaN or infinite."""


class Adapter(abc.ABC):
    """Base class of every method adapter; see the module docstring for the contract."""

    #: hyperparameter name -> default value; the only keywords the constructor accepts
    defaults: ClassVar[dict[str, Any]] = {}
    #: named hyperparameter sets, e.g. ``{"tiny": {...}, "paper": {...}}``
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: bump when a change alters results, so old rows are told apart
    version: ClassVar[str] = "1"
    #: hyperparameter name -> valid range (see :mod:`bench.params`), checked with the types
    ranges: ClassVar[dict[str, Range]] = {}
    #: components trained by the runner and handed to ``fit`` (see :class:`Component`)
    components: ClassVar[dict[str, "Component"]] = {}
    #: hyperparameters added after models were stored, each with the value (its default) that keeps
    #: the earlier behaviour: a model's identity leaves such a key out while it holds that value,
    #: so adding an option does not retrain the models stored before it (see :meth:`identity_params`)
    added_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        self._params = self.check_params(params)
        self._fitted = False

    # -- hyperparameters ---------------------------------------------------------------
    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Merge ``params`` over ``defaults``; reject unknown names and wrong types."""
        unknown = [k for k in params if k not in cls.defaults]
        if unknown:
            k = unknown[0]
            raise ValueError(
                f"{cls.__name__}: unknown hyperparameter {k!r}{did_you_mean(k, list(cls.defaults))}; "
                f"accepted: {', '.join(sorted(cls.defaults))}"
            )
        merged = copy.deepcopy(cls.defaults)
        for key, value in params.items():
            merged[key] = _coerce(cls.__name__, key, value, cls.defaults[key])
            default = cls.defaults[key]
            if merged[key] == [] and isinstance(default, (list, tuple)) and default and \
                    not any(p.get(key) == [] for p in cls.presets.values()):  # no preset leaves it empty: it cannot be
                raise ValueError(f"{cls.__name__}: hyperparameter {key!r} = [] is empty; expected a non-empty list "
                                 f"like the default {list(default)!r}")
        for key, spec in cls.ranges.items():
            check_range(cls.__name__, f"hyperparameter {key!r}", merged.get(key), spec)
        return merged

    @classmethod
    def identity_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` without the :attr:`added_params` that hold their earlier-behaviour value.

        What a model stage hashes (:attr:`bench.stages.ModelStage.omitted` names the rest);
        constructing the adapter from it restores the defaults, so it is the same model.
        """
        return {k: v for k, v in params.items()
                if not (k in cls.added_params and v == cls.added_params[k] == cls.defaults.get(k))}

    @classmethod
    def from_preset(cls, preset: str = "tiny", **overrides: Any) -> "Adapter":
        """Construct with a named preset, then ``overrides`` on top."""
        if preset not in cls.presets:
            raise ValueError(
                f"{cls.__name__}: unknown preset {preset!r}{did_you_mean(preset, list(cls.presets))}; "
                f"available: {', '.join(cls.presets)}"
            )
        return cls(**{**cls.presets[preset], **overrides})

    def get_params(self) -> dict[str, Any]:
        return copy.deepcopy(self._params)

    def __getattr__(self, name: str) -> Any:
        # hyperparameters read as attributes (self.lr) without copying them onto the instance
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    # -- the protocol ------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> "Adapter":
        """Train on ``data`` (a :class:`bench.data.base.ImageDataset`); return ``self``."""

    @abc.abstractmethod
    def encode(self, x: np.ndarray, *, stochastic: bool = False, seed: int | None = None) -> np.ndarray:
        """Codes (N, D) float32 for images ``x`` (N, C, H, W) in [0, 1]."""

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` generated images (n, C, H, W) float32 in [0, 1] (methods declaring ``"sample"``)."""
        raise NotGenerativeError(f"{type(self).__name__} cannot generate images: it does not declare the 'sample' "
                                 "capability (it learns a representation only)")

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images for codes ``z`` (capability ``"decode"``)."""
        raise self._missing("decode")

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Reconstructions of ``x`` (capability ``"reconstruct"``)."""
        raise self._missing("reconstruct")

    @property
    def code_dim(self) -> int:
        """Number of code dimensions D returned by :meth:`encode`."""
        return int(self._params["latent_dim"])

    # -- training curve ----------------------------------------------------------------
    def set_logger(self, logger: Callable[[str, int, dict[str, float]], None] | None) -> None:
        """Receive the training curve while ``fit`` runs (the runner writes it into the stage folder)."""
        self.__dict__["_logger"] = logger

    def log_scalars(self, step: int, phase: str = "train", **values: float) -> None:
        """Called by training loops every ``log_every`` steps with the loss, its terms and the learning rate."""
        logger = self.__dict__.get("_logger")
        if logger is not None:
            logger(phase, int(step), {k: float(v) for k, v in values.items()})

    def _missing(self, capability: str) -> Exception:
        return TypeError(f"{type(self).__name__} does not declare the {capability!r} capability")

    def check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(data, seed=...) or load(path) before using it"
            )

    # -- persistence -------------------------------------------------------------------
    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Learned state as tensors / plain Python values (loadable with weights_only)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        """Rebuild the learned state written by :meth:`state_dict`."""

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint atomically (temp file + rename)."""
        self.check_fitted()
        path = Path(path)
        payload = {
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "version": self.version,
            "params": self.get_params(),
            "input_shape": list(self.input_shape),
            "state": self.state_dict(),
        }
        tmp = path.with_name(path.name + ".tmp")
        with writing(path, tmp, _tensor_bytes(payload["state"])):
            torch.save(payload, tmp)
            os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, components: dict[str, "Adapter"] | None = None) -> "Adapter":
        """Load a checkpoint written by :meth:`save` (``weights_only=True``).

        ``components``: the loaded components the adapter declares (as handed to ``fit``),
        available as ``self.components_`` when :meth:`load_state_dict` runs.
        """
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        expected = f"{cls.__module__}:{cls.__qualname__}"
        if payload.get("class") != expected:
            raise ValueError(f"{path}: checkpoint holds {payload.get('class')!r}, expected {expected!r}")
        adapter = cls(**payload["params"])
        adapter.components_ = dict(components or {})
        adapter.load_state_dict(payload["state"], tuple(payload["input_shape"]))
        adapter.input_shape = tuple(payload["input_shape"])
        adapter._fitted = True
        return adapter


def _coerce(owner: str, key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default`` (ints are accepted for floats)."""
    return check_type(owner, f"hyperparameter {key!r}", value, default)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (for module initialisation) and return a CPU generator."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_images(x: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """Validate images (N, C, H, W) float in [0, 1] and return a contiguous float32 array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, input_shape))}), got {x.shape}")
    return x


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state: about what its checkpoint needs on disk."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0
