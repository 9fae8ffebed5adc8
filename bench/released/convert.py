"""Converting an authors' checkpoint into one of our adapters, exactly: every tensor consumed, none invented.

A :class:`Release` describes one method's released files: for each tensor of our adapter's
state it names the authors' key that holds it (:meth:`Release.reference_key`), and for each
authors' key that is not ours it says why (:meth:`Release.not_ours`: a training loss's
network, a non-EMA duplicate of an EMA weight, another stage's network, a schedule buffer).
From that one naming, :func:`conversion` checks a file's layout — an authors' key neither
mapped nor explained, a key of ours that the file lacks, or a shape that differs is a
:class:`~bench.released.checkpoint.CheckpointError` naming the first such key — and
:func:`convert` builds the loaded adapter; :func:`export` writes an adapter back in the
authors' layout (the inverse: export → convert → export is the identity).

Most releases rename only (the LDM family). Where the authors lay a tensor out differently
(PDAE's and DiffAE's attention: 1×1 ``Conv1d`` weights where ours are ``Conv2d``, a multi-head
``qkv`` in another row order) the release says so per key: :meth:`Release.reference_shape` is
the shape the file must hold, :meth:`Release.to_ours` / :meth:`Release.to_reference` the exact
rearrangement (a reshape or a row permutation, never arithmetic) each way.

The adapter is never trained: its state is assembled the way :meth:`bench.adapter.Adapter.load`
loads a saved one, with the components (a first stage, a frozen DPM) converted before it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from bench import registry
from bench.released.checkpoint import CheckpointError, Layout, TensorInfo, read_layout, read_tensors

Slot = tuple[str, str]  # (group of our state, our key)


class Release(abc.ABC):
    """One method's released checkpoints (subclasses name the method, the files and the key naming)."""

    #: the registered method whose adapter the files load into
    method: ClassVar[str]
    #: the files accepted, and where the authors publish them (error messages and the README)
    files: ClassVar[str]

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    @abc.abstractmethod
    def template(self, skeleton) -> dict[str, dict[str, torch.Tensor]]:
        """Our tensors by group (e.g. ``{"unet": unet.state_dict()}``) of an untrained adapter."""

    @abc.abstractmethod
    def reference_key(self, group: str, key: str, layout: Layout) -> str:
        """The authors' key holding our ``group``/``key`` in a file of this ``layout`` (an EMA copy when it has one)."""

    @abc.abstractmethod
    def not_ours(self, key: str, layout: Layout) -> str | None:
        """Why the authors' ``key`` is not one of our tensors (None: it must be)."""

    @abc.abstractmethod
    def state(self, skeleton, groups: dict[str, dict[str, torch.Tensor]], tensors: Layout) -> dict[str, Any]:
        """Our adapter's state (as its ``load_state_dict`` takes it) from the filled groups and the file."""

    def extra_reference(self, adapter) -> dict[str, torch.Tensor]:
        """Authors' entries that are not in our template (buffers, duplicates), written by :func:`export`."""
        return {}

    def groups(self, skeleton, layout: Layout) -> dict[str, dict[str, torch.Tensor]]:
        """The groups a file of ``layout`` fills: :meth:`template`, unless a release's files may hold an optional
        network (DiffAE's latent DDPM), which it adds when ``layout`` has it. :func:`conversion` and :func:`export`
        call this before any :meth:`reference_key` of the same file."""
        return self.template(skeleton)

    def reference_shape(self, group: str, key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the authors' tensor holding our ``group``/``key`` of ``shape`` (default: the same)."""
        return tuple(shape)

    def to_ours(self, group: str, key: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The authors' ``tensor`` laid out as our ``group``/``key`` of ``shape`` (default: as it is)."""
        return tensor

    def to_reference(self, group: str, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """Our ``group``/``key`` laid out as the authors' (the inverse of :meth:`to_ours`; default: as it is)."""
        return tensor


@dataclass
class Conversion:
    """Which authors' key fills which of our slots, and why the others are left."""

    slots: dict[Slot, str]
    left: dict[str, str]
    #: our shape of each slot (what :meth:`Release.to_ours` lays the authors' tensor out as)
    shapes: dict[Slot, tuple[int, ...]] = field(default_factory=dict)


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (TensorInfo, torch.Tensor))


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape)


def conversion(release: Release, skeleton, layout: Layout, path: str | Path) -> Conversion:
    """Map ``layout``'s tensors onto ``skeleton``'s template; the first misfit is a :class:`CheckpointError`."""
    template = release.groups(skeleton, layout)
    slots: dict[Slot, str] = {}
    shapes: dict[Slot, tuple[int, ...]] = {}
    taken: dict[str, Slot] = {}
    for group, state in template.items():
        for key, ours in state.items():
            ref = release.reference_key(group, key, layout)
            expected = release.reference_shape(group, key, tuple(ours.shape))
            if ref not in layout or not _is_tensor(layout[ref]):
                raise CheckpointError(f"{path}: key {ref!r} is missing (it holds {release.method}'s {group}.{key}, "
                                      f"shape {expected}); expected {release.files}")
            if _shape(layout[ref]) != expected:
                raise CheckpointError(f"{path}: key {ref!r} has shape {_shape(layout[ref])}, expected {expected} "
                                      f"for {release.method}'s {group}.{key} with these hyperparameters (is it another "
                                      "configuration of the network? set the method's hyperparameters to the file's)")
            slots[(group, key)] = ref
            shapes[(group, key)] = tuple(ours.shape)
            taken[ref] = (group, key)
    left: dict[str, str] = {}
    for key, value in layout.items():
        if not _is_tensor(value) or key in taken:
            continue
        reason = release.not_ours(key, layout)
        if reason is None:
            raise CheckpointError(f"{path}: key {key!r} is not consumed: no tensor of {release.method} comes from it "
                                  f"(expected {release.files})")
        left[key] = reason
    return Conversion(slots, left, shapes)


def skeleton(method: str, params: dict[str, Any], input_shape: tuple[int, ...], components: Mapping[str, Any]):
    """An untrained adapter with its networks built for ``input_shape`` on ``components`` (their shapes only)."""
    cls = registry.methods().load(method)
    adapter = cls(**params)
    adapter.components_ = dict(components)
    adapter._build(tuple(input_shape))
    adapter.input_shape = tuple(input_shape)
    adapter._fitted = True
    return adapter


def check(method: str, path: str | Path, params: dict[str, Any], untrained) -> Conversion:
    """Check a file against the method's networks (``untrained``: a :func:`skeleton`) before any work: its layout
    only, no tensor is read."""
    return conversion(release_for(method)(params), untrained, read_layout(path), path)


def convert(method: str, path: str | Path, params: dict[str, Any], input_shape: tuple[int, ...],
            components: Mapping[str, Any]):
    """The fitted adapter the file holds (its components already converted and loaded)."""
    release = release_for(method)(params)
    skel = skeleton(method, params, input_shape, components)
    tensors = read_tensors(path)
    plan = conversion(release, skel, tensors, path)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for (group, key), ref in plan.slots.items():
        ours = release.to_ours(group, key, tensors[ref].detach(), plan.shapes[(group, key)])
        groups.setdefault(group, {})[key] = ours.clone().contiguous()
    cls = registry.methods().load(method)
    adapter = cls(**params)
    adapter.components_ = dict(components)
    adapter.load_state_dict(release.state(skel, groups, tensors), tuple(input_shape))
    adapter.input_shape = tuple(input_shape)
    adapter._fitted = True
    return adapter


def export(method: str, adapter, layout: Layout | None = None) -> dict[str, torch.Tensor]:
    """``adapter``'s tensors in the authors' flat layout (the keys :func:`convert` reads from a file of ``layout``;
    default: a bare state dict without EMA copies)."""
    release = release_for(method)(adapter.get_params())
    layout = layout or {}
    out: dict[str, torch.Tensor] = {}
    for group, state in release.groups(adapter, layout).items():
        for key, value in state.items():
            out[release.reference_key(group, key, layout)] = release.to_reference(group, key, value.detach().cpu()).clone()
    out.update(release.extra_reference(adapter))
    return out


#: method -> "module:Release class"; a method listed here accepts the ``pretrained`` hyperparameter
RELEASES: dict[str, str] = {
    "vq-f4": "bench.released.ldm_family:VQF4Release",
    "ldm": "bench.released.ldm_family:LDMRelease",
    "encdiff": "bench.released.ldm_family:EncDiffRelease",
    "disdiff": "bench.released.ldm_family:DisDiffRelease",
    "ddpm": "bench.released.pdae:DPMRelease",
    "pdae": "bench.released.pdae:PDAERelease",
    "diffae": "bench.released.diffae:DiffAERelease",
}


def release_for(method: str) -> type[Release]:
    target = RELEASES.get(method)
    if target is None:
        raise CheckpointError(f"method {method!r} has no converter for released checkpoints; these have: "
                              f"{', '.join(sorted(RELEASES))}")
    module, name = target.split(":")
    return getattr(__import__(module, fromlist=[name]), name)
