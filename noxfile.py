"""Sessions that set up their own virtual environments: the demo, the tests, and packaging checks.

    nox -s demo      # install the six packages, run the tiny CPU demo (python -m pgmm_core.train)
    nox -s tests     # install the six packages + pytest, run the whole suite

Packaging checks (fresh environments from built wheels; a few minutes each, not run by default):

    nox -s install_line     # pip install pgmm-core pgmm-ascend; tiny stage-2 training; plugins
    nox -s install_vision   # pip install pgmm-vision alone: imports and registers
    nox -s example_plugin   # the example third-party plugin: wheel, contract tests, plugins, training
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["pgmm-core", "pgmm-vision", "pgmm-pangu", "pgmm-data", "pgmm-ascend", "pgmm-serve"]
EDITABLE = [arg for name in PACKAGES for arg in ("-e", f"packages/{name}")]


@nox.session
def demo(session: nox.Session) -> None:
    """Train the embedded tiny demo on CPU (about a minute); the run lands in runs/tiny."""
    session.install(*EDITABLE)
    session.run("python", "-m", "pgmm_core.train", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The full test suite (CPU only, about 15 minutes on 2 cores)."""
    # skimage: real photographs; mistral-common: the SentencePiece model of the tokenizer goldens;
    # import-linter: the dependency contracts of pyproject.toml (tests/test_import_contracts.py)
    session.install(*EDITABLE, "pytest>=8", "scikit-image", "mistral-common>=1.13", "import-linter>=2.17")
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


# --- packaging: the install lines users type, from freshly built wheels in fresh environments ------------
#
# These sessions build wheels of the pgmm packages (they are not on an index), create a fresh virtual
# environment, and install with exactly the command a user types, plus ``--find-links`` to the wheels;
# third-party dependencies (torch included) come from the configured package index. Each one installs
# torch into a new environment, so each takes a few minutes: run them before a release, not on every
# change (see docs/plugins.md, "Checking packaging").

PACKAGE_DIRS = [f"packages/{name}" for name in PACKAGES]
EXAMPLE_PLUGIN_DIR = "examples/plugins/pgmm-example-plugin"

WRITE_TINY_STAGE2 = """
import sys
from pgmm_core.testing import tiny_config, write_config
write_config(sys.argv[1], tiny_config(sys.argv[2]))
"""

CHECK_FROM_WHEELS = """
import json, pathlib, sys
report, wheel_dir, expected = json.load(open(sys.argv[1])), pathlib.Path(sys.argv[2]).resolve(), sys.argv[3:]
sources = {item["metadata"]["name"]: item["download_info"]["url"] for item in report["install"]}
pgmm = {name: url for name, url in sources.items() if name.startswith("pgmm-")}
missing = sorted(set(expected) - set(pgmm))
assert not missing, f"not installed: {missing}"
for name, url in sorted(pgmm.items()):
    assert url.startswith(wheel_dir.as_uri()), f"{name} came from {url}, not from the wheels just built"
    print(f"{name}: {url.rsplit('/', 1)[-1]}")
"""

CHECK_VISION_REGISTERS = """
from pgmm_core.plugins import PluginHost
import pgmm_vision
host = PluginHost()
info = {p.name: p for p in host.plugins}["vision"]
assert info.status == "loaded" and info.distribution == "pgmm-vision", info
for component in ("vision:eva_vit_g", "vision:timm", "connector:qformer", "projector:mlp2x_gelu"):
    assert component in info.components, (component, info.components)
spec = host.registry("vision").get("eva_vit_g")
tower = host.build("vision", spec.config_model(image_size=32, patch_size=8, embed_dim=32, depth=1,
                                               num_heads=2, mlp_dim=64))
print(f"pgmm_vision from {pgmm_vision.__file__}: registers {', '.join(info.components)}; "
      f"eva_vit_g builds ({tower.out_features}-wide tokens)")
"""


