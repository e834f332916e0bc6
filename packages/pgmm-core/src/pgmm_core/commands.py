"""Subcommands that plugins add to ``python -m pgmm_core``.

A plugin implements ``pgmm_register_commands(registrar)`` and calls :meth:`CommandRegistrar.add`.
``configure`` fills an ``argparse`` parser; ``run`` receives the parsed namespace and returns an exit
code. Both may be ``"module:attr"`` strings so that listing commands imports nothing heavy.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from pgmm_core.errors import PluginError
from pgmm_core.registry import Provider


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None] | str
    run: Callable[[argparse.Namespace], int] | str
    provider: Provider | None

    def add_to(self, subparsers: Any) -> None:
        parser = subparsers.add_parser(self.name, help=self.help, description=self.help)
        _resolve(self.configure)(parser)
        parser.set_defaults(_run=lambda ns: _resolve(self.run)(ns))


class CommandRegistrar:
    """Collects the subcommands of one plugin; names must be unique within it."""

    def __init__(self, provider: Provider | None = None) -> None:
        self.commands: dict[str, Command] = {}
        self.provider = provider

    def add(
        self,
        name: str,
        *,
        help: str,
        configure: Callable[[argparse.ArgumentParser], None] | str,
        run: Callable[[argparse.Namespace], int] | str,
    ) -> None:
        if name in self.commands:
            raise PluginError(
                f"command '{name}' is registered twice: by {self.commands[name].provider} and by "
                f"{self.provider}"
            )
        self.commands[name] = Command(name, help, configure, run, self.provider)


def merge_commands(contributions: list[CommandRegistrar]) -> tuple[CommandRegistrar, list[str]]:
    """All plugins' commands in one registrar. A name two plugins add is left out for both (one
    note naming both); their other commands, and everyone else's, stay."""
    claims: dict[str, list[Command]] = {}
    for registrar in contributions:
        for command in registrar.commands.values():
            claims.setdefault(command.name, []).append(command)
    merged = CommandRegistrar()
    notes = []
    for name, commands in claims.items():
        if len(commands) == 1:
            merged.commands[name] = commands[0]
        else:
            owners = " and ".join(str(c.provider) for c in commands)
            notes.append(f"command '{name}' is registered by {owners}; neither is used. Uninstall or "
                         "disable one of them (PGMM_DISABLE_PLUGINS).")
    return merged, notes
