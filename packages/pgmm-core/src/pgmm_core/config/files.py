"""The files a configured run would open, checked before it starts (``validate``).

Components say which paths they need through an optional method of their config model::

    def required_paths(self, *, split: str) -> list[RequiredPath]: ...

(``split`` is given to dataset configs only: ``train``, ``val`` or ``test``, from the list they are in;
a method that does not take it is called without it). The core walks every component of a validated
config, asks each one, and reports every path that does not exist at the component's config path —
so a missing checkpoint, LLM directory or dataset file is found by ``validate``, not an hour into a
job's queue.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from pgmm_core.config.sections import ComponentConfig


@dataclass(frozen=True)
class RequiredPath:
    """A path a component will open: a ``file``, a ``directory`` or either (``path``); the config
    field it comes from, and what it is, for the message (e.g. "EVA-ViT-g weights, eva_vit_g.pth of the
    LAVIS release")."""

    path: Path
    kind: Literal["file", "directory", "path"] = "file"
    what: str = ""
    field: str = ""

    def exists(self) -> bool:
        checks = {"file": self.path.is_file, "directory": self.path.is_dir, "path": self.path.exists}
        return checks[self.kind]()


def iter_components(config: BaseModel,
                    prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], ComponentConfig]]:
    """Every component config inside ``config``, with its path (``("data", "train", 0)``)."""
    for name in type(config).model_fields:
        value = getattr(config, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            path = prefix + (name,) + (() if index is None else (index,))
            if isinstance(item, ComponentConfig):
                yield path, item
            elif isinstance(item, BaseModel):
                yield from iter_components(item, path)


def _required(component: ComponentConfig, path: tuple[Any, ...]) -> list[RequiredPath]:
    method = getattr(component, "required_paths", None)
    if method is None:
        return []
    context = {"split": path[1]} if len(path) == 3 and path[0] == "data" else {}
    parameters = inspect.signature(method).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return list(method(**{k: v for k, v in context.items() if takes_any or k in parameters}))


def missing_paths(config: BaseModel) -> list[str]:
    """One line per path the run would open that does not exist, named by its config path."""
    from pgmm_core.config.sections import MODEL_PARTS, objective_parts

    unused = MODEL_PARTS - objective_parts(config) if hasattr(config, "objective") else frozenset()
    problems = []
    for path, component in iter_components(config):
        if len(path) == 2 and path[0] == "model" and path[1] in unused:
            continue  # a part the objective does not build opens no file
        where = ".".join(str(part) for part in path)
        missing_dirs: list[Path] = []
        for need in _required(component, path):
            if need.exists() or any(folder in need.path.parents for folder in missing_dirs):
                continue  # (nothing more to say about files inside a folder that is missing)
            if need.kind == "directory":
                missing_dirs.append(need.path)
            name = f"{where}.{need.field}" if need.field else where
            noun = "file or folder" if need.kind == "path" else ("folder" if need.kind == "directory" else "file")
            problems.append(f"{name}: {noun} not found: {need.path}" + (f" ({need.what})" if need.what else ""))
    return problems
