"""Sessions that set up their own virtual environments: the demo, the tests, and packaging checks.

    nox -s demo      # install the five packages, run the tiny CPU demo (python -m pgmm_core.train)
    nox -s tests     # install the five packages + pytest, run the whole suite
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["pgmm-core", "pgmm-vision", "pgmm-pangu", "pgmm-data", "pgmm-ascend"]
EDITABLE = [arg for name in PACKAGES for arg in ("-e", f"packages/{name}")]


@nox.session
def demo(session: nox.Session) -> None:
    """Train the embedded tiny demo on CPU (about a minute); the run lands in runs/tiny."""
    session.install(*EDITABLE)
    session.run("python", "-m", "pgmm_core.train", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The full test suite (CPU only, a few minutes on 2 cores)."""
    # skimage: real photographs; mistral-common: the SentencePiece model of the tokenizer goldens
    session.install(*EDITABLE, "pytest>=8", "scikit-image", "mistral-common>=1.13")
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))
