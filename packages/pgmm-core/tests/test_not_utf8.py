"""A config file that is not UTF-8: one line naming the file and the byte offset, exit 2 — from
``validate``, ``train`` and the library alike."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pgmm_core.errors import NotUtf8Error
from pgmm_core.files import decode_utf8, read_utf8_text

LATIN1 = '{\n  "train": {"output_dir": "runs/caf\u00e9"}\n}\n'.encode("latin-1")
OFFSET = LATIN1.index(b"\xe9")


def test_the_error_names_the_file_the_byte_and_its_offset(tmp_path):
    path = tmp_path / "stage2.json"
    path.write_bytes(LATIN1)
    with pytest.raises(NotUtf8Error) as info:
        read_utf8_text(path)
    assert info.value.exit_code == 2 and info.value.offset == OFFSET
    assert str(info.value) == f"{path}: not UTF-8 text: byte 0xe9 at offset {OFFSET}; save the file as UTF-8"
    assert decode_utf8("caf\u00e9".encode("utf-8"), path) == "caf\u00e9"
    with pytest.raises(NotUtf8Error) as info:  # an offset within a file read from the middle
        decode_utf8(b"ok \xff", path, offset=100)
    assert info.value.offset == 103


@pytest.mark.parametrize("command", [["pgmm_core", "validate"], ["pgmm_core.train", "--config"],
                                     ["pgmm_core", "train", "--config"]])
def test_commands_give_one_line_and_exit_2(tmp_path, command):
    path = tmp_path / "stage2.json"
    path.write_bytes(LATIN1)
    result = subprocess.run([sys.executable, "-m", *command, str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == f"pgmm: error: {path}: not UTF-8 text: byte 0xe9 at offset {OFFSET}; save the file as UTF-8\n"
