"""``python -m pgmm_core export``: the command pgmm-pangu contributes through ``pgmm_register_commands``.

Argument parsing and output only; the work is :func:`pgmm_pangu.export.export_merged_llm`. Importing
this module is cheap (no torch): ``configure`` runs whenever the command line is parsed.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="the run directory whose LLM adapters are merged")
    parser.add_argument("--out", required=True, help="new directory for the merged LLM (openPangu release layout)")
    parser.add_argument("--merge-lora", action="store_true",
                        help="merge the run's LoRA adapters into the LLM weights (the export this command does)")
    parser.add_argument("--checkpoint", default="best", help="best, last or a checkpoint directory")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. model.llm.path=/data/pangu when the release moved")


def run(args: argparse.Namespace) -> int:
    from pgmm_pangu.export import ExportError, export_merged_llm

    if not args.merge_lora:
        raise ExportError("export writes the LLM with its LoRA adapters merged in: pass --merge-lora")
    report = export_merged_llm(args.run, args.out, checkpoint=args.checkpoint, overrides=args.overrides)
    print("\n".join(report.lines()))
    return 0
