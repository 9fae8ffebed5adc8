"""Faults and bad input (issue 23): nothing lost, nothing stalls, nothing accepted that cannot work.

Each test sets up one fault on a tiny grid (one autoencoder, one or two seeds, DCI and
FactorVAE on ``tiny-bars``) and checks the run repairs it in the same run, says so in one
line, or refuses the input before any work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import tests.plugin_stages  # noqa: F401  (tiny-bars)
from bench.cli import main
from bench.config import load_config
from bench.runner import run_profile
from bench.stages import plan

REPO = Path(__file__).resolve().parents[1]

GRID = """
[profiles.t]
methods = ["ae"]
datasets = ["tiny-bars"]
seeds = {seeds}
preset = "tiny"
metrics = ["factorvae", "dci"]
device = "cpu"
results = "out"
[profiles.t.overrides."*"]
steps = 4
batch_size = 8
log_every = 2
{extra}
[profiles.t.metric_params.factorvae]
num_variance_estimate = 64
num_train = 20
num_eval = 10
batch_size = 8
[profiles.t.metric_params.dci]
num_train = 60
num_test = 30
"""


def grid(tmp_path: Path, seeds=(0,), extra: str = ""):
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(GRID.format(seeds=json.dumps(list(seeds)), extra=extra)))
    config = load_config(path)
    profile = config.profile("t")
    return profile, config.results_dir(profile), path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-seed grid, run once for the module; each test gets its own copy (:func:`copy_of`)."""
    root = tmp_path_factory.mktemp("finished")
    profile, out, config = grid(root)
    run_profile(profile, out, progress=False, report=False)
    return root


def copy_of(finished: Path, tmp_path: Path):
    import shutil

    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    return grid(tmp_path)


def seal(record: dict) -> dict:
    from bench.records import seal as seal_record  # a done record carries its own sha256 now

    return seal_record(record)


