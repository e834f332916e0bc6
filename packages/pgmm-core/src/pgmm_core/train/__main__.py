"""``python -m pgmm_core.train [--config FILE] [key=value ...] [--resume auto|PATH] [--print-config]``

Without ``--config`` it runs the embedded tiny CPU demo (``examples/tiny/stage2.json``).
"""

from __future__ import annotations

import argparse
import sys


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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from pgmm_core.cli import run_guarded

    def go() -> int:
        from pgmm_core.config.loading import config_to_json, load_config

        config = load_config(args.config, args.overrides)
        if args.print_config:
            sys.stdout.write(config_to_json(config))
            return 0
        if args.config is None:
            print("pgmm: no --config given: running the embedded tiny CPU demo "
                  f"(output in {config.train.output_dir})", flush=True)
        from pgmm_core.train import train

        summary = train(config, resume=args.resume)
        if summary.get("first_loss") is not None:
            print(f"pgmm: done: {summary['steps']} steps, loss {summary['first_loss']:.4f} -> "
                  f"{summary['last_loss']:.4f}; run directory {summary['output_dir']}", flush=True)
        return 0

    return run_guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
