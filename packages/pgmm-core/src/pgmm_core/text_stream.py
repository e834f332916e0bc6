"""Text pieces as an LLM generates them: the streamer an LLM backend's ``generate`` feeds.

:class:`TextPieces` has transformers' streamer interface (``put(ids)`` for each step's new token,
``end()`` when generation stops), so a backend that hands it to ``transformers``' ``generate`` needs
nothing else; any other backend calls the same two methods. It decodes the tokens received so far
with the model's tokenizer and queues only the text added since the last piece, holding back a piece
that ends in an incomplete character (a byte-fallback token of a multi-byte character). Iterating it
yields the pieces until generation ends; generation runs in another thread (:func:`stream_generation`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_END = object()


class TextPieces:
    """A streamer for one row: ``put`` token ids, iterate the text pieces (see the module docstring)."""

    def __init__(self, tokenizer: Any, *, timeout: float | None = None) -> None:
        self.tokenizer = tokenizer
        self.timeout = timeout
        self.ids: list[int] = []
        self.sent = ""
        self.stopped = False
        self.ended = False
        self._queue: queue.Queue[Any] = queue.Queue()

    def put(self, value: Any) -> None:
        """New token ids (a tensor or list: B×1, 1 or a scalar for one row). The prompt, which
        transformers puts first, is empty when generating from ``inputs_embeds``, and is ignored."""
        ids = value.tolist() if hasattr(value, "tolist") else value
        while isinstance(ids, list) and ids and isinstance(ids[0], list):
            if len(ids) > 1:
                raise ValueError("TextPieces streams one row; generate one sequence at a time to stream")
            ids = ids[0]
        ids = [ids] if isinstance(ids, int) else list(ids)
        if self.stopped or not ids:
            return
        eos = self.tokenizer.eos_token_id
        if eos in ids:
            ids = ids[: ids.index(eos)]
            self.stopped = True
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") and not self.stopped:
            return  # an incomplete character: wait for its other bytes
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self._queue.put(text[len(self.sent):])
            self.sent = text

    def end(self) -> None:
        if self.ended:  # transformers ends it, and stream_generation makes sure
            return
        self.ended = True
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self._queue.put(text[len(self.sent):])
            self.sent = text
        self._queue.put(_END)

    def fail(self, error: BaseException) -> None:
        self._queue.put(error)

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._queue.get(timeout=self.timeout)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def stream_generation(run: Callable[[TextPieces], Any], tokenizer: Any) -> Iterator[str]:
    """Text pieces of ``run(streamer)`` (a call of the backend's ``generate``) run in a thread; an
    error in generation is raised here, in the caller's thread."""
    pieces = TextPieces(tokenizer)

    def work() -> None:
        try:
            run(pieces)
        except BaseException as exc:  # re-raised by the iterator in the caller's thread
            pieces.fail(exc)
            return
        pieces.end()

    thread = threading.Thread(target=work, name="pgmm-generate", daemon=True)
    thread.start()
    try:
        yield from pieces
    finally:
        thread.join()
