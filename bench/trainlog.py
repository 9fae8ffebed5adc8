"""A stage's training curve, written while it trains: ``train_log.jsonl`` in the stage folder.

One JSON object a line — ``phase`` (train, latent, vanilla, ...), ``step``, ``wall_s`` since
the start, ``images_per_s`` since the previous line, then what the adapter logs (``loss``,
its terms, ``lr``). Each line is flushed when written, so ``tail -f`` follows a GPU-day run
and the report can draw a curve of a stage that is still running. With the optional
``tensorboard`` package installed, the same scalars also go to TensorBoard event files
(``<results>/tensorboard/<method>-<dataset>-seed<s>-<id>/``).

With ``echo`` (``bench run`` without a terminal or with ``--no-progress``), a plain line —
the stage, the phase, the step (of ``steps``), the loss, the time — goes to ``echo`` at most
every ``every`` seconds, so a log file shows a long stage moving without progress bars.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

#: the batch size behind each phase's steps, for images/s
_BATCH_KEYS = {"latent": "latent_batch_size"}


class TrainLog:
    def __init__(self, path: Path, params: dict[str, Any], tensorboard_dir: Path | None = None, *,
                 echo: Callable[[str], None] | None = None, every: float = 30.0, label: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.params = path, params
        self._echo, self._every, self._label = echo, every, label
        self._file = open(path, "w", buffering=1)
        self._start = time.perf_counter()
        self._echoed = self._start
        self._last: dict[str, tuple[int, float]] = {}
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package
            except ImportError:
                pass
            else:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def __call__(self, phase: str, step: int, values: dict[str, float]) -> None:
        now = time.perf_counter()
        prev_step, prev_time = self._last.get(phase, (0, self._start))
        batch = self.params.get(_BATCH_KEYS.get(phase, "batch_size"), self.params.get("batch_size"))
        line: dict[str, Any] = {"phase": phase, "step": step, "wall_s": round(now - self._start, 4)}
        if batch and now > prev_time and step > prev_step:
            line["images_per_s"] = round((step - prev_step) * batch / (now - prev_time), 2)
        line.update(values)
        self._last[phase] = (step, now)
        self._file.write(json.dumps(line) + "\n")
        if self._echo is not None and now - self._echoed >= self._every:
            self._echoed = now
            total = self.params.get("steps" if phase == "train" else f"{phase}_steps")
            loss = f", loss {values['loss']:.4g}" if "loss" in values else ""
            self._echo(f"{self._label}: {phase} step {step:,}" + (f"/{total:,}" if isinstance(total, int) else "")
                       + f"{loss} ({now - self._start:.0f} s)")
        if self._tb is not None:
            for key, value in line.items():
                if key not in ("phase", "step"):
                    self._tb.add_scalar(f"{phase}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The lines written so far (a half-written last line of a running stage is skipped)."""
    out = []
    try:
        text = path.read_text(errors="replace")  # damaged bytes spoil their line only
    except (FileNotFoundError, IsADirectoryError):
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
