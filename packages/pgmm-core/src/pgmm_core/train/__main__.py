"""``python -m pgmm_core.train [--config FILE] [key=value ...] [--resume auto|PATH] [--print-config] [-v|-q]``

Without ``--config`` it runs the embedded tiny CPU demo (``examples/tiny/stage2.json``). The
trainer's messages are log records shown on stdout (``-q``: warnings only; ``-v``: debug too).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pgmm_core.guard import run_guarded
from pgmm_core.logs import add_verbosity_arguments, configure_logging, verbosity_of


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pgmm_core.train",
        description="Train a pgmm model (LAVIS BLIP-2 stage 2). Without --config: the tiny CPU demo.",
    )
    p.add_argument("--config", help="JSON config file (default: the embedded tiny CPU demo)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=2e-5")
    p.add_argument("--resume", metavar="auto|PATH", help="continue from the newest complete checkpoint "
                   "of train.output_dir (auto) or from a checkpoint directory")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_verbosity_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)  # overrides may come before and after the options
    configure_logging(verbosity_of(args))

    def go() -> int:
        from pgmm_core.config.loading import config_to_json, load_config

        config = load_config(args.config, args.overrides)
        if args.print_config:
            sys.stdout.write(config_to_json(config))
            return 0
        if args.config is None:
            print("pgmm: no --config given: running the embedded tiny CPU demo "
                  f"(output in {config.train.output_dir})", flush=True)
            if not args.resume:
                _move_earlier_demo_aside(Path(config.train.output_dir))
        from pgmm_core.train import train

        try:
            summary = train(config, resume=args.resume)
        except KeyboardInterrupt as exc:
            print(_interrupted_message(exc, Path(config.train.output_dir)), file=sys.stderr, flush=True)
            return 130
        if os.environ.get("RANK", "0") != "0":
            return 0  # rank 0 speaks for the run (each rank's summary holds its own share's losses)
        stopped = f"; stopped early: {summary['stop_reason']}" if summary.get("stop_reason") else ""
        if summary.get("first_loss") is not None:
            print(f"pgmm: done: {summary['steps']} steps, loss {summary['first_loss']:.4f} -> "
                  f"{summary['last_loss']:.4f}{stopped}; run directory {summary['output_dir']}", flush=True)
        elif stopped:
            print(f"pgmm: done: {summary['steps']} steps{stopped}; run directory {summary['output_dir']}",
                  flush=True)
        return 0

    return run_guarded(go)


def _move_earlier_demo_aside(output_dir: Path) -> None:
    """Running the demo again starts it again; the earlier demo run is kept beside it, not mixed in."""
    from pgmm_core.run_dir import RunDirectory

    if not RunDirectory(output_dir).checkpoints.is_dir():
        return
    n = 1
    while output_dir.with_name(f"{output_dir.name}.{n}").exists():
        n += 1
    target = output_dir.with_name(f"{output_dir.name}.{n}")
    output_dir.rename(target)
    print(f"pgmm: the earlier demo run was moved to {target}", flush=True)


def _interrupted_message(exc: KeyboardInterrupt, output_dir: Path) -> str:
    try:
        from pgmm_core.run_dir import RunDirectory
        from pgmm_core.train import checkpoint as ckpt
        from pgmm_core.train.loop import TrainingInterrupted
    except Exception:  # interrupted while torch was still being imported: nothing was trained
        return "pgmm: interrupted while starting; nothing was trained or saved"

    if isinstance(exc, TrainingInterrupted):
        where = f"pgmm: interrupted after step {exc.step}; checkpoint saved in {exc.checkpoint}"
    else:
        found = ckpt.latest_complete(RunDirectory(output_dir).checkpoints)
        where = "pgmm: interrupted; " + (f"newest complete checkpoint: {found[0]}" if found
                                         else "no checkpoint was saved yet")
    return f"{where}\n      continue with the same command and --resume auto"


if __name__ == "__main__":
    raise SystemExit(main())
