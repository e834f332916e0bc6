"""Requests that arrive together are generated together: one worker, a bounded queue, one model thread.

Each request becomes a :class:`Job` with a *key* (what must be equal for two requests to share a
``generate`` call: the task, the prompt and the generation settings) and an *item* (its image and
text). The worker takes the oldest job, then every queued job with the same key, waiting at most
``max_wait`` for more to arrive (when others are about), up to ``max_batch_size``, and hands the
batch to ``run_batch`` in the model thread. While a batch runs, new requests queue up, so under
load batches fill without any waiting. Jobs with other keys keep their place in the queue.

Slots: at most ``max_queue`` jobs are admitted (queued or running); one more raises
:class:`QueueFull` (the API answers 503 with ``Retry-After``). A request whose client goes away is
cancelled: its slot is freed at once, and it is dropped from the queue before it reaches the model.

A batch that raises is retried one job at a time, so a request the model cannot handle fails alone
and the others still get their results. Streamed jobs (:meth:`Batcher.stream`) run alone, piece by
piece, in the same model thread, so the model is only ever used by one thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """Every slot is taken; ``retry_after`` is a suggested wait in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the request queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    key: Hashable | None  # None: a streamed job, run alone
    item: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchStats:
    """What the worker did so far: batches run, jobs in them, the largest batch; for /v1/model and tests."""

    batches: int
    jobs: int
    largest: int


class PieceStream:
    """The pieces of one streamed job, in order; :meth:`close` frees its slot (once, whatever happens)."""

    END = object()

    def __init__(self, batcher: Batcher, job: Job, pieces: asyncio.Queue, stop: threading.Event) -> None:
        self.batcher = batcher
        self.job = job
        self.pieces = pieces
        self.stop = stop
        self.closed = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        try:
            await self.job.future  # the worker has handed the generator to the model thread
            while True:
                piece = await self.pieces.get()
                if piece is self.END:
                    return
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stop.set()
            self.job.future.cancel()
            self.batcher._release()


class Batcher:
    """The queue and the worker. ``run_batch(key, items) -> results`` runs in the model thread and
    returns one result per item, in order."""

    def __init__(self, run_batch: Callable[[Hashable, list[Any]], list[Any]], *, max_batch_size: int = 8,
                 max_wait: float = 0.01, max_queue: int = 64) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError("max_batch_size and max_queue must be at least 1, max_wait at least 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.admitted = 0  # jobs holding a slot: queued or running
        self._queue: deque[Job] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgmm-model")
        self._batches = 0
        self._jobs = 0
        self._largest = 0
        self._last_size = 0
        self._seconds_per_job = 0.05  # running estimate, for Retry-After

    # --- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name="pgmm-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for job in self._queue:
            job.future.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def stats(self) -> BatchStats:
        return BatchStats(self._batches, self._jobs, self._largest)

    # --- submitting ---------------------------------------------------------------------------------

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue one item and wait for its result. Cancelling the caller frees the slot."""
        job = self._admit(key, item)
        try:
            return await job.future
        finally:
            job.future.cancel()  # no-op once done; drops a job whose caller was cancelled
            self.admitted -= 1

    def stream(self, produce: Callable[[], Iterator[str]]) -> PieceStream:
        """Admit ``produce()`` (a generator of text pieces) now — :class:`QueueFull` is raised here,
        before any answer starts — to run alone in the model thread; iterate the returned stream for
        its pieces. Closing the stream (or leaving its loop early) stops the generator at its next
        piece and frees the slot."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def run() -> None:
            generator = produce()
            try:
                for piece in generator:
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
                    if stop.is_set():
                        break
                loop.call_soon_threadsafe(pieces.put_nowait, PieceStream.END)
            except BaseException as exc:  # delivered to the reader; the server goes on
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
                raise
            finally:
                # closed here, in the model thread: a generator that generates in a thread of its own
                # (pgmm-core's stream_generation) waits for it, so the model is never used twice at once
                getattr(generator, "close", lambda: None)()

        return PieceStream(self, self._admit(None, run), pieces, stop)

    def _release(self) -> None:
        self.admitted -= 1

    def refuse_if_full(self) -> None:
        """Raise :class:`QueueFull` now if every slot is taken: the API checks before it reads and
        decodes an upload, so a flood of requests costs no decoding (admission itself is in ``submit``)."""
        if self.admitted >= self.max_queue:
            raise QueueFull(self._retry_after())

    def _admit(self, key: Hashable | None, item: Any) -> Job:
        if self._arrived is None:
            raise RuntimeError("Batcher.start() was not awaited")
        if self.admitted >= self.max_queue:
            raise QueueFull(self._retry_after())
        self.admitted += 1
        job = Job(key, item, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._arrived.set()
        return job

    def _retry_after(self) -> int:
        """Time to work through the queue at the measured speed, in whole seconds (at least 1)."""
        return max(1, round(self.admitted * self._seconds_per_job / self.max_batch_size + 0.5))

    # --- the worker ---------------------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next_job()
            if first.key is None:
                await self._run_streamed(loop, first)
                continue
            batch = await self._gather(first)
            if batch:
                await self._run(loop, first.key, batch)

    async def _next_job(self) -> Job:
        while True:
            while self._queue:
                job = self._queue.popleft()
                if not job.future.cancelled():
                    return job
            self._arrived.clear()
            await self._arrived.wait()

    async def _gather(self, first: Job) -> list[Job]:
        """``first`` and the queued jobs with its key, waiting up to ``max_wait`` for more — but only
        when company is likely: other requests are in the server, or the last batch had several. A
        lone client's requests thus never wait for partners that will not come."""
        batch = [first]
        company = self.admitted > 1 or self._last_size > 1
        deadline = time.perf_counter() + (self.max_wait if company else 0.0)
        while len(batch) < self.max_batch_size:
            for job in list(self._queue):
                if len(batch) >= self.max_batch_size:
                    break
                if job.key == first.key:
                    self._queue.remove(job)
                    if not job.future.cancelled():
                        batch.append(job)
            remaining = deadline - time.perf_counter()
            if len(batch) >= self.max_batch_size or remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return [job for job in batch if not job.future.cancelled()]  # cancelled while we waited

    async def _run(self, loop: asyncio.AbstractEventLoop, key: Hashable, batch: list[Job]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, key, [j.item for j in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            outcomes: list[tuple[Any, BaseException | None]] = [(r, None) for r in results]
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [(None, exc)]
            else:  # one at a time: a request the model cannot handle fails alone
                logger.warning("a batch of %d failed (%s: %s); running its requests one by one",
                               len(batch), type(exc).__name__, exc)
                outcomes = [await self._run_one(loop, key, job) for job in batch]
        elapsed = time.perf_counter() - started
        self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * elapsed * self.max_batch_size / len(batch)
        self._batches += 1
        self._jobs += len(batch)
        self._largest = max(self._largest, len(batch))
        self._last_size = len(batch)
        for job, (result, error) in zip(batch, outcomes):
            if job.future.done():
                continue  # its client went away meanwhile
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    async def _run_one(self, loop: asyncio.AbstractEventLoop, key: Hashable,
                       job: Job) -> tuple[Any, BaseException | None]:
        try:
            return (await loop.run_in_executor(self._executor, self.run_batch, key, [job.item]))[0], None
        except Exception as exc:
            return None, exc

    async def _run_streamed(self, loop: asyncio.AbstractEventLoop, job: Job) -> None:
        job.future.set_result(None)  # the caller starts reading pieces
        try:
            await loop.run_in_executor(self._executor, job.item)
        except Exception:
            pass  # already handed to the caller by the job itself
