"""The stage graph of a grid: components, models, evaluations and seed groups, each with its own id.

A stage's id is a hash of exactly what determines its output (DESIGN.md, "Identities"):

* a **model** (also a *component* when another adapter trains on it): method, method
  version, dataset, dataset version, seed, the full hyperparameters, and the ids of the
  components it was trained on (an option added to a method later is left out while it
  holds the value that keeps the earlier behaviour, ``Adapter.added_params``);
* an **evaluation**: the model id, the metric, its parameters, the representation scored
  and the metric version;
* a **group** (a ``scope="seeds"`` metric such as UDR): the metric, its parameters and
  version, and the ids of the setting's models.

The device, the executor, the profile and the results folder never enter an id. So adding
a metric to a finished grid adds evaluation stages only; changing a hyperparameter gives
new model ids (and new evaluations of them); a component asked for by many dependants —
every seed of PDAE and DisDiff on one dataset, say — is one stage, trained once.

:func:`plan` turns a validated :class:`~bench.config.Profile` into a :class:`Plan`; it
imports the method classes (for their versions and component declarations) but trains
nothing. The order of :attr:`Plan.stages` is the order workers take ready stages in: each
model's components, the model, its evaluations, then the next model, seed groups last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from bench import registry
from bench.config import ConfigError, Profile
from bench.released.checkpoint import CheckpointError, file_sha256
from bench.released.convert import RELEASES


def digest(identity: dict[str, Any], n: int = 16) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class ModelStage:
    """Train one method on one dataset with one seed and full hyperparameters."""

    method: str
    method_version: str
    dataset: str
    dataset_version: str
    seed: int
    preset: str
    params: dict[str, Any]
    components: dict[str, str] = field(default_factory=dict)  # component name -> its model stage id
    role: str = "model"  # "model": a grid point; "component": trained for others only
    n_seeds_planned: int = 1
    #: hyperparameters left out of the identity: options added later, at the value that keeps the
    #: earlier behaviour (``Adapter.added_params``), so models stored before them stay valid
    omitted: tuple[str, ...] = ()
    #: sha256 of the released checkpoint the model is converted from (``pretrained``), "" when trained
    weights: str = ""
    kind = "model"

    @property
    def identity_params(self) -> dict[str, Any]:
        """The hyperparameters hashed; a converted model's file enters by its sha256, never by its path."""
        return {k: v for k, v in self.params.items() if k not in self.omitted and not (self.weights and k == "pretrained")}

    def identity(self) -> dict[str, Any]:
        identity = {
            "method": self.method, "method_version": self.method_version, "dataset": self.dataset,
            "dataset_version": self.dataset_version, "seed": self.seed, "params": self.identity_params,
            "components": self.components,
        }
        if self.weights:
            identity["weights_sha256"] = self.weights
        return identity

    @cached_property
    def id(self) -> str:
        return digest(self.identity())

    @cached_property
    def config_id(self) -> str:
        """The setting without its seed: models with one config id are seeds of one setting."""
        ident = self.identity()
        ident.pop("seed")
        ident.pop("components")  # per-seed components differ by seed only
        return digest(ident, 8)

    @property
    def deps(self) -> list[tuple[str, str]]:
        return [("model", i) for i in self.components.values()]

    @property
    def label(self) -> str:
        return f"{self.method}/{self.dataset}/seed{self.seed}"

    def describe(self) -> dict[str, Any]:
        return {"identity": self.identity(), "role": self.role, "label": self.label, "preset": self.preset}


@dataclass(frozen=True)
class EvalStage:
    """Score one model with one metric and its parameters."""

    model: ModelStage
    metric: str
    params: dict[str, Any]
    metric_version: int
    kind = "evaluation"

    @property
    def representation(self) -> str:
        return self.params.get("representation", "mean")

    def identity(self) -> dict[str, Any]:
        params = {k: v for k, v in self.params.items() if k != "representation"}
        return {"model": self.model.id, "metric": self.metric, "params": params,
                "representation": self.representation, "metric_version": self.metric_version}

    @cached_property
    def id(self) -> str:
        return digest(self.identity())

    @property
    def deps(self) -> list[tuple[str, str]]:
        return [("model", self.model.id)]

    @property
    def label(self) -> str:
        return f"{self.metric} of {self.model.label}"

    def describe(self) -> dict[str, Any]:
        return {"identity": self.identity(), "role": "evaluation", "label": self.label}


@dataclass(frozen=True)
class GroupStage:
    """Score the seeds of one setting together (``scope="seeds"`` metrics: UDR)."""

    members: tuple[ModelStage, ...]
    metric: str
    params: dict[str, Any]
    metric_version: int
    kind = "group"

    def identity(self) -> dict[str, Any]:
        return {"metric": self.metric, "params": self.params, "metric_version": self.metric_version,
                "members": sorted(m.id for m in self.members)}

    @cached_property
    def id(self) -> str:
        return digest(self.identity())

    @property
    def deps(self) -> list[tuple[str, str]]:
        return [("model", m.id) for m in self.members]

    @property
    def label(self) -> str:
        m = self.members[0]
        return f"{self.metric} of {m.method}/{m.dataset} ({m.config_id}, {len(self.members)} seeds)"

    def describe(self) -> dict[str, Any]:
        return {"identity": self.identity(), "role": "group", "label": self.label}


