"""Ctrl-C during training: finish the step, save it, stop — instead of dying mid-step."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class InterruptFlag:
    """Set by the first Ctrl-C while :meth:`armed`; the step loop looks at it after every step.

    A second Ctrl-C stops at once (``KeyboardInterrupt``). Single-process runs only: under torchrun
    the ranks would have to agree on the step, and the launcher stops its workers itself.
    """

    def __init__(self, *, enabled: bool, announce: Callable[[str], None]) -> None:
        self.enabled = enabled
        self.announce = announce
        self.requested = False

    @contextmanager
    def armed(self) -> Iterator[None]:
        self.requested = False
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_interrupt(signum: int, frame: Any) -> None:
            if self.requested:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.requested = True
            self.announce("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop now)")

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
