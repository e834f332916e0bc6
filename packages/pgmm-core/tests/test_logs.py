"""Log messages as a command shows them: INFO on stdout as written, warnings on stderr, -q/-v, tqdm-safe."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

import pytest

from pgmm_core.logs import ConsoleHandler, configure_logging


@pytest.fixture
def console():
    """Configure like a command does; afterwards the root logger is as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield configure_logging
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def test_info_goes_to_stdout_and_warnings_to_stderr_as_written(console, capsys):
    console(0)
    logging.getLogger("pgmm_core.train.loop").info("device: cpu (2 threads); precision fp32")
    logging.getLogger("pgmm_vision.eva").info("pgmm: EVA <- a.pth\n  loaded 3 tensors")
    logging.getLogger("pgmm_core.plugins").warning("pgmm: warning: plugin 'x' failed")
    logging.getLogger("pgmm_core.train.loop").debug("not shown by default")
    logging.getLogger("timm.models").info("another library's info is not shown")
    logging.getLogger("timm.models").warning("another library's warning is")
    out, err = capsys.readouterr()
    assert out == "device: cpu (2 threads); precision fp32\npgmm: EVA <- a.pth\n  loaded 3 tensors\n"
    assert err == "pgmm: warning: plugin 'x' failed\nanother library's warning is\n"


def test_quiet_shows_warnings_only_and_verbose_shows_debug(console, capsys):
    loop = logging.getLogger("pgmm_core.train.loop")
    console(-1)
    loop.info("resumed from step 4")
    loop.warning("pgmm: warning: config differs")
    assert capsys.readouterr() == ("", "pgmm: warning: config differs\n")
    console(1)
    loop.debug("pgmm debug")
    logging.getLogger("urllib3").debug("library debug, only with -vv")
    assert capsys.readouterr().out == "pgmm debug\n"
    console(2)
    logging.getLogger("urllib3").debug("library debug, only with -vv")
    assert capsys.readouterr().out == "library debug, only with -vv\n"
    assert sum(isinstance(h, ConsoleHandler) for h in logging.getLogger().handlers) == 1  # replaced, not stacked


def test_a_message_does_not_tear_an_open_progress_bar(console, monkeypatch):
    """While a tqdm bar is open on the same stream, the message starts on a cleared line and the bar
    is redrawn after it (as the trainer's messages through ``bar.write``)."""
    from tqdm.auto import tqdm

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    console(0)
    bar = tqdm(total=10, desc="train", file=stream, mininterval=0, ncols=60)
    bar.update(3)
    logging.getLogger("pgmm_core.train.loop").info("evaluating step 3")
    bar.update(1)
    bar.close()
    logging.getLogger("pgmm_core.train.loop").info("done")
    text = stream.getvalue()
    assert re.search(r"3/10[^\r]*\r +\revaluating step 3\n\rtrain: +30%", text), repr(text)
    assert text.endswith("\ndone\n")  # no bar open: a plain line


@pytest.mark.parametrize("entry", [["pgmm_core"], ["pgmm_core.train"]])
def test_both_entry_points_take_verbose_and_quiet(entry):
    result = subprocess.run([sys.executable, "-m", *entry, *(["train"] if entry == ["pgmm_core"] else []),
                             "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "-v, --verbose" in result.stdout and "-q, --quiet" in result.stdout


def test_cli_flags_before_the_command_set_the_verbosity(console, tmp_path, capsys):
    from pgmm_core.cli import main

    bad = tmp_path / "c.json"
    bad.write_text("{}", encoding="utf-8")
    main(["-q", "validate", str(bad)])
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler))
    assert handler.own_level == logging.WARNING
    main(["-vv", "validate", str(bad)])
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler))
    assert (handler.own_level, handler.other_level) == (logging.DEBUG, logging.DEBUG)
    capsys.readouterr()