def _build_wheels(session: nox.Session, *projects: str) -> Path:
    """Wheels of ``projects`` in a clean folder of this session (the projects' own build backend)."""
    wheel_dir = Path(session.create_tmp()).resolve() / "wheels"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    session.run("python", "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheel_dir), *projects)
    return wheel_dir


def _pip_install(session: nox.Session, wheel_dir: Path, *requirements: str) -> None:
    """``pip install REQUIREMENTS`` as typed by a user, finding pgmm in ``wheel_dir``; then check that
    every pgmm distribution really came from those wheels."""
    report = wheel_dir.parent / "install-report.json"
    session.run("pip", "install", "--find-links", str(wheel_dir), "--report", str(report), *requirements)
    pgmm = [r for r in requirements if r.startswith("pgmm-")]
    session.run("python", "-c", CHECK_FROM_WHEELS, str(report), str(wheel_dir), *pgmm)


def _fresh_work_dir(session: nox.Session) -> Path:
    """An empty directory outside the source tree, so that nothing is imported from the checkout."""
    work = Path(session.create_tmp()).resolve() / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    session.chdir(work)
    return work


@nox.session(reuse_venv=False)
def install_line(session: nox.Session) -> None:
    """`pip install pgmm-core pgmm-ascend` from built wheels into a fresh venv; train a tiny stage 2; list plugins."""
    root = Path.cwd()
    wheels = _build_wheels(session, *(str(root / d) for d in PACKAGE_DIRS))
    _pip_install(session, wheels, "pgmm-core", "pgmm-ascend")
    work = _fresh_work_dir(session)
    config = work / "stage2-tiny.json"
    session.run("python", "-c", WRITE_TINY_STAGE2, str(config), str(work / "run"))
    session.run("python", "-m", "pgmm_core.train", "--config", str(config),
                env={"PGMM_CACHE_DIR": str(work / "cache")})
    for produced in ("config.json", "log.jsonl", "metrics.json", "results.json", "checkpoints"):
        if not (work / "run" / produced).exists():
            session.error(f"the tiny run did not write {produced}")
    session.run("python", "-m", "pgmm_core", "plugins")


@nox.session(reuse_venv=False)
def install_vision(session: nox.Session) -> None:
    """`pip install pgmm-vision` alone into a fresh venv: it imports, and its plugin registers."""
    root = Path.cwd()
    wheels = _build_wheels(session, *(str(root / d) for d in PACKAGE_DIRS))
    _pip_install(session, wheels, "pgmm-vision")
    _fresh_work_dir(session)
    session.run("python", "-c", CHECK_VISION_REGISTERS)


@nox.session(reuse_venv=False)
def example_plugin(session: nox.Session) -> None:
    """Build the example plugin's wheel, install it with the pgmm wheels into a fresh venv, run its
    contract tests, show it in `python -m pgmm_core plugins`, and train a tiny model with it."""
    root = Path.cwd()
    example = root / EXAMPLE_PLUGIN_DIR
    wheels = _build_wheels(session, *(str(root / d) for d in PACKAGE_DIRS), str(example))
    _pip_install(session, wheels, "pgmm-example-plugin", "pytest>=8")
    work = _fresh_work_dir(session)
    listing = session.run("python", "-m", "pgmm_core", "plugins", silent=True)
    session.log(listing)
    for line in ("example: pgmm-example-plugin 0.1.0 [loaded]", "vision:cnn_tokens", "dataset:image_folder_captions"):
        if line not in listing:
            session.error(f"`python -m pgmm_core plugins` does not show {line!r}")
    session.run("python", "-m", "pytest", "-q", "--rootdir", str(example), str(example / "tests"),
                env={"PGMM_CACHE_DIR": str(work / "cache")})
    session.run("python", "-m", "pgmm_example_plugin.demo_folder", "demo", "--train", "32", "--val", "8")
    session.run("python", "-m", "pgmm_core.train", "--config", str(example / "configs" / "tiny.json"),
                env={"PGMM_CACHE_DIR": str(work / "cache")})
    if not (work / "runs" / "example" / "results.json").is_file():
        session.error("the tiny run with the example plugin wrote no results.json")