def status_text(config: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--profile", "t"]) == 0
    return " ".join(capsys.readouterr().out.split())


# -- 1. a redone stage redoes everything made from it, in the same run ---------------------------------
def test_a_model_redone_for_a_corrupt_checkpoint_redoes_all_its_evaluations_in_the_same_run(tmp_path, capsys):
    profile, out, config = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    before = pd.read_csv(out / "results.csv")
    model = plan(profile).models[0]
    folder = out / "stages" / "model" / model.id
    checkpoint = folder / "model.pt"
    broken = bytearray(checkpoint.read_bytes())
    broken[len(broken) // 2] ^= 0xFF  # same size: only the sha256 at load catches it
    checkpoint.write_bytes(bytes(broken))
    lost = plan(profile).of("evaluation")[-1]  # the other one is found done (and remembered) first
    (out / "stages" / "evaluation" / lost.id / "done.json").unlink()
    summary = run_profile(profile, out, progress=False, report=False)
    assert summary.failed == [] and summary.fitted == 1 and summary.ran == 3  # the model and both evaluations
    after = pd.read_csv(out / "results.csv")
    assert len(after) == len(before) and (after["status"] == "ok").all()
    assert sorted(after["metric"]) == sorted(before["metric"])
    assert "evaluation 2 done 2 running 0 failed 0 pending 0" in status_text(config, capsys)


def test_bench_status_does_not_count_a_stage_whose_input_was_redone_as_done(tmp_path, capsys):
    profile, out, config = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    assert "evaluation 2 done 2 running 0 failed 0 pending 0" in status_text(config, capsys)
    model = plan(profile).models[0]
    done = out / "stages" / "model" / model.id / "done.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps(seal({**record, "token": "0" * 32})))  # the model as another run redid it
    assert "evaluation 2 done 0 running 0 failed 0 pending 2" in status_text(config, capsys)
    assert "model 1 done 1" in status_text(config, capsys)


# -- 2. corruption is caught when read, and by `bench verify` ------------------------------------------
def test_a_same_size_edit_of_rows_is_caught_when_read_and_the_stage_redone_in_the_same_run(finished, tmp_path, capsys):
    profile, out, _ = copy_of(finished, tmp_path)
    evaluation = plan(profile).of("evaluation")[0]
    rows = out / "stages" / "evaluation" / evaluation.id / "rows.csv"
    rows.write_text(rows.read_text().replace(",ok,", ",XX,"))  # same size
    other = out / "stages" / "evaluation" / plan(profile).of("evaluation")[1].id / "rows.csv"
    other.write_bytes(os.urandom(other.stat().st_size))  # same-size random bytes
    summary = run_profile(profile, out, progress=False, report=True)
    err = capsys.readouterr().err
    assert summary.failed == [] and summary.fitted == 0 and summary.ran == 2
    assert err.count("was corrupt") == 2 and "rows.csv: sha256 checksum differs" in err
    assert (pd.read_csv(out / "results.csv")["status"] == "ok").all()
    assert len(list((out / "quarantine").iterdir())) == 2


def test_unreadable_rows_found_only_when_the_table_is_rebuilt_are_quarantined_not_fatal(finished, tmp_path, capsys):
    profile, out, config = copy_of(finished, tmp_path)
    evaluation = plan(profile).of("evaluation")[0]
    folder = out / "stages" / "evaluation" / evaluation.id
    record = json.loads((folder / "done.json").read_text())
    record["artifacts"].pop("rows.csv")  # written before rows had checksums: only reading finds the damage
    (folder / "done.json").write_text(json.dumps(seal(record)))
    (folder / "rows.csv").write_bytes(b"\xfa\xfb,\n\x00\xff\"\n" * 8)
    assert main(["report", "--results", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{folder / 'rows.csv'}: cannot be read" in err and "moved to" in err and len(err.strip().splitlines()) == 1



def test_a_damaged_figures_file_or_training_log_is_named_by_bench_report_not_a_traceback(finished, tmp_path, capsys):
    profile, out, _ = copy_of(finished, tmp_path)
    folder = out / "stages" / "model" / plan(profile).models[0].id
    figures, log = folder / "figures.npz", folder / "train_log.jsonl"
    figures.write_bytes(os.urandom(figures.stat().st_size))
    log.write_bytes(os.urandom(log.stat().st_size))
    capsys.readouterr()
    assert main(["report", "--results", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{figures} cannot be read" in err and "Traceback" not in err

def test_bench_verify_checks_every_artifact_and_quarantines_the_bad_ones_with_one_line_each(finished, tmp_path, capsys):
    profile, out, config = copy_of(finished, tmp_path)
    model = plan(profile).models[0]
    checkpoint = out / "stages" / "model" / model.id / "model.pt"
    broken = bytearray(checkpoint.read_bytes())
    broken[len(broken) // 3] ^= 0x01
    checkpoint.write_bytes(bytes(broken))
    capsys.readouterr()
    assert main(["verify", "--results", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "model.pt: sha256 checksum differs" in captured.err and model.id in captured.err
    assert "3 stages" in captured.out and "1 corrupt" in captured.out
    assert main(["verify", "--config", str(config), "--profile", "t"]) == 0
    assert "all intact" in capsys.readouterr().out
    summary = run_profile(profile, out, progress=False, report=False)
    assert summary.fitted == 1 and summary.ran == 3 and summary.failed == []


def test_a_corrupt_plan_file_is_named_by_bench_report_and_bench_status(finished, tmp_path, capsys):
    profile, out, config = copy_of(finished, tmp_path)
    path = out / "plan" / "t.json"
    path.write_bytes(b"\xfa" + path.read_bytes()[1:])
    capsys.readouterr()
    assert main(["report", "--results", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: plan file is corrupt" in err and len(err.strip().splitlines()) == 1
    assert main(["status", "--config", str(config), "--profile", "t"]) == 2
    assert f"{path}: plan file is corrupt" in capsys.readouterr().err


# -- 3. no silent waits: dead owners taken over at once, unreadable claims after a grace, waits said ------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_of_a_dead_owner_or_an_unreadable_one_is_taken_over_at_once_with_one_line(finished, tmp_path, capsys):
    import socket
    import time

    profile, out, _ = copy_of(finished, tmp_path)
    lock = out / "results.csv.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": "then"}))
    capsys.readouterr()
    start = time.monotonic()
    assert main(["report", "--results", str(out)]) == 0
    assert time.monotonic() - start < 30 and not lock.exists()
    err = capsys.readouterr().err
    assert f"{lock} taken over: its owner, pid" in err and "is dead" in err and len(err.strip().splitlines()) == 1
    lock.write_text("")  # killed between creating the lock and writing its owner
    os.utime(lock, (time.time() - 60, time.time() - 60))
    assert main(["report", "--results", str(out)]) == 0
    assert "has not been readable for 60 s" in capsys.readouterr().err


def test_an_unreadable_claim_is_taken_over_after_a_short_grace_and_status_says_so(finished, tmp_path, capsys):
    import time

    profile, out, config = copy_of(finished, tmp_path)
    evaluation = plan(profile).of("evaluation")[0]
    folder = out / "stages" / "evaluation" / evaluation.id
    (folder / "done.json").unlink()
    (folder / "claim.json").write_text('{"host": "x", "pi')
    assert "running 1" in status_text(config, capsys) and "a claim not readable yet" in status_text(config, capsys)
    os.utime(folder / "claim.json", (time.time() - 30, time.time() - 30))
    assert "evaluation 2 done 1 running 0 failed 0 pending 1" in status_text(config, capsys)
    start = time.monotonic()
    summary = run_profile(profile, out, progress=False, report=False)
    assert summary.ran == 1 and summary.failed == [] and time.monotonic() - start < 60
    err = capsys.readouterr().err
    assert f"{folder / 'claim.json'} taken over: it has not been readable for 30 s" in err


def test_a_wait_for_a_live_owner_says_what_it_waits_for_and_ends_when_the_owner_dies(finished, tmp_path, capsys, monkeypatch):
    import socket
    import threading

    import bench.claims
    import bench.worker

    monkeypatch.setattr(bench.worker, "WAIT_NOTICE", 0.3)
    monkeypatch.setattr(bench.claims, "WAIT_NOTICE", 0.3)
    profile, out, _ = copy_of(finished, tmp_path)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    threading.Timer(2.0, lambda: (owner.kill(), owner.wait())).start()
    evaluation = plan(profile).of("evaluation")[0]
    folder = out / "stages" / "evaluation" / evaluation.id
    (folder / "done.json").unlink()
    record = {"host": socket.gethostname(), "pid": owner.pid, "token": "t", "started": "now"}
    (folder / "claim.json").write_text(json.dumps(record))
    summary = run_profile(profile, out, progress=False, report=False)
    assert summary.ran == 1 and summary.failed == []
    err = capsys.readouterr().err
    assert f"for 1 stage(s) held by other workers: {evaluation.label}" in err and f"held by pid {owner.pid}" in err
    assert f"claim.json taken over: its owner, pid {owner.pid} on this host, is dead" in err
    # a results lock: the same
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    threading.Timer(1.0, lambda: (owner.kill(), owner.wait())).start()
    lock = out / "results.csv.lock"
    lock.write_text(json.dumps({**record, "pid": owner.pid}))
    with bench.claims.FileLock(lock):
        pass
    err = capsys.readouterr().err
    assert f"waiting for the lock {lock} (held by pid {owner.pid}" in err and f"{lock} taken over" in err


# -- 4. --jobs: the exit status says whether stages failed; workers end with their parent --------------------
def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, BENCH_PLUGINS="tests.plugin_stages", PYTHONPATH=str(REPO), **extra)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _wait_for_claim(folder: Path, log: Path, seconds: float = 120) -> int:
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        record = (folder / "claim.json").is_file() and log.is_file() and log.read_text().strip()
        if record:
            try:
                return int(json.loads((folder / "claim.json").read_text())["pid"])
            except (ValueError, KeyError):
                pass
        time.sleep(0.2)
    raise AssertionError(f"the model was not being trained: {sorted(p.name for p in folder.parent.parent.parent.rglob('*'))}")


def test_jobs_2_exits_0_when_a_killed_workers_stage_is_finished_by_the_other(tmp_path):
    import signal

    profile, out, config = grid(tmp_path)
    model = plan(profile).models[0]
    log, once = tmp_path / "fits.log", tmp_path / "slow-once"
    env = _env(BENCH_TEST_FIT_LOG=str(log), BENCH_TEST_SLOW_FIT="AE", BENCH_TEST_SLOW_SECONDS="60",
               BENCH_TEST_SLOW_ONCE=str(once))
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--config", str(config), "--profile", "t",
                             "--no-progress", "--jobs", "2", "--threads", "1"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = _wait_for_claim(out / "stages" / "model" / model.id, log)
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    assert "exited with status -9 before reporting; the other workers finished every stage" in stderr
    assert "Traceback" not in stderr and "0 failed" in stdout
    rows = pd.read_csv(out / "results.csv")
    assert (rows["status"] == "ok").all() and (rows["metric"] == "factorvae").sum() == 1


def test_jobs_workers_end_when_their_parent_is_killed(tmp_path):
    import signal
    import time

    from bench.claims import _pid_alive

    profile, out, config = grid(tmp_path)
    model = plan(profile).models[0]
    log = tmp_path / "fits.log"
    env = _env(BENCH_TEST_FIT_LOG=str(log), BENCH_TEST_SLOW_FIT="AE", BENCH_TEST_SLOW_SECONDS="60")
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--config", str(config), "--profile", "t",
                             "--no-progress", "--jobs", "2", "--threads", "1"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr.txt", "w"))
    worker = _wait_for_claim(out / "stages" / "model" / model.id, log)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while _pid_alive(worker) and time.time() < deadline:
        time.sleep(0.2)
    assert not _pid_alive(worker), "a worker outlived its parent"


# -- 5. a full disk: one line, no temporary file, the next run finishes ---------------------------------
def _no_space(*args, **kwargs):
    import errno

    target = args[0] if args else kwargs.get("file")
    Path(target).write_bytes(b"half")  # what a write cut short leaves
    raise OSError(errno.ENOSPC, "No space left on device", str(target))


def test_a_full_disk_while_saving_figures_ends_the_run_with_one_line_and_no_temporary_file(tmp_path, capsys, monkeypatch):
    import numpy as np

    profile, out, config = grid(tmp_path)
    monkeypatch.setattr(np, "savez_compressed", _no_space)
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--profile", "t", "--no-progress"]) == 2
    err = capsys.readouterr().err
    model = plan(profile).models[0]
    folder = out / "stages" / "model" / model.id
    assert err.strip() == err.strip().splitlines()[0] and "Traceback" not in err
    assert f"disk full: cannot write {folder / 'figures.npz'} (about" in err and "free in" in err
    assert not [p for p in out.rglob("*") if ".tmp" in p.name] and not (folder / "error.txt").exists()
    assert not (folder / "done.json").exists() and not (folder / "claim.json").exists()
    monkeypatch.undo()
    assert main(["run", "--config", str(config), "--profile", "t", "--no-progress"]) == 0
    assert (pd.read_csv(out / "results.csv")["status"] == "ok").all()


def test_a_full_disk_while_rebuilding_results_leaves_no_temporary_file(finished, tmp_path, capsys, monkeypatch):
    import bench.atomic

    profile, out, config = copy_of(finished, tmp_path)
    (out / "results.csv").unlink()
    monkeypatch.setattr(bench.atomic, "_write_file", _no_space)
    capsys.readouterr()
    assert main(["report", "--results", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"disk full: cannot write {out / 'results.csv'}" in err
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".lock")]
    monkeypatch.undo()
    assert main(["report", "--results", str(out)]) == 0 and (out / "results.csv").is_file()


# -- 6. bad input refused before any work --------------------------------------------------------------
@pytest.mark.parametrize("extra, expected", [
    ("adam_eps = inf", "adam_eps' = inf is out of range; expected > 0 (a finite number"),
    ("lr = inf", "'lr' = inf is out of range"),
    ("steps = 9223372036854775807", "'steps' = 9223372036854775807 is out of range; expected >= 1 (a finite number; an integer below 2**31)"),
    ("latent_dim = 1000000000000", "'latent_dim' = 1000000000000 is out of range"),
    ("channels = []", "'channels' = [] is empty; expected a non-empty list like the default"),
    ("channels = [16, 1.5]", "(element 1.5) must be int"),
])
def test_values_no_machine_can_train_are_refused_when_the_config_is_read(tmp_path, extra, expected):
    from bench.config import ConfigError

    grid(tmp_path)  # the plain grid reads fine
    path = tmp_path / "bench.toml"
    text = path.read_text()
    text = text.replace("steps = 4\n", "") if extra.startswith("steps") else text
    path.write_text(text.replace("log_every = 2\n", f"log_every = 2\n{extra}\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value) and str(tmp_path / "bench.toml") in str(info.value)


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace("seeds = [0]", "seeds = [4294967296]"), "seeds must be a non-empty list of integers in [0, 2**32)"),
    (lambda t: t.replace("num_test = 30", "num_test = 30\nn_jobs = 0"), "metric_params.dci.n_jobs: metric 'dci': parameter 'n_jobs' = 0"),
    (lambda t: t.replace('device = "cpu"', 'device = "tpu"'), "profiles.t.device = 'tpu'"),
])
def test_seeds_n_jobs_and_devices_that_cannot_work_are_refused_when_the_config_is_read(tmp_path, edit, expected):
    from bench.config import ConfigError

    grid(tmp_path)
    path = tmp_path / "bench.toml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x"])
def test_a_device_string_is_checked_before_any_work(tmp_path, capsys, device):
    import torch

    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    profile, out, config = grid(tmp_path)
    assert main(["run", "--config", str(config), "--profile", "t", "--device", device, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--device asks for device {device!r}" in err and len(err.strip().splitlines()) == 1
    assert not (out / "stages").exists()


class MissingFiles:
    """A dataset whose files are not there (registered by the test below)."""

    version = "1"

    def __init__(self) -> None:
        from bench.data.files import DatasetFilesMissing

        raise DatasetFilesMissing("missing-files: /nowhere/data.npz is missing; download it with `bench data download`")


def test_missing_dataset_files_are_found_once_before_any_training(tmp_path, capsys, monkeypatch):
    from bench.registry import DATASETS

    if "missing-files" not in DATASETS:
        DATASETS.register("missing-files", "tests.test_faults:MissingFiles", "a dataset without its files (tests only)")
    profile, out, config = grid(tmp_path)
    config.write_text(config.read_text().replace('datasets = ["tiny-bars"]', 'datasets = ["tiny-bars", "missing-files"]'))
    assert main(["run", "--config", str(config), "--profile", "t", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'missing-files' cannot be read: missing-files: /nowhere/data.npz is missing" in err
    assert len(err.strip().splitlines()) == 1 and not (out / "stages").exists()


def test_a_damaged_dataset_file_stops_the_grid_before_any_training_and_leaves_no_plan(tmp_path, capsys, monkeypatch):
    """A garbage 3dshapes.h5 (a download cut off, a wrong file) is read once before the grid starts: one line
    naming the file, nothing trained, no stage folders and no plan file of a run that never started."""
    import bench.data.root as root

    data = tmp_path / "data"
    (data / "3dshapes").mkdir(parents=True)
    (data / "3dshapes" / "3dshapes.h5").write_bytes(b"this is not an HDF5 file\n" * 1000)
    monkeypatch.setattr(root, "_explicit", data)
    monkeypatch.setenv("BENCH_TEST_FIT_LOG", str(tmp_path / "fits.log"))
    profile, out, config = grid(tmp_path)
    config.write_text(config.read_text().replace('datasets = ["tiny-bars"]', 'datasets = ["tiny-bars", "shapes3d"]'))
    assert main(["run", "--config", str(config), "--profile", "t", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'shapes3d' cannot be read" in err and "3dshapes.h5" in err and "nothing was run" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fits.log").exists()  # no model of the grid trained, tiny-bars' included
    assert not (out / "stages").exists() and not (out / "plan").exists()


# -- 7. `bench score`: every bad file or option is one line naming it ---------------------------------------
@pytest.fixture
def codes_file(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    factors = rng.integers(0, 3, size=(60, 2))
    path = tmp_path / "codes.npz"
    np.savez(path, codes=rng.normal(size=(60, 3)).astype(np.float32), factors=factors)
    return path


def _score(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["score", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_bench_score_names_a_damaged_truncated_or_oversized_file_in_one_line(codes_file, tmp_path, capsys):
    import io
    import zipfile

    import numpy as np

    data = bytearray(codes_file.read_bytes())
    with zipfile.ZipFile(codes_file) as z:
        info = z.getinfo("codes.npy")
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 200] ^= 0xFF  # bad CRC
    damaged = tmp_path / "crc.npz"
    damaged.write_bytes(bytes(data))
    rc, _, err = _score(capsys, damaged)
    assert rc == 2 and f"{damaged}: key 'codes' cannot be read: the file is damaged" in err and "CRC" in err
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40, 1)})
        z.writestr("codes.npy", header.getvalue() + b"\0" * 64)
    huge = tmp_path / "huge.npz"
    huge.write_bytes(buf.getvalue())
    rc, _, err = _score(capsys, huge)
    assert rc == 2 and f"{huge}: key 'codes' claims shape (1099511627776, 1)" in err and "damaged or truncated" in err
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(codes_file.read_bytes()[: codes_file.stat().st_size * 2 // 3])
    rc, _, err = _score(capsys, truncated)
    assert rc == 2 and str(truncated) in err and "pickle" not in err
    rc, _, err = _score(capsys, tmp_path)
    assert rc == 2 and f"{tmp_path}: is a directory" in err
    for e in (err,):
        assert len(e.strip().splitlines()) == 1 and "Traceback" not in e


def test_bench_score_checks_seed_and_n_jobs_before_reading_the_file(tmp_path, capsys):
    missing = tmp_path / "not-read.npz"
    rc, _, err = _score(capsys, missing, "--seed", 2**32)
    assert rc == 2 and "--seed 4294967296: out of range" in err
    rc, _, err = _score(capsys, missing, "--param", "dci.n_jobs=0")
    assert rc == 2 and "parameter 'n_jobs' = 0" in err and "non-zero integer" in err and "unknown" not in err


def test_bench_score_gives_mig_its_reason_in_its_row_and_the_other_metrics_their_values(codes_file, tmp_path, capsys):
    import numpy as np

    with np.load(codes_file) as f:
        codes, factors = f["codes"], f["factors"].copy()
    factors[:, 1] = 0  # one constant factor column
    path = tmp_path / "constant.npz"
    np.savez(path, codes=codes, factors=factors)
    rc, out, _ = _score(capsys, path, "--metrics", "mig,irs")
    assert rc == 0
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["mig"].startswith("nan  (not computed: MIG: factor(s) [1] take a single value")
    assert np.isfinite(float(lines["irs"]))
