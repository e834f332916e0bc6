"""COCO caption metrics with pycocoevalcap's scorers, offline.

``COCOEvalCap.evaluate()`` is never called: it builds SPICE first, and SPICE downloads Stanford
CoreNLP on first use. We run the PTB tokenizer and the BLEU, METEOR, ROUGE-L and CIDEr scorers
ourselves, and SPICE only when its jars are already installed. The PTB tokenizer and METEOR need
Java; without it, captions are tokenized by a simple rule (lowercase, punctuation removed) and METEOR
is reported as unavailable rather than crashing the run.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRIC_ORDER = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
_PUNCT = re.compile(r"[^\w\s]")


def java_available(java: str = "java") -> bool:
    return shutil.which(java) is not None


def _simple_tokenize(captions: dict[Any, list[str]]) -> dict[Any, list[str]]:
    return {k: [" ".join(_PUNCT.sub(" ", c.lower()).split()) for c in v] for k, v in captions.items()}


def _spice_ready() -> bool:
    try:
        import pycocoevalcap.spice as spice_pkg
    except ImportError:
        return False
    lib = Path(spice_pkg.__file__).parent / "lib"
    return (lib / "stanford-corenlp-3.6.0.jar").is_file() and (lib / "stanford-corenlp-3.6.0-models.jar").is_file()


def caption_metrics(predictions: dict[Any, str], references: dict[Any, list[str]], *,
                    java: str = "java") -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when installed) for ``predictions`` keyed like
    ``references``. Returns ``{metric: value}`` plus ``"unavailable": {metric: reason}``."""
    missing = sorted(set(predictions) - set(references), key=str)
    if missing:
        raise ValueError(f"{len(missing)} predictions have no references (first: {missing[0]!r})")
    ids = sorted(predictions, key=str)
    gts_raw = {i: list(references[i]) for i in ids}
    res_raw = {i: [predictions[i]] for i in ids}
    has_java = java_available(java)
    with _configured_java(java if has_java else None):
        return _score(gts_raw, res_raw, has_java, java)


JAVA_MODULES = ("pycocoevalcap.tokenizer.ptbtokenizer", "pycocoevalcap.meteor.meteor", "pycocoevalcap.spice.spice")
_STARTERS = frozenset({"Popen", "call", "check_call", "check_output", "run"})


class _ConfiguredJava:
    """Stands in for the ``subprocess`` module inside pycocoevalcap's Java-running modules: their
    commands start with plain ``java``; this runs the configured executable instead. Everything else
    is :mod:`subprocess` itself, and no environment variable of this process changes."""

    def __init__(self, java_path: str) -> None:
        self.java_path = java_path

    def __getattr__(self, name: str) -> Any:
        attr = getattr(subprocess, name)
        if name not in _STARTERS:
            return attr

        def start(args: Any, *rest: Any, **kwargs: Any) -> Any:
            if isinstance(args, (list, tuple)) and args and args[0] == "java":
                args = [self.java_path, *args[1:]]
            return attr(args, *rest, **kwargs)

        return start


@contextlib.contextmanager
def _configured_java(java: str | None):
    """pycocoevalcap runs plain ``java``; run the configured executable (``eval.java``) instead."""
    if java is None:
        yield
        return
    import importlib

    stand_in = _ConfiguredJava(shutil.which(java) or java)
    modules = [importlib.import_module(name) for name in JAVA_MODULES]
    saved = [module.subprocess for module in modules]
    for module in modules:
        module.subprocess = stand_in
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.subprocess = original


@contextlib.contextmanager
def _java_chatter_hidden():
    """The PTB tokenizer's Java process writes progress and warnings to our stderr at every
    evaluation; keep them out of the training output, but show them if tokenization fails."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            chatter = sink.read().decode(errors="replace").rstrip("\n")
            if chatter:
                logger.warning(chatter)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _score(gts_raw: dict[Any, list[str]], res_raw: dict[Any, list[str]], has_java: bool,
           java: str) -> dict[str, Any]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    unavailable: dict[str, str] = {}
    if has_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        # one Java process for references and predictions together (each start costs a second)
        both = {("gt", i): [{"caption": c} for c in caps] for i, caps in gts_raw.items()}
        both.update({("res", i): [{"caption": c} for c in caps] for i, caps in res_raw.items()})
        with _java_chatter_hidden():
            tokenized = PTBTokenizer().tokenize(both)
        gts = {i: tokenized[("gt", i)] for i in gts_raw}
        res = {i: tokenized[("res", i)] for i in res_raw}
    else:
        gts, res = _simple_tokenize(gts_raw), _simple_tokenize(res_raw)
        unavailable["tokenizer"] = "Java not found: PTB tokenizer replaced by lowercase + punctuation removal"
    scores: dict[str, Any] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, start=1):
        scores[f"Bleu_{n}"] = float(value)
    if has_java:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        try:
            scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
        finally:
            stop_meteor(meteor)
    else:
        unavailable["METEOR"] = f"Java ('{java}') not found; install a JRE (e.g. apt-get install openjdk-17-jre-headless)"
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if has_java and _spice_ready():
        from pycocoevalcap.spice.spice import Spice

        scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
    else:
        unavailable["SPICE"] = "Stanford CoreNLP jars are not installed (SPICE would download them)"
    scores["unavailable"] = unavailable
    return scores


def stop_meteor(meteor: Any) -> None:
    """Stop METEOR's Java process without its lock. ``Meteor.__del__`` takes the lock that
    ``compute_score`` holds; a Ctrl-C inside ``compute_score`` leaves it held, and ``__del__`` would
    then wait forever. Given a fresh lock, the later ``__del__`` finds the process already gone."""
    import threading

    process = meteor.meteor_p
    with contextlib.suppress(OSError, ValueError):
        process.stdin.close()
    process.kill()
    process.wait()
    meteor.lock = threading.Lock()


def format_table(metrics: dict[str, Any]) -> str:
    """Two lines, names over values: the caption metrics first, in :data:`METRIC_ORDER` and as
    percentages (as the COCO papers print them), then every other numeric metric sorted by name, as
    it is (an objective's own metrics: ``mse``, ``accuracy``). Entries that are not numbers (the
    ``unavailable`` reasons) are left out; the callers report them."""
    caption = [m for m in METRIC_ORDER if m in metrics]
    others = sorted(n for n, v in metrics.items() if n not in METRIC_ORDER and _is_number(v))
    headers = [f"{n:>8}" for n in caption] + [f"{n:>{max(8, len(n))}}" for n in others]
    values = [f"{metrics[n] * 100:8.2f}" for n in caption] + [
        f"{metrics[n]:>{max(8, len(n))}.4g}" for n in others]
    return " | ".join(headers) + "\n" + " | ".join(values)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