Stage = ModelStage | EvalStage | GroupStage


@dataclass
class Plan:
    profile: str
    stages: list[Stage]

    def of(self, kind: str, role: str | None = None) -> list[Stage]:
        return [s for s in self.stages if s.kind == kind and (role is None or getattr(s, "role", role) == role)]

    @property
    def models(self) -> list[ModelStage]:
        return self.of("model", "model")  # type: ignore[return-value]

    @property
    def components(self) -> list[ModelStage]:
        return self.of("model", "component")  # type: ignore[return-value]

    def role_counts(self) -> dict[str, int]:
        """How many stages of each role (component, model, evaluation, group) the plan holds."""
        counts: dict[str, int] = {}
        for s in self.stages:
            role = getattr(s, "role", s.kind)
            counts[role] = counts.get(role, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """What ``bench status`` needs, without importing anything heavy."""
        return {"profile": self.profile, "stages": [
            {"kind": s.kind, "id": s.id, "role": getattr(s, "role", s.kind), "label": s.label,
             "deps": [dep_id for _, dep_id in s.deps]} for s in self.stages]}


def metric_version(name: str) -> int:
    return int(registry.metrics().get(name).meta.get("version", 1))


def is_seed_metric(name: str) -> bool:
    return registry.metrics().get(name).meta.get("scope") == "seeds"


def dataset_version(name: str) -> str:
    """The dataset's version, read from the instance (some datasets derive it from their options)."""
    entry = registry.datasets().get(name)
    try:
        return str(registry.datasets().create(name).version)
    except Exception:  # a constructor that needs its files: the class attribute is the version then
        return str(getattr(entry.load(), "version", "1"))


def pretrained_sha256(method: str, params: dict[str, Any], where: str) -> str:
    """The sha256 of the released checkpoint ``params["pretrained"]`` names ("" when the model is trained)."""
    path = params.get("pretrained") or ""
    if not path:
        return ""
    if method not in RELEASES:
        raise ConfigError(f"{where}: {method} pretrained = {path!r}: {method!r} has no converter for released "
                          f"checkpoints (these have: {', '.join(sorted(RELEASES))})")
    try:
        return file_sha256(Path(path).expanduser())
    except (CheckpointError, OSError) as exc:
        raise ConfigError(f"{where}: {method} pretrained = {path!r}: {exc}") from None


def plan(profile: Profile, *, shard: tuple[int, int] = (0, 1)) -> Plan:
    """The stages of ``profile``'s grid (``shard=(i, n)``: every n-th model from i, with what it needs)."""
    cells = profile.cells()
    index, count = shard
    versions: dict[str, str] = {}
    stages: dict[str, Stage] = {}  # id -> stage, in the order workers should take them
    groups: dict[tuple[str, str], tuple[dict[str, Any], list[ModelStage]]] = {}

    def dversion(name: str) -> str:
        if name not in versions:
            versions[name] = dataset_version(name)
        return versions[name]

    def model_stage(method: str, dataset: str, seed: int, preset: str, params: dict[str, Any], role: str,
                    n_seeds: int, where: str) -> ModelStage:
        cls = registry.methods().load(method)
        comps: dict[str, str] = {}
        for name, spec in cls.components.items():
            if not spec.needed(params):
                continue
            ccls = registry.methods().load(spec.method)
            cpreset = spec.preset_for(preset)
            if cpreset not in ccls.presets:
                raise ConfigError(f"{where}: component {name!r} of {method!r} is method {spec.method!r}, "
                                  f"which has no preset {cpreset!r} (it has {', '.join(ccls.presets)})")
            try:
                cparams = ccls.check_params({**ccls.presets[cpreset], **spec.params_for(params)})
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: component {name!r} of {method!r}: {exc}") from None
            cseed = 0 if spec.share == "dataset" else seed
            comp = model_stage(spec.method, dataset, cseed, cpreset, cparams, "component", 1, where)
            comps[name] = comp.id
        omitted = tuple(sorted(set(params) - set(cls.identity_params(params))))
        weights = pretrained_sha256(method, params, where)
        stage = ModelStage(method, str(cls.version), dataset, dversion(dataset), seed, preset, params, comps, role,
                           n_seeds, omitted, weights)
        existing = stages.get(stage.id)
        if existing is None or (role == "model" and existing.role == "component"):
            stages.pop(stage.id, None)
            stages[stage.id] = stage
        return stages[stage.id]  # type: ignore[return-value]

    for i, cell in enumerate(cells):
        if i % count != index:
            continue
        model = model_stage(cell.method, cell.dataset, cell.seed, cell.preset, cell.params, "model",
                            cell.n_seeds_planned, f"profiles.{profile.name}")
        for name, params in cell.metrics.items():
            if is_seed_metric(name):
                groups.setdefault((model.config_id, name), (params, []))[1].append(model)
                continue
            ev = EvalStage(model, name, params, metric_version(name))
            stages[ev.id] = ev
    for (_, name), (params, members) in groups.items():
        group = GroupStage(tuple(members), name, params, metric_version(name))
        stages[group.id] = group
    return Plan(profile.name, list(stages.values()))
