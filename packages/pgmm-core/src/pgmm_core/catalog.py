"""Which pip package provides which first-party component, for error messages only.

When a config names a component that is not installed, the message can say ``pip install
pgmm-ascend`` instead of just "unknown". The core's code names no plugin component: the answer is
data, ``first_party.json`` shipped with pgmm-core, and a test keeps it equal to what the installed
first-party plugins actually register.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

INDEX_FILE = "first_party.json"


@functools.lru_cache(maxsize=1)
def first_party_index() -> dict[str, dict[str, tuple[str, ...]]]:
    """Distribution -> kind -> the ``type`` values (names and aliases) it provides."""
    text = resources.files("pgmm_core").joinpath(INDEX_FILE).read_text(encoding="utf-8")
    distributions = json.loads(text)["distributions"]
    return {dist: {kind: tuple(names) for kind, names in kinds.items()} for dist, kinds in distributions.items()}


def first_party_names(kind: str) -> dict[str, str]:
    """Every first-party ``type`` value of a kind -> the distribution that provides it."""
    return {name: dist for dist, kinds in first_party_index().items() for name in kinds.get(kind, ())}


def providing_package(kind: str, name: str) -> str | None:
    """The first-party distribution that provides ``kind:name``, if any."""
    return first_party_names(kind).get(name)
