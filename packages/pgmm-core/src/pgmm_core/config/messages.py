"""Turn pydantic validation errors into one line per problem, each with its dotted config path.

Pydantic's locations include union tags (``model.vision.eva_vit_g.image_size``); users wrote
``model.vision.image_size``. We walk the raw input alongside each location to drop such elements,
then add what a user needs next: the known component names, a close match, and the pip package that
provides a component which is not installed.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import TYPE_CHECKING, Any, Union

from pydantic import BaseModel, ValidationError

from pgmm_core.catalog import first_party_names, providing_package
from pgmm_core.config.assemble import NOTHING_INSTALLED
from pgmm_core.kinds import label, slot_for

if TYPE_CHECKING:
    from pgmm_core.plugins import PluginHost


def data_path(raw: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The location as the user wrote it: keys and list indices present in ``raw``.

    Elements that are not keys of the current object (union tags, validator names) are dropped,
    except the last one, which names a missing or extra field.
    """
    path: list[Any] = []
    current = raw
    for i, element in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, dict) and element in current:
            path.append(element)
            current = current[element]
        elif isinstance(current, list) and isinstance(element, int) and 0 <= element < len(current):
            path.append(element)
            current = current[element]
        elif last and isinstance(element, (str, int)) and not _is_tag(current, element):
            path.append(element)
    return tuple(path)


def _is_tag(current: Any, element: Any) -> bool:
    return isinstance(current, dict) and current.get("type") == element


def dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path) if path else "(root)"


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Annotated / Optional / Union / list annotations."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def model_at(root: type[BaseModel], raw: Any, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config model class that validates the object at ``path`` (following ``type`` tags)."""
    candidates: list[Any] = [root]
    current = raw
    for element in path:
        next_candidates: list[Any] = []
        for cand in candidates:
            if isinstance(element, int):
                if typing.get_origin(cand) in (list, tuple):
                    next_candidates.extend(_unwrap(typing.get_args(cand)[0]))
            elif isinstance(cand, type) and issubclass(cand, BaseModel) and element in cand.model_fields:
                next_candidates.extend(_unwrap(cand.model_fields[element].annotation))
        current = current[element] if isinstance(current, (dict, list)) and _has(current, element) else None
        candidates = _select_by_tag(next_candidates, current)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _has(container: Any, element: Any) -> bool:
    if isinstance(container, dict):
        return element in container
    return isinstance(element, int) and 0 <= element < len(container)


def _select_by_tag(candidates: list[Any], value: Any) -> list[Any]:
    flat: list[Any] = []
    for cand in candidates:
        flat.extend(_unwrap(cand) if typing.get_origin(cand) is not list else [cand])
    if not isinstance(value, dict) or "type" not in value:
        return flat
    tagged = []
    for cand in flat:
        if isinstance(cand, type) and issubclass(cand, BaseModel) and "type" in cand.model_fields:
            allowed = typing.get_args(cand.model_fields["type"].annotation)
            if value["type"] in allowed:
                tagged.append(cand)
    return tagged or flat


def _known_list(host: PluginHost, kind: str) -> str:
    specs = list(host.registry(kind))
    if not specs:
        return "none loaded" if getattr(host, "disabled_distributions", set)() else "none installed"
    return ", ".join(
        f"{spec.name} ({spec.provider.distribution or spec.provider.plugin})" for spec in specs
    )


def unknown_component_message(host: PluginHost, kind: str, name: str) -> str:
    clash = host.registry(kind).clashes.get(name)
    if clash is not None:
        return clash.message()
    parts = [f"unknown {label(kind)} '{name}'. Known: {_known_list(host, kind)}."]
    package = providing_package(kind, name)
    disabled = getattr(host, "disabled_distributions", set)()
    if package is not None and package in disabled:
        parts.append(f"'{name}' is provided by {package}, which is installed but disabled "
                     "(PGMM_DISABLE_PLUGINS / PGMM_LOAD_PLUGINS)")
    elif package is not None:
        parts.append(f"'{name}' is provided by the pip package {package}: pip install {package}")
    else:
        installed = host.registry(kind).all_names()
        catalog = sorted(set(installed) | set(first_party_names(kind)))
        close = difflib.get_close_matches(str(name), catalog, n=1, cutoff=0.6)
        close = [meant] if (meant := common_name_match(host.registry(kind), name)) else close  # gpu: cuda
        if close:
            hint = f"Did you mean '{close[0]}'?"
            if close[0] not in installed:
                pkg = providing_package(kind, close[0])
                hint += f" (provided by {pkg}: pip install {pkg})"
            parts.append(hint)
    return " ".join(parts)


def format_errors(
    error: ValidationError, raw: Any, root: type[BaseModel], host: PluginHost
) -> list[str]:
    """One message per problem, sorted by path, duplicates removed."""
    messages: list[str] = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        path = data_path(raw, loc)
        found = slot_for(path)
        kind_slot = found[0] if found is not None else None
        etype = err["type"]
        if etype == "union_tag_invalid" and kind_slot is not None:
            tag = err.get("ctx", {}).get("tag")
            msg = f"{dotted(path)}.type: {unknown_component_message(host, kind_slot.name, tag)}"
        elif etype == "union_tag_not_found" and kind_slot is not None:
            names = ", ".join(host.registry(kind_slot.name).all_names()) or "none installed"
            msg = f"{dotted(path)}.type: required; one of: {names}"
        elif NOTHING_INSTALLED in str(err.get("msg", "")) and kind_slot is not None:
            name = raw_value(raw, path, "type")
            state = "loaded" if getattr(host, "disabled_distributions", set)() else "installed"
            msg = f"{dotted(path)}: no {kind_slot.label} is {state}. " + (
                unknown_component_message(host, kind_slot.name, name) if name else ""
            )
        elif etype == "extra_forbidden":
            msg = f"{dotted(path)}: unknown field" + _field_hint(root, raw, path)
        elif etype == "missing":
            msg = f"{dotted(path)}: required field is missing"
        else:
            msg = f"{dotted(path)}: {err['msg']}{_got(err)}"
        if msg not in messages:
            messages.append(msg.rstrip())
    return messages


def raw_value(raw: Any, path: tuple[Any, ...], key: str) -> Any:
    current = raw
    for element in path:
        if not _has(current, element):
            return None
        current = current[element]
    return current.get(key) if isinstance(current, dict) else None


def _field_hint(root: type[BaseModel], raw: Any, path: tuple[Any, ...]) -> str:
    owner = model_at(root, raw, path[:-1])
    if owner is None:
        return ""
    fields = sorted(owner.model_fields)
    close = difflib.get_close_matches(str(path[-1]), fields, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; allowed: {', '.join(fields)}"


def _got(err: dict[str, Any]) -> str:
    value = err.get("input")
    if isinstance(value, (dict, list)) or value is None:
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= 60 else text[:57] + '...'})"


def common_name_match(registry: Any, name: Any) -> str | None:
    """The installed component whose config model lists ``name`` in its ``common_names`` (what users
    call it: ``gpu`` for ``cuda``), so the hint follows meaning rather than spelling."""
    wanted = str(name).lower()
    for spec in registry:
        if wanted in getattr(spec.config_model, "common_names", ()):
            return spec.name
    return None
