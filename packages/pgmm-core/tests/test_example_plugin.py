"""The example third-party plugin, installed the way ``pip install -e`` does it (a ``.dist-info``
with its entry points, its ``src`` on the path): its config validates and its own tests, which use
the contract suites and the opt-in pytest plugin, pass. ``nox -s example_plugin`` checks the same
from a built wheel in a fresh environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgmm_core.testing import install_fake_distribution

tomllib = pytest.importorskip("tomllib")

EXAMPLE = Path(__file__).parents[3] / "examples" / "plugins" / "pgmm-example-plugin"


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    site = tmp_path_factory.mktemp("site")
    install_fake_distribution(site, project["name"], project["version"], {}, project["entry-points"]["pgmm"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGMM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(EXAMPLE / "src"), os.environ.get("PYTHONPATH", "")])
    env["PGMM_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    return env


def test_example_config_validates_with_the_plugin_installed(environment):
    result = subprocess.run([sys.executable, "-m", "pgmm_core", "validate", str(EXAMPLE / "configs" / "tiny.json")],
                            capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr


def test_example_plugin_own_tests_pass(environment):
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir",
                             str(EXAMPLE), str(EXAMPLE / "tests")],
                            capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "pgmm plugins:" in result.stdout and "example (pgmm-example-plugin 0.1.0) loaded" in result.stdout
