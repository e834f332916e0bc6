"""Where log messages go when pgmm runs as a command: :func:`configure_logging`.

Library code (core and plugins) logs with ``logging.getLogger(__name__)`` and never prints; the
command-line entry points call :func:`configure_logging` once, with the verbosity from ``-v``/``-q``.
Messages are written as they are, without level or logger name, so the user sees the same lines a
``print`` gave: INFO and DEBUG on stdout, WARNING and above on stderr (a message carries its own
``pgmm: warning:`` prefix where it wants one).

The training progress bar (tqdm, on stderr) is redrawn below each message rather than torn by it:
while a bar is open, messages are written through ``tqdm.write``, as the trainer's own messages are.

Which records are shown: loggers of pgmm packages (names starting with ``pgmm``: the core, its
plugins, third-party ``pgmm_*`` plugins) from INFO (default), WARNING (``-q``) or DEBUG (``-v``);
every other library's from WARNING, or DEBUG with ``-vv``. Used as a library (no call to
:func:`configure_logging`), pgmm leaves logging to the application, as Python's default does.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["ConsoleHandler", "add_verbosity_arguments", "configure_logging", "verbosity_of"]

OWN_PREFIX = "pgmm"


def _levels(verbosity: int) -> tuple[int, int]:
    """``(level of pgmm loggers, level of other libraries' loggers)`` for a verbosity."""
    if verbosity < 0:
        return logging.WARNING, logging.WARNING
    if verbosity == 0:
        return logging.INFO, logging.WARNING
    if verbosity == 1:
        return logging.DEBUG, logging.WARNING
    return logging.DEBUG, logging.DEBUG


class ConsoleHandler(logging.Handler):
    """Plain messages to stdout (below WARNING) or stderr, without tearing an open tqdm bar.

    The streams are looked up at each message (not bound at start), so a redirected or captured
    ``sys.stdout`` receives them as it would a ``print``."""

    def __init__(self, own_level: int = logging.INFO, other_level: int = logging.WARNING) -> None:
        super().__init__(level=min(own_level, other_level))
        self.own_level = own_level
        self.other_level = other_level
        self.setFormatter(logging.Formatter("%(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".", 1)[0].startswith(OWN_PREFIX)
        return record.levelno >= (self.own_level if own else self.other_level) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            bar_class = _open_tqdm_bars()
            if bar_class is not None:
                bar_class.write(text, file=stream)
            else:
                stream.write(text + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _open_tqdm_bars() -> type | None:
    """tqdm's class while one of its bars is open (tqdm already imported by whoever opened it)."""
    module = sys.modules.get("tqdm.std")
    if module is None:
        return None
    try:
        return module.tqdm if len(module.tqdm._instances) else None
    except (AttributeError, TypeError):  # a tqdm without the private instance set: plain writes
        return None


def configure_logging(verbosity: int = 0) -> ConsoleHandler:
    """Install the console handler on the root logger (replacing one installed earlier) for
    ``verbosity`` (``-q`` = -1: warnings only; 0: INFO; ``-v`` = 1: DEBUG of pgmm; ``-vv``: DEBUG
    of every library). Returns the handler."""
    own, other = _levels(verbosity)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, ConsoleHandler)]:
        root.removeHandler(old)
    handler = ConsoleHandler(own, other)
    root.addHandler(handler)
    root.setLevel(min(own, other))
    return handler


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> None:
    """``-v``/``--verbose`` and ``-q``/``--quiet`` (each repeatable); read back by :func:`verbosity_of`."""
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more messages: -v debug messages of pgmm, -vv of every library")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only")


def verbosity_of(args: argparse.Namespace) -> int:
    return int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)
