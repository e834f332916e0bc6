"""``python -m pgmm_core convert``: the command pgmm-vision contributes through ``pgmm_register_commands``.

Argument parsing and output only; the conversion is :func:`pgmm_vision.convert.convert`. Importing
this module is cheap (no torch): ``configure`` runs whenever the command line is parsed.
"""

from __future__ import annotations

import argparse

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="checkpoint file, transformers directory, or pgmm run directory")
    parser.add_argument("target", help="output file (.safetensors; .pth for LAVIS)")
    parser.add_argument("--to", required=True, choices=("pgmm", "lavis", "hf"), help="layout to write")
    parser.add_argument("--from", dest="source_format", choices=("lavis", "eva", "hf", "pgmm"),
                        help="layout of the source (detected from its keys by default)")
    parser.add_argument("--checkpoint", default="best", help="for a run directory: best, last or a path")
    parser.add_argument("--text-side", action="store_true",
                        help="keep the Q-Former's stage-1 text side and heads of a LAVIS source (pgmm sources, e.g. "
                        "a stage-1 run, always keep theirs)")


def run(args: argparse.Namespace) -> int:
    from pgmm_vision.convert import convert

    report = convert(args.source, args.target, to=args.to, source_format=args.source_format,
                     checkpoint=args.checkpoint, text_side=True if args.text_side else None)
    print("\n".join(report.lines()))
    return 0
