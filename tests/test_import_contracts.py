"""The dependency direction holds: ``lint-imports`` keeps every contract of the root pyproject.toml.

Plugins import the core, never the reverse; plugin packages are independent of each other; plugins
use only the core's public modules; the core's own modules keep their layers. The public-API
contract lists the core's private modules, so a new core module must be classified: public for
plugins, or added to that list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
pytest.importorskip("importlinter")

ROOT = Path(__file__).parents[1]
PLUGINS = ("pgmm_vision", "pgmm_pangu", "pgmm_data", "pgmm_ascend", "pgmm_serve")
# what plugins may import (docs/plugins.md): a module listed here, or a submodule of one ending in ".*"
PUBLIC = ("pgmm_core", "pgmm_core.errors", "pgmm_core.hookspecs", "pgmm_core.components",
          "pgmm_core.config.sections", "pgmm_core.config.files", "pgmm_core.devices.*", "pgmm_core.preprocessing",
          "pgmm_core.images", "pgmm_core.streaming",
          "pgmm_core.files", "pgmm_core.objectives.base", "pgmm_core.strategies.base", "pgmm_core.testing.*",
          "pgmm_core.plugins")
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def _lint(config: Path, *, pythonpath: list[str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", LINT, str(config)], cwd=config.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def _is_public(module: str) -> bool:
    return any(module == p or (p.endswith(".*") and (module == p[:-2] or module.startswith(p[:-1])))
               for p in PUBLIC)


def test_lint_imports_keeps_every_contract(tmp_path):
    result = _lint(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    for name in ("The core imports no plugin package", "Plugin packages are independent of each other",
                 "Plugins use only the core's public modules", "Layers of the core"):
        assert f"{name} KEPT" in " ".join(result.stdout.split()), name


def test_every_core_module_is_public_or_forbidden_to_plugins():
    import grimp

    graph = grimp.build_graph("pgmm_core", cache_dir=None)  # no cache written into the checkout
    to_plugins = [c for c in _contracts() if c["type"] == "forbidden" and set(c["source_modules"]) >= set(PLUGINS)]
    assert to_plugins, "no contract forbids private core modules to the plugins"

    def forbidden(module: str) -> bool:
        return any(module == p or (c.get("as_packages", True) and module.startswith(p + "."))
                   for c in to_plugins for p in c["forbidden_modules"])

    unclassified = sorted(m for m in graph.modules if not _is_public(m) and not forbidden(m))
    assert not unclassified, ("core modules neither public for plugins nor forbidden to them in pyproject.toml "
                              f"[tool.importlinter] (add each to one of the two lists): {unclassified}")
    wrongly_private = sorted(m for m in graph.modules if _is_public(m) and forbidden(m))
    assert not wrongly_private, f"public modules forbidden to plugins: {wrongly_private}"


def test_the_example_plugin_uses_only_the_public_core(tmp_path):
    """The third-party example (not installed in the test environment) is held to the same list."""
    example = ROOT / "examples" / "plugins" / "pgmm-example-plugin" / "src"
    private = next(c for c in _contracts() if c["name"] == "Plugins use only the core's public modules")
    config = tmp_path / "pyproject.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["pgmm_core", "pgmm_example_plugin"]\n'
        "exclude_type_checking_imports = true\n\n"
        '[[tool.importlinter.contracts]]\nname = "The example plugin uses only the public core"\n'
        'type = "forbidden"\nsource_modules = ["pgmm_example_plugin"]\n'
        f"forbidden_modules = {json.dumps(private['forbidden_modules'])}\nallow_indirect_imports = true\n",
        encoding="utf-8")
    result = _lint(config, pythonpath=[str(example)])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "The example plugin uses only the public core KEPT" in " ".join(result.stdout.split())


def test_contracts_catch_a_plugin_reaching_into_the_core_and_the_core_into_a_plugin(tmp_path):
    """The contracts bite: a copy of two plugins, one importing a private core module and one another
    plugin, and a core module importing a plugin, each break their contract."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ROOT / "packages" / "pgmm-core" / "src" / "pgmm_core", src / "pgmm_core")
    for name in ("pgmm_pangu", "pgmm_ascend"):
        shutil.copytree(ROOT / "packages" / name.replace("_", "-") / "src" / name, src / name)
    with (src / "pgmm_pangu" / "loss.py").open("a", encoding="utf-8") as fh:
        fh.write("\nfrom pgmm_core.train import checkpoint as _private\n")
    with (src / "pgmm_ascend" / "probe.py").open("a", encoding="utf-8") as fh:
        fh.write("\nimport pgmm_pangu as _other_plugin\n")
    with (src / "pgmm_core" / "metrics_expr.py").open("a", encoding="utf-8") as fh:
        fh.write("\nimport pgmm_ascend as _plugin\n")
    config = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = text.replace('root_packages = ["pgmm_core", "pgmm_vision", "pgmm_pangu", "pgmm_data", "pgmm_ascend"]',
                        'root_packages = ["pgmm_core", "pgmm_pangu", "pgmm_ascend"]')
    for absent in ('"pgmm_vision", ', '"pgmm_data", ', '"pgmm_vision.**", ', '"pgmm_data.**",', ', "pgmm_serve"',
                   ', "pgmm_serve.**"'):
        text = text.replace(absent, "")
    config.write_text(text, encoding="utf-8")
    result = _lint(config, pythonpath=[str(src)])
    out = " ".join(result.stdout.split())
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "The core imports no plugin package BROKEN" in out and "pgmm_core.metrics_expr -> pgmm_ascend" in out
    assert "Plugin packages are independent of each other BROKEN" in out and "pgmm_ascend.probe -> pgmm_pangu" in out
    assert "Plugins use only the core's public modules BROKEN" in out
    assert "pgmm_pangu.loss -> pgmm_core.train.checkpoint" in out
