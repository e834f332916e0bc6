"""docs/architecture.md tells the truth about what it names: the kinds table has one row per kind
of ``KINDS`` with that kind's hook, slots, factory context, protocol and contract suite, and every
repository path it links exists."""

from __future__ import annotations

import re
from pathlib import Path

from pgmm_core.kinds import KINDS

ROOT = Path(__file__).parents[3]
PAGE = ROOT / "docs" / "architecture.md"


def kinds_table() -> dict[str, list[str]]:
    """``{kind: [its cells]}`` from the page's table whose first column is ``kind``."""
    rows: dict[str, list[str]] = {}
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| kind |"))
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_every_kind_has_its_row_and_nothing_else_does():
    rows = kinds_table()
    assert list(rows) == [kind.name for kind in KINDS], "the table lists the kinds of KINDS, in its order"


def test_each_row_says_what_kinds_py_says():
    rows = kinds_table()
    for kind in KINDS:
        _, hook, slots, context, protocol, contract, _default = rows[kind.name]
        assert hook == f"`{kind.hook}`", kind.name
        assert re.findall(r"`([^`]+)`", slots) == [slot.path for slot in kind.slots], kind.name
        assert context.strip("`").split(", ") == ["config", *kind.context], kind.name
        if kind.protocol is None:
            assert protocol.startswith("none"), kind.name
        else:
            module, attr = kind.protocol.split(":")
            assert protocol == f"`{module.removeprefix('pgmm_core.')}.{attr}`", kind.name
            kind.load_protocol()  # the protocol the row names exists
        assert contract == f"`{kind.contract.split(':')[1]}`", kind.name


def test_linked_paths_exist():
    text = PAGE.read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text) if not t.startswith(("http", "#"))]
    assert targets
    missing = [t for t in targets if t and not (PAGE.parent / t).exists()]
    assert not missing, f"docs/architecture.md links paths that do not exist: {missing}"


def test_readme_and_plugin_reference_link_the_page():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(architecture.md)" in (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
