"""``eval.java`` names the Java that runs the PTB tokenizer and METEOR; the process environment is left alone."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from pgmm_core.metrics import caption_metrics

REFERENCES = {1: ["a red circle in the top left", "a red circle at the top left"],
              2: ["a blue square in the center", "a blue square at the center"]}


@pytest.mark.skipif(shutil.which("java") is None, reason="needs a Java runtime")
def test_the_configured_java_runs_and_path_is_untouched(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "jre" / "bin" / "my-java"  # not on PATH, not called "java"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {shutil.which("java")} "$@"\n', encoding="utf-8")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    path_before = os.environ["PATH"]
    seen_paths = []
    import pycocoevalcap.meteor.meteor as meteor_module

    original_init = meteor_module.Meteor.__init__

    def spying_init(self):  # the environment while pycocoevalcap starts Java
        seen_paths.append(os.environ["PATH"])
        original_init(self)

    monkeypatch.setattr(meteor_module.Meteor, "__init__", spying_init)
    scores = caption_metrics({k: v[0] for k, v in REFERENCES.items()}, REFERENCES, java=str(wrapper))
    assert scores["METEOR"] > 0.9 and "tokenizer" not in scores["unavailable"]  # PTB tokenizer and METEOR ran
    started = calls.read_text(encoding="utf-8").splitlines()
    assert any("PTBTokenizer" in line for line in started) and any("meteor" in line for line in started)
    assert seen_paths == [path_before] and os.environ["PATH"] == path_before
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb_module
    import subprocess

    assert ptb_module.subprocess is subprocess and meteor_module.subprocess is subprocess  # restored
