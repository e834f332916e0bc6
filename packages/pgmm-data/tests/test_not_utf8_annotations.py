"""An annotation file that is not UTF-8: one line naming the file and its byte offset, exit 2 (data check)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pgmm_core.errors import NotUtf8Error
from pgmm_core.testing import tiny_config, write_config
from pgmm_data.annotations import load_jsonl_captions, read_json
from pgmm_data.testing import write_jsonl_tree


def _latin1_jsonl(tree_root):
    path = tree_root / "captions.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[-1])
    entry["caption"] = "un caf\u00e9"
    lines[-1] = json.dumps(entry, ensure_ascii=False)
    data = ("\n".join(lines) + "\n").encode("latin-1")
    path.write_bytes(data)
    return path, data.index(b"\xe9")


def test_jsonl_and_json_annotations_name_the_byte_offset_in_the_file(tmp_path):
    tree = write_jsonl_tree(tmp_path / "jsonl", images=3)
    path, offset = _latin1_jsonl(tree.root)
    with pytest.raises(NotUtf8Error) as info:
        load_jsonl_captions(path, tree.root)
    assert info.value.offset == offset > 0 and str(path) in str(info.value)  # in the file, not in its line
    coco = tmp_path / "karpathy.json"
    data = b'[{"caption": "caf\xe9", "image": "a.jpg"}]'
    coco.write_bytes(data)
    with pytest.raises(NotUtf8Error) as info:
        read_json(coco, "annotation file")
    assert info.value.offset == data.index(b"\xe9") and info.value.exit_code == 2


def test_data_check_gives_one_line_and_exit_2(tmp_path):
    tree = write_jsonl_tree(tmp_path / "jsonl", images=3)
    path, offset = _latin1_jsonl(tree.root)
    config = tiny_config(tmp_path / "run", data={
        "train": [{"type": "jsonl_captions", "path": str(path)}], "val": []})
    config_path = write_config(tmp_path / "c.json", config)
    result = subprocess.run([sys.executable, "-m", "pgmm_core", "data", "check", "--config", str(config_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == f"pgmm: error: {path}: not UTF-8 text: byte 0xe9 at offset {offset}; save the file as UTF-8\n"
