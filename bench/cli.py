"""The ``bench`` command line: ``run``, ``ls``, ``leaderboard``, ``score``, ``data``.

Heavy modules (torch, the runner) are imported inside the commands that need them, so
``bench ls`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark harness for disentangled representation learning.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate a grid from bench.toml (resumes finished cells)")
    run.add_argument("--config", default="bench.toml", help="configuration file (default: ./bench.toml)")
    run.add_argument("--profile", default=None, help="profile name (default: the file's default_profile)")
    run.add_argument("--results", default=None, help="results folder (default: the profile's 'results')")
    run.add_argument("--device", default=None, help="override the profile's device (auto, cpu, cuda, cuda:N)")
    run.add_argument("--shard", type=_shard, default=(0, 1), help="run every N-th cell starting at I (I/N)")
    run.add_argument("--dry-run", action="store_true", help="validate the config and list the cells, run nothing")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    ls = sub.add_parser("ls", help="list registered methods, datasets and metrics")
    ls.add_argument("kind", nargs="?", choices=["methods", "datasets", "metrics"], help="only this registry")

    from bench import score
    from bench.data import cli as data_cli

    score.add_parser(sub)
    data_cli.add_parser(sub)

    lb = sub.add_parser("leaderboard", help="regenerate leaderboard and plots from results.csv")
    lb.add_argument("--results", default="results", help="results folder (default: results)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"run": _cmd_run, "ls": _cmd_ls, "leaderboard": _cmd_leaderboard, "score": _cmd_score, "data": _cmd_data}
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors: one clear line, no traceback
        from bench.config import ConfigError
        from bench.registry import UnknownNameError

        if isinstance(exc, (ConfigError, UnknownNameError, FileNotFoundError, ValueError)):
            print(f"bench {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


def _cmd_ls(args) -> int:
    from bench import registry

    kinds = [args.kind] if args.kind else ["methods", "datasets", "metrics"]
    for kind in kinds:
        reg = getattr(registry, kind)()
        print(f"{kind}:")
        width = max(len(e.name) for e in reg)
        for entry in reg:
            print(f"  {entry.name:<{width}}  {entry.summary}")
    return 0


def _cmd_run(args) -> int:
    from bench.config import load_config

    config = load_config(args.config)
    profile = config.profile(args.profile)
    if config.data_root is not None:
        from bench.data.root import set_data_root

        set_data_root(config.data_root)
    cells = profile.cells()
    results_dir = Path(args.results).resolve() if args.results else config.results_dir(profile)
    print(f"profile {profile.name!r}: {len(cells)} cells "
          f"({len(profile.methods)} methods × {len(profile.datasets)} datasets × {len(profile.seeds)} seeds"
          f"{' × sweeps' if profile.sweep else ''}) → {results_dir}")
    if args.dry_run:
        for cell in cells:
            print(f"  {cell.id}  {cell.method:<10} {cell.dataset:<24} seed={cell.seed}")
        return 0
    from bench.runner import run_profile

    summary = run_profile(profile, results_dir, shard=args.shard, device=args.device, progress=not args.no_progress)
    print(f"cells: {summary.cells} in this shard, {summary.skipped} already finished, {summary.ran} run, "
          f"{len(summary.failed)} failed")
    for line in summary.failed:
        print(f"  FAILED {line}", file=sys.stderr)
    print(f"results: {summary.results_csv}\nleaderboard: {results_dir / 'leaderboard.md'}")
    return min(len(summary.failed), 100)


def _cmd_score(args) -> int:
    from bench import score

    return score.run(args)


def _cmd_data(args) -> int:
    from bench.data import cli as data_cli

    return data_cli.run(args)


def _cmd_leaderboard(args) -> int:
    from bench.report import regenerate

    out = regenerate(Path(args.results))
    print(f"wrote {out['leaderboard_md']}, {out['leaderboard_csv']} and {out['plots']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
