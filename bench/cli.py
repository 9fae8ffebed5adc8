"""The ``bench`` command line: ``run``, ``status``, ``verify``, ``ls``, ``leaderboard``, ``score``, ``data``.

Heavy modules (torch, the runner) are imported inside the commands that need them, so
``bench ls`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= I < N")
    return index, count


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expects a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark harness for disentangled representation learning.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate a grid from bench.toml (resumes finished cells)")
    run.add_argument("--config", default="bench.toml", help="configuration file (default: ./bench.toml)")
    run.add_argument("--profile", default=None, help="profile name (default: the file's default_profile)")
    run.add_argument("--results", default=None, help="results folder (default: the profile's 'results')")
    run.add_argument("--device", default=None, help="override the profile's device (auto, cpu, cuda, cuda:N)")
    run.add_argument("--shard", type=_shard, default=(0, 1), help="run every N-th model starting at I (I/N)")
    run.add_argument("--jobs", type=_positive, default=1,
                     help="local worker processes (one GPU each where there are GPUs, else a share of the cores)")
    run.add_argument("--threads", type=_positive, default=None,
                     help="PyTorch threads per stage (default: the cores divided among the --jobs workers); "
                          "CPU results depend on it, rows record it")
    run.add_argument("--executor", choices=["inline", "slurm", "local", "debug"], default="inline",
                     help="inline (default; --jobs local workers), slurm (job arrays through submitit, "
                          "[executor.slurm] in bench.toml), local (submitit's local pool) or debug (in-process)")
    run.add_argument("--wait", action="store_true", help="with --executor slurm: follow the jobs until they end")
    run.add_argument("--dry-run", action="store_true", help="validate the config and list the stages, run nothing")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bars: one plain line per finished stage and, while a model trains, its step "
                          "and loss every minute (what bench run prints anyway without a terminal)")
    for key, what in (("methods", "method names"), ("datasets", "dataset names"), ("seeds", "seeds")):
        run.add_argument(f"--{key}", default=None, help=f"run only these of the profile's {key} (comma-separated {what})")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                     help="set a key of the profile for this run (repeatable): a dotted path into the profile and a "
                          "TOML value, checked like the file, e.g. --set overrides.vae.lr=1e-3 "
                          "--set 'overrides.\"*\".steps=100' --set metric_params.dci.num_train=1000")

    st = sub.add_parser("status", help="done / running / failed / pending stages of a grid (reads the store only)")
    st.add_argument("--config", default="bench.toml", help="configuration file (default: ./bench.toml)")
    st.add_argument("--profile", default=None, help="profile name (default: the file's default_profile)")
    st.add_argument("--results", default=None, help="a results folder (all its stages) instead of a profile")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    ve = sub.add_parser("verify", help="check every artifact against its recorded sha256; move corrupt stages to quarantine/")
    ve.add_argument("--config", default="bench.toml", help="configuration file (default: ./bench.toml)")
    ve.add_argument("--profile", default=None, help="profile name (default: the file's default_profile)")
    ve.add_argument("--results", default=None, help="a results folder instead of a profile's")

    ls = sub.add_parser("ls", help="list methods, datasets, metrics or profiles; one method's or metric's options")
    ls.add_argument("kind", nargs="?", choices=["methods", "datasets", "metrics", "profiles"], help="only this list")
    ls.add_argument("name", nargs="?", help="a method or metric: its hyperparameters / parameters, defaults, ranges, presets")
    ls.add_argument("--config", default="bench.toml", help="for `bench ls profiles` (default: bench.toml)")

    from bench import score
    from bench.data import cli as data_cli

    score.add_parser(sub)
    data_cli.add_parser(sub)

    for name in ("report", "leaderboard"):
        lb = sub.add_parser(name, help="regenerate the website (index.html), leaderboard and plots from results.csv"
                            + (" (alias of `bench report`)" if name == "leaderboard" else ""))
        lb.add_argument("--config", default=None,
                        help="configuration file (default: ./bench.toml; where there is none and no --config or "
                             "--profile is given, ./results)")
        lb.add_argument("--profile", default=None, help="the profile whose results folder to render (default: the file's default)")
        lb.add_argument("--results", default=None, help="a results folder instead of a profile's (without a bench.toml: results)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"run": _cmd_run, "status": _cmd_status, "verify": _cmd_verify, "ls": _cmd_ls, "leaderboard": _cmd_leaderboard, "report": _cmd_leaderboard, "score": _cmd_score, "data": _cmd_data}
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bench run --dry-run | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # user-facing errors: one clear line, no traceback
        from bench.atomic import DiskFullError, disk_full, is_disk_full
        from bench.config import ConfigError
        from bench.registry import UnknownNameError

        if is_disk_full(exc):
            line = exc if isinstance(exc, DiskFullError) else disk_full(Path(getattr(exc, "filename", None) or "."))
            print(f"bench {args.command}: {line}", file=sys.stderr)
            return 2

        if isinstance(exc, (ConfigError, UnknownNameError, FileNotFoundError, ValueError, PermissionError)):
            print(f"bench {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


def _cmd_ls(args) -> int:
    from bench import listing

    if args.name is not None:
        if args.kind not in ("methods", "metrics"):
            print(f"bench ls: a name ({args.name!r}) goes with `methods` or `metrics`", file=sys.stderr)
            return 2
        print(listing.method(args.name) if args.kind == "methods" else listing.metric(args.name))
    elif args.kind == "profiles":
        print(listing.profiles(args.config))
    else:
        print(listing.registries([args.kind] if args.kind else ["methods", "datasets", "metrics"]))
    return 0


def _cmd_run(args) -> int:
    from bench.config import load_config

    config = load_config(args.config, sets=args.sets, profile=args.profile)
    grid = config.profile(args.profile)
    profile = _narrowed(grid, args)
    if config.data_root is not None:
        from bench.data.root import set_data_root

        set_data_root(config.data_root)
    from bench import stages

    plan = stages.plan(profile, shard=args.shard)
    results_dir = Path(args.results).resolve() if args.results else config.results_dir(profile)
    counts = {"component": 0, "model": 0, "evaluation": 0, "group": 0, **plan.role_counts()}
    from bench.listing import count

    print(f"profile {profile.name!r}: {count(len(profile.cells()), 'grid point')} "
          f"({count(len(profile.methods), 'method')} × {count(len(profile.datasets), 'dataset')} × "
          f"{count(len(profile.seeds), 'seed')}{' × sweeps' if profile.sweep else ''}) → "
          f"{count(counts['component'], 'component')}, {count(counts['model'], 'model')}, "
          f"{count(counts['evaluation'], 'evaluation')}, {count(counts['group'], 'seed group')} → {results_dir}")
    if args.dry_run:
        for s in plan.stages:
            if s.kind == "model":
                extra = " ".join(f"{n}={cid}" for n, cid in s.components.items())
                print(f"  {s.role:<10} {s.id}  {s.method:<14} {s.dataset:<24} seed={s.seed}{'  uses ' + extra if extra else ''}")
        for s in plan.stages:
            if s.kind != "model":
                print(f"  {s.kind:<10} {s.id}  {s.label}")
        return 0
    from bench.runner import run_profile

    summary = run_profile(profile, results_dir, shard=args.shard, device=args.device, progress=not args.no_progress,
                          jobs=args.jobs, threads=args.threads, executor=args.executor, wait=args.wait,
                          config_path=args.config, grid=grid if profile is not grid else None)
    if args.executor == "slurm" and not args.wait:
        return 0
    print(f"stages: {summary.stages} planned, {summary.skipped} already done, {summary.ran} run "
          f"({summary.fitted} models trained), {len(summary.failed)} failed")
    for line in summary.failed:
        print(f"  FAILED {line}", file=sys.stderr)
    print(f"results: {summary.results_csv}\nreport: {results_dir / 'index.html'}")
    return min(len(summary.failed), 100)


def _cmd_status(args) -> int:
    from bench import status

    return status.main(Path(args.config), args.profile, Path(args.results).resolve() if args.results else None, args.json)


def _cmd_verify(args) -> int:
    from bench import status, verify

    results = Path(args.results).resolve() if args.results else status.results_of_profile(Path(args.config), args.profile)[0]
    return verify.main(results)


def _cmd_score(args) -> int:
    from bench import score

    return score.run(args)


def _cmd_data(args) -> int:
    from bench.data import cli as data_cli

    return data_cli.run(args)


def _narrowed(profile, args):
    """The profile narrowed to ``--methods`` / ``--datasets`` / ``--seeds`` (each a subset of the profile's own)."""
    import dataclasses

    from bench.config import ConfigError

    changes = {}
    for key, parse in (("methods", str), ("datasets", str), ("seeds", int)):
        text = getattr(args, key, None)
        if text is None:
            continue
        try:
            values = [parse(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--{key} {text!r}: expected comma-separated integers") from None
        allowed = getattr(profile, key)
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise ConfigError(f"--{key} {text!r}: {', '.join(map(str, unknown)) or 'nothing'} is not among the {key} "
                              f"of profile {profile.name!r} ({', '.join(map(str, allowed))}); --{key} narrows the profile")
        changes[key] = values
    return dataclasses.replace(profile, **changes) if changes else profile


def _cmd_leaderboard(args) -> int:
    from bench.report import regenerate
    from bench.results import collect_from_plans

    results = args.results
    if results is None:
        config_path = Path(args.config or "bench.toml")
        if config_path.is_file():
            from bench.config import load_config

            config = load_config(config_path)
            results = config.results_dir(config.profile(args.profile))
        elif args.config is not None or args.profile is not None:  # asked for a profile: never render another folder
            raise FileNotFoundError(f"{config_path}: configuration file not found; pass --results DIR instead")
        else:
            results = "results"
    collect_from_plans(Path(results))  # stages finished by jobs nobody waited for
    out = regenerate(Path(results))
    print("wrote " + ", ".join(str(path) for key, path in out.items() if key != "plots") + f" and {out['plots']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
