"""``python -m pgmm_core`` (also the ``pgmm`` console script).

Built-in subcommands: ``plugins``, ``schema``, ``validate``, ``train``; plugins add more through
``pgmm_register_commands``. ``plugins``, ``schema`` and ``validate`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from pgmm_core.errors import PgmmError


def run_guarded(action: Callable[[], int]) -> int:
    """Run a command; a :class:`PgmmError` becomes a plain message and its exit code."""
    try:
        return action()
    except PgmmError as exc:
        print(f"pgmm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pgmm: interrupted", file=sys.stderr)
        return 130


def _host(*, warn_failures: bool = True) -> Any:
    from pgmm_core.plugins import PluginHost

    return PluginHost(warn_failures=warn_failures)


# --- plugins ------------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    host = _host(warn_failures=False)  # failed plugins are listed below, with their errors
    plugins = host.plugins
    availability = _availability(host)
    if args.json:
        out = []
        for info in plugins:
            entry = info.to_json()
            entry["unavailable"] = {c: availability[c] for c in info.components if availability.get(c)}
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
            print(f"    {component}" + (f"  (unavailable here: {reason})" if reason else ""))
    return 0


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
    if args.print_config:
        sys.stdout.write(config_to_json(config))
    else:
        print(f"{args.file}: valid")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pgmm_core.train.__main__ import main as train_main

    return train_main(args.rest)


# --- parser -------------------------------------------------------------------------------------------


def build_parser(host: Any | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pgmm_core", description="pgmm: BLIP-2 style captioning "
                                     "with openPangu, as installable plugins")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("plugins", help="list plugins, their status and components")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(_run=cmd_plugins)

    p = sub.add_parser("schema", help="print the JSON schema of the config (installed plugins included)")
    p.set_defaults(_run=cmd_schema)

    p = sub.add_parser("validate", help="check a config file; exit 0 if valid, 2 with every problem if not")
    p.add_argument("file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--print-config", action="store_true", help="print the resolved config when valid")
    p.set_defaults(_run=cmd_validate)

    p = sub.add_parser("train", help="same as python -m pgmm_core.train", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(_run=cmd_train)

    if host is not None:
        for command in host.commands().commands.values():
            command.add_to(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def go() -> int:
        builtin = {"plugins", "schema", "validate", "train"}
        wants_plugin_command = bool(argv) and argv[0] not in builtin and not argv[0].startswith("-")
        host = _host() if wants_plugin_command or not argv or argv[0] in ("-h", "--help") else None
        args = build_parser(host).parse_args(argv)
        return int(args._run(args) or 0)

    return run_guarded(go)
