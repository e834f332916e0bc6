"""``python -m pgmm_core`` (also the ``pgmm`` console script).

Built-in subcommands: ``plugins``, ``schema``, ``validate``, ``train``, ``caption``, ``evaluate``,
``report``; plugins add more through ``pgmm_register_commands`` (pgmm-vision's ``convert``,
pgmm-data's ``data``). ``plugins``, ``schema`` and ``validate`` never import torch. ``-v``/``-q``
before the command set how much is logged (:mod:`pgmm_core.logs`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from pgmm_core.guard import run_guarded
from pgmm_core.logs import add_verbosity_arguments, configure_logging, verbosity_of


def _host(*, warn_failures: bool = True) -> Any:
    from pgmm_core.plugins import PluginHost

    return PluginHost(warn_failures=warn_failures)


# --- plugins ------------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    host = _host(warn_failures=False)  # failed plugins and name clashes are listed below
    plugins = host.plugins
    availability = _availability(host)
    descriptions = {f"{kind}:{spec.name}": spec.description
                    for kind, registry in host.registries().items() for spec in registry}
    if args.json:
        out = []
        for info in plugins:
            entry = info.to_json()
            entry["unavailable"] = {c: availability[c] for c in info.components if availability.get(c)}
            entry["descriptions"] = {c: descriptions.get(c, "") for c in info.components}
            out.append(entry)
        print(json.dumps(out, indent=2))
        return 0
    for info in plugins:
        dist = f"{info.distribution} {info.version}" if info.distribution else "(in-process)"
        print(f"{info.name}: {dist} [{info.status}]")
        if info.error:
            print(f"    error: {info.error}")
        for component in info.components:
            reason = availability.get(component)
            described = f"  {descriptions[component]}" if descriptions.get(component) else ""
            print(f"    {component}{described}" + (f"  (unavailable here: {reason})" if reason else ""))
        for component in info.clashes:
            print(f"    {component}  [name clash: disabled]")
    _print_kinds(host)
    return 0


def _print_kinds(host: Any) -> None:
    """Every component kind (from the kinds table) with where it goes and what is installed."""
    from pgmm_core.kinds import KINDS

    registries = host.registries()
    print("kinds:")
    for kind in KINDS:
        registry = registries[kind.name]
        slots = ", ".join(slot.path for slot in kind.slots)
        default = f"; default {registry.default}" if registry.default else ""
        names = ", ".join(registry.names()) or "none installed"
        print(f"    {kind.name} ({kind.label}): {kind.description}")
        print(f"        in {slots}{default}; installed: {names}")
    clashes = host.clashes()
    if clashes:
        print("name clashes:")
        for clash in clashes:
            print(f"    {clash.kind}:{clash.name}: {clash.message()}")


def _availability(host: Any) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for kind, registry in host.registries().items():
        for spec in registry:
            try:
                out[f"{kind}:{spec.name}"] = spec.availability()
            except Exception as exc:  # a broken probe is reported, not fatal
                out[f"{kind}:{spec.name}"] = f"availability probe failed: {type(exc).__name__}: {exc}"
    return out


# --- schema / validate ----------------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    model = _host().config_model()
    print(json.dumps(model.model_json_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pgmm_core.config.loading import config_to_json, load_config
    from pgmm_core.errors import ConfigError

    try:
        config = load_config(args.file, args.overrides)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    if not args.no_files:
        from pgmm_core.config.files import missing_paths

        missing = missing_paths(config)
        if missing:
            print(f"{args.file}: valid, but {len(missing)} path(s) the run would open do not exist "
                  "(--no-files skips this check for a config meant for another machine):", file=sys.stderr)
            print("\n".join(f"  - {line}" for line in missing), file=sys.stderr)
            return 2
    if args.print_config:
        sys.stdout.write(config_to_json(config))
    else:
        print(f"{args.file}: valid")
    return 0


def _generation_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ("num_beams", "max_new_tokens", "min_new_tokens", "top_p", "temperature", "repetition_penalty",
             "length_penalty", "num_return_sequences")
    settings = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if args.sample:
        settings["do_sample"] = True
    return settings


def cmd_caption(args: argparse.Namespace) -> int:
    from pgmm_core.captioner import Captioner, expand_image_paths
    from pgmm_core.errors import DataError

    from pgmm_core.errors import ConfigError

    paths = expand_image_paths(args.images)
    if not paths:
        raise ConfigError(["no images given (image files, or directories whose own .jpg/.png/... files are "
                           "captioned; sub-directories are not searched)"])
    captioner = Captioner.from_run(args.run, checkpoint=args.checkpoint, overrides=args.set)
    settings = _generation_overrides(args)
    per_image = settings.get("num_return_sequences", captioner.generation.num_return_sequences)
    failures = 0
    for start in range(0, len(paths), args.batch_size):
        batch, readable = paths[start : start + args.batch_size], []
        for path in batch:
            try:
                captioner.pixel_values([path])
                readable.append(path)
            except DataError as exc:
                failures += 1
                print(f"pgmm: error: {exc}", file=sys.stderr)
                if args.json:  # scripts reading the JSON lines see every image, failed ones too
                    print(json.dumps({"image": str(path), "error": str(exc)}, ensure_ascii=False))
        if not readable:
            continue
        captions = captioner.caption(readable, batch_size=args.batch_size, prompt=args.prompt, **settings)
        for i, path in enumerate(readable):
            for caption in captions[i * per_image : (i + 1) * per_image]:
                if args.json:
                    print(json.dumps({"image": str(path), "caption": caption}, ensure_ascii=False))
                else:
                    print(f"{path}\t{caption}")
    return 1 if failures else 0


def cmd_ask(args: argparse.Namespace) -> int:
    """One question (the answer streamed to stdout), or with ``--chat`` a conversation: questions read
    line by line from stdin (an empty line or end of input ends it), the history kept."""
    from pgmm_core.assistant import CAPTION_ONLY_NOTE, Assistant
    from pgmm_core.errors import ConfigError

    if not args.chat and not args.question:
        raise ConfigError(['ask needs a question: ask --run RUN IMAGE "question" (or --chat)'])
    assistant = Assistant.from_run(args.run, checkpoint=args.checkpoint, overrides=args.set)
    assistant.captioner.pixel_values([args.image])  # an unreadable image fails before any question
    if assistant.mode == "caption":
        print(f"pgmm: note: {CAPTION_ONLY_NOTE}", file=sys.stderr)
    settings = _generation_overrides(args)
    settings.pop("num_return_sequences", None)
    history: list[dict[str, str]] = []
    question = args.question
    interactive = sys.stdin.isatty()
    if args.chat:
        print("pgmm: chat about the image; an empty line or end of input ends it", file=sys.stderr)
    while True:
        if question is None:
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line.strip():
                break
            question = line.strip()
        pieces = []
        for piece in assistant.stream(args.image, question, history=history, **settings):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        if not args.chat:
            break
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": "".join(pieces)}]
        question = None
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pgmm_core.errors import ConfigError
    from pgmm_core.evaluate_run import evaluate_run

    if args.run and args.run_dir and Path(args.run) != Path(args.run_dir):
        raise ConfigError([f"two run directories given: {args.run_dir} and --run {args.run}"])
    run = args.run or args.run_dir
    if not run:
        raise ConfigError(["evaluate needs the run directory: --run RUN_DIR (or RUN_DIR)"])
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError([f"--out {args.out}: exists and is not a directory"])
    evaluate_run(run, split=args.split, data_file=args.data, checkpoint=args.checkpoint,
                 overrides=args.set, out_dir=args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pgmm_core.report import build_report

    path = build_report(args.run, out_dir=args.out, gallery_size=args.gallery)
    print(f"wrote {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pgmm_core.train.__main__ import main as train_main

    return train_main(args.rest)


# --- parser -------------------------------------------------------------------------------------------


def _run_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--run", required=required, help="run directory (config.json + checkpoints/)")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint directory")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. model.llm.path=/data/pangu device.type=cpu "
                        "(arguments after it without '=' are still taken as images / the run directory)")


def build_parser(host: Any | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pgmm_core", description="pgmm: BLIP-2 style captioning "
                                     "with openPangu, as installable plugins")
    add_verbosity_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("plugins", help="list plugins, their status and components")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(_run=cmd_plugins)

    p = sub.add_parser("schema", help="print the JSON schema of the config (installed plugins included)")
    p.set_defaults(_run=cmd_schema)

    p = sub.add_parser("validate", help="check a config file; exit 0 if valid, 2 with every problem if not")
    p.add_argument("file", help="JSON config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied before validating")
    p.add_argument("--print-config", action="store_true", help="print the resolved config when valid")
    p.add_argument("--no-files", action="store_true",
                   help="do not check that the checkpoints, model folders and data files exist here")
    p.set_defaults(_run=cmd_validate)

    p = sub.add_parser("caption", help="caption images with a trained run")
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_DIR", help="image files or directories of images")
    _run_arguments(p)
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line: {"image", "caption"}, or {"image", "error"} for an unreadable one')
    p.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--prompt", help="text before the caption (default: the run's model.prompt)")
    _decoding_arguments(p)
    p.add_argument("--num-return-sequences", dest="num_return_sequences", type=int)
    p.set_defaults(_run=cmd_caption)

    p = sub.add_parser("ask", help="ask a trained run about an image (the answer is streamed; --chat: a conversation)")
    p.add_argument("image", metavar="IMAGE", help="an image file")
    p.add_argument("question", nargs="?", help="the question (with --chat: the first one; more are read from stdin)")
    _run_arguments(p)
    p.add_argument("--chat", action="store_true",
                   help="keep asking: one question per line on stdin, the conversation kept; an empty line ends it")
    _decoding_arguments(p)
    p.set_defaults(_run=cmd_ask)

    p = sub.add_parser("evaluate", help="caption a split with a run's checkpoint and score it (torchrun ok)")
    # positional too: torchrun's own argparse takes "--run" for its "--run-path" option
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the run directory (same as --run)")
    _run_arguments(p, required=False)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--data", help="JSON file with a dataset config (or a list) to evaluate instead")
    p.add_argument("--out", help="output directory (default RUN/eval/<split>-step<N>)")
    p.set_defaults(_run=cmd_evaluate)

    p = sub.add_parser("report", help="write an HTML report (curves, metrics, captioned samples) of a run")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--out", help="output directory (default RUN/report)")
    p.add_argument("--gallery", type=_non_negative_int, default=12, help="validation images shown (default 12)")
    p.set_defaults(_run=cmd_report)

    p = sub.add_parser("train", help="same as python -m pgmm_core.train", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(_run=cmd_train)

    if host is not None:
        for command in host.commands().commands.values():
            command.add_to(sub)
    return parser


def _decoding_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-beams", dest="num_beams", type=int)
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    p.add_argument("--min-new-tokens", dest="min_new_tokens", type=int)
    p.add_argument("--sample", action="store_true", help="nucleus sampling instead of beam search")
    p.add_argument("--top-p", dest="top_p", type=float)
    p.add_argument("--temperature", type=float)
    p.add_argument("--repetition-penalty", dest="repetition_penalty", type=float)
    p.add_argument("--length-penalty", dest="length_penalty", type=float)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _take_positionals_from_set(args: argparse.Namespace) -> None:
    """``--set a=1 photo.jpg`` : argparse gives ``photo.jpg`` to ``--set``; it belongs to the positionals."""
    values = getattr(args, "set", None)
    if not values:
        return
    args.set = [v for v in values if "=" in v]
    stray = [v for v in values if "=" not in v]
    if hasattr(args, "images"):
        args.images = [*args.images, *stray]
    elif hasattr(args, "question") and stray:  # ask: IMAGE "question" after --set
        if args.question is None and len(stray) == 1:
            args.image, args.question = args.image, stray[0]
    elif hasattr(args, "run_dir") and stray:
        if args.run_dir is None and len(stray) == 1:
            args.run_dir = stray[0]
        else:
            from pgmm_core.errors import ConfigError

            raise ConfigError([f"--set takes KEY=VALUE pairs; got {', '.join(stray)}"])


VERBOSITY_FLAGS = re.compile(r"^(-v+|-q+|--verbose|--quiet)$")


def _verbosity(flags: list[str]) -> int:
    """``-v``/``-q`` flags (``-vv`` counts twice) as a verbosity: see :func:`configure_logging`."""
    parser = argparse.ArgumentParser(add_help=False)
    add_verbosity_arguments(parser)
    return verbosity_of(parser.parse_args(flags))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = 0  # -v/-q before the command
    while lead < len(argv) and VERBOSITY_FLAGS.match(argv[lead]):
        lead += 1
    if lead < len(argv) and argv[lead] == "train":  # its own parser: --config, --resume, --help pass through
        from pgmm_core.train.__main__ import main as train_main

        return train_main(argv[:lead] + argv[lead + 1:])

    def go() -> int:
        configure_logging(_verbosity(argv[:lead]))  # before the plugin host, whose warnings it shows
        builtin = {"plugins", "schema", "validate", "train", "caption", "ask", "evaluate", "report"}
        command = argv[lead] if lead < len(argv) else None
        wants_plugin_command = command is not None and command not in builtin and not command.startswith("-")
        host = _host() if wants_plugin_command or command is None or command in ("-h", "--help") else None
        parser = build_parser(host)
        args, extra = parser.parse_known_args(argv)
        if extra and isinstance(getattr(args, "overrides", None), list):
            # `validate FILE --print-config k=v`: argparse ends the positionals at the first option
            args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
            extra = [e for e in extra if not ("=" in e and not e.startswith("-"))]
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        _take_positionals_from_set(args)
        return int(args._run(args) or 0)

    return run_guarded(go)
