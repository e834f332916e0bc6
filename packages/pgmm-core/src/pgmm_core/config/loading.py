"""Read a config: JSON file, then ``key=value`` overrides, then validation — all errors at once."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pgmm_core.config.messages import format_errors
from pgmm_core.errors import ConfigError
from pgmm_core.files import read_utf8_text

if TYPE_CHECKING:
    from pgmm_core.config.assemble import ConfigRoot
    from pgmm_core.plugins import PluginHost

DEMO_CONFIG_NAME = "tiny_stage2.json"


def demo_config_text() -> str:
    """The embedded tiny CPU demo config (identical to ``examples/tiny/stage2.json``)."""
    return resources.files("pgmm_core.demo").joinpath(DEMO_CONFIG_NAME).read_text(encoding="utf-8")


def read_json_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON config file; errors name the file and the line/column (or the byte that is not
    UTF-8: :class:`~pgmm_core.errors.NotUtf8Error`, one line, exit 2)."""
    path = Path(path)
    try:
        text = read_utf8_text(path)
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc.strerror}"]) from None
    return parse_json_text(text, str(path))


def parse_json_text(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"], source
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(["the top level of a config must be a JSON object"], source)
    return data


def parse_override_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, null, lists, objects), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Apply ``a.b.0.c=value`` overrides to a copy of ``data``; return it and the problems found.

    Changing a component's ``type`` starts its section afresh (the old type's fields would be unknown
    to the new one: ``device.type=cpu`` on a run trained on NPUs); ``type`` overrides are applied
    first, so the section's other overrides may come in any order."""
    data = copy.deepcopy(data)
    problems: list[str] = []
    overrides = sorted(overrides, key=lambda o: not o.partition("=")[0].strip().endswith(".type"))
    for override in overrides:
        key, sep, value_text = override.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"override {override!r}: expected KEY=VALUE with a dotted KEY (train.lr=2e-5)")
            continue
        value = parse_override_value(value_text)
        problem = _set_path(data, key.split("."), value)
        if problem:
            problems.append(f"override {override!r}: {problem}")
    return data, problems


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> str | None:
    current: Any = data
    walked: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(current, list):
            if not part.isdigit():
                return f"'{'.'.join(walked)}' is a list; use an index, not '{part}'"
            index = int(part)
            if index > len(current):
                return f"index {index} is past the end of '{'.'.join(walked)}' (length {len(current)})"
            if last:
                if index == len(current):
                    current.append(value)
                else:
                    current[index] = value
                return None
            if index == len(current):
                current.append({})
            current = current[index]
        elif isinstance(current, dict):
            if last:
                if part == "type" and isinstance(current.get("type"), str) and current["type"] != value:
                    current.clear()
                current[part] = value
                return None
            if part not in current or current[part] is None:
                current[part] = {}
            current = current[part]
        else:
            kind = type(current).__name__
            return f"'{'.'.join(walked)}' is a {kind}, not an object"
        walked.append(part)
    return None


def validate_config(
    data: dict[str, Any],
    host: PluginHost,
    *,
    source: str | None = None,
    extra_problems: Iterable[str] = (),
) -> ConfigRoot:
    """Validate raw config data against the host's assembled model; raise one :class:`ConfigError`.

    Validation is strict and in JSON mode, as the data came from JSON: ``true`` is not a number and
    ``"8"`` is not an integer (pydantic's lax mode would take both), while JSON's own forms — arrays
    for tuples, strings for paths, integers for floats — are accepted.
    """
    root = host.config_model()
    problems = list(extra_problems)
    try:
        config = root.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        problems.extend(format_errors(exc, data, root, host))
        raise ConfigError(problems, source) from None
    problems.extend(_missing_parts(config))
    if not problems:
        problems.extend(_objective_problems(config))
    if problems:
        raise ConfigError(problems, source)
    config._host = host
    return config


def _objective_problems(config: ConfigRoot) -> list[str]:
    """What the objective finds wrong with the whole config (its config model's optional
    ``config_problems(config)``), e.g. a global batch too small for a contrastive loss."""
    check = getattr(getattr(config, "objective", None), "config_problems", None)
    return list(check(config)) if callable(check) else []


def _missing_parts(config: ConfigRoot) -> list[str]:
    """``model.<part>`` the objective trains with but the config leaves out (a part's slot may be
    empty only for objectives that do not use it)."""
    from pgmm_core.config.sections import objective_parts

    model, objective = getattr(config, "model", None), getattr(config, "objective", None)
    if model is None or objective is None:
        return []
    return [f"model.{part}: required field is missing (the '{objective.type}' objective uses it)"
            for part in sorted(objective_parts(config)) if part in type(model).model_fields
            and getattr(model, part) is None]


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    host: PluginHost | None = None,
) -> ConfigRoot:
    """Load, override and validate a config. ``path=None`` loads the embedded tiny CPU demo."""
    if host is None:
        from pgmm_core.plugins import PluginHost

        host = PluginHost()
    if path is None:
        source = f"<embedded demo {DEMO_CONFIG_NAME}>"
        data = parse_json_text(demo_config_text(), source)
    else:
        source = str(path)
        data = read_json_file(path)
    data, problems = apply_overrides(data, overrides)
    return validate_config(data, host, source=source, extra_problems=problems)


def config_to_json(config: Any) -> str:
    return json.dumps(config.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like configs differ (``data.batch_size``, ``data.train.0.root``)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [p for key in sorted(set(before) | set(after), key=str)
                for p in changed_paths(before.get(key), after.get(key), f"{prefix}{key}.")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for i, (b, a) in enumerate(zip(before, after)) for p in changed_paths(b, a, f"{prefix}{i}.")]
    return [] if before == after else [prefix.rstrip(".")]
