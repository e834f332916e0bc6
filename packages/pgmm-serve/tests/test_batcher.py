"""The batcher's rules, with a batch function whose timing the test controls (no model, no HTTP)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pgmm_serve.batcher import Batcher, QueueFull


class Recorder:
    """A batch function that records each call and, while ``gate`` is closed, holds the model thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, list]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, key, items):
        self.calls.append((key, list(items)))
        self.entered.set()
        assert self.gate.wait(10)
        if any(item == "poison" for item in items):
            raise ValueError("poison in the batch")
        return [f"{key}:{item}" for item in items]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_requests_arriving_together_share_one_call_by_key_in_order():
    recorder = Recorder()

    async def main():
        batcher = Batcher(recorder, max_batch_size=3, max_wait=0.05, max_queue=16)
        await batcher.start()
        items = [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 6)]
        results = await asyncio.gather(*(batcher.submit(k, i) for k, i in items))
        await batcher.stop()
        return results, batcher.stats

    results, stats = run(main())
    assert results == ["a:1", "b:2", "a:3", "a:4", "a:5", "b:6"]
    assert recorder.calls == [("a", [1, 3, 4]), ("b", [2, 6]), ("a", [5])]  # oldest key first, 3 at most
    assert (stats.batches, stats.jobs, stats.largest) == (3, 6, 3)


def test_max_batch_size_one_runs_every_request_alone():
    recorder = Recorder()

    async def main():
        batcher = Batcher(recorder, max_batch_size=1, max_wait=0.05, max_queue=16)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit("k", i) for i in range(4)))
        await batcher.stop()
        return results

    assert run(main()) == ["k:0", "k:1", "k:2", "k:3"]
    assert [items for _, items in recorder.calls] == [[0], [1], [2], [3]]


def test_a_full_queue_refuses_with_retry_after_and_a_cancelled_request_frees_its_slot():
    recorder = Recorder()
    recorder.gate.clear()  # the first batch holds the model thread

    async def main():
        batcher = Batcher(recorder, max_batch_size=1, max_wait=0, max_queue=3)
        await batcher.start()
        running = asyncio.create_task(batcher.submit("k", "first"))
        await asyncio.to_thread(recorder.entered.wait, 5)
        waiting = [asyncio.create_task(batcher.submit("k", name)) for name in ("second", "third")]
        await asyncio.sleep(0.01)
        assert batcher.admitted == 3
        with pytest.raises(QueueFull) as full:
            await batcher.submit("k", "fourth")
        assert full.value.retry_after >= 1
        with pytest.raises(QueueFull):
            batcher.refuse_if_full()  # what the API asks before reading an upload
        waiting[0].cancel()  # its client went away
        await asyncio.sleep(0.01)
        assert batcher.admitted == 2
        batcher.refuse_if_full()
        fifth = asyncio.create_task(batcher.submit("k", "fifth"))  # takes the freed slot
        await asyncio.sleep(0.01)
        recorder.gate.set()
        results = await asyncio.gather(running, waiting[1], fifth)
        assert batcher.admitted == 0
        await batcher.stop()
        return results

    assert run(main()) == ["k:first", "k:third", "k:fifth"]
    assert "second" not in [item for _, items in recorder.calls for item in items]  # never reached the model


def test_a_failing_batch_is_retried_one_by_one_so_only_the_bad_request_fails():
    recorder = Recorder()
    recorder.gate.clear()

    async def main():
        batcher = Batcher(recorder, max_batch_size=4, max_wait=0, max_queue=16)
        await batcher.start()
        blocker = asyncio.create_task(batcher.submit("k", "blocker"))
        await asyncio.to_thread(recorder.entered.wait, 5)
        tasks = [asyncio.create_task(batcher.submit("k", item)) for item in ("x", "poison", "y")]
        await asyncio.sleep(0.01)
        recorder.gate.set()
        results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        await batcher.stop()
        return results

    blocker, x, poison, y = run(main())
    assert (blocker, x, y) == ("k:blocker", "k:x", "k:y")
    assert isinstance(poison, ValueError)
    assert [items for _, items in recorder.calls][1:] == [["x", "poison", "y"], ["x"], ["poison"], ["y"]]


def test_a_stream_yields_pieces_in_order_and_closing_early_frees_the_slot():
    def produce(n):
        def pieces():
            for i in range(n):
                yield f"{i} "
        return pieces

    async def main():
        batcher = Batcher(Recorder(), max_batch_size=2, max_wait=0, max_queue=2)
        await batcher.start()
        whole = [piece async for piece in batcher.stream(produce(5))]
        stream = batcher.stream(produce(1000))
        first = None
        async for piece in stream:
            first = piece
            break
        stream.close()
        assert batcher.admitted == 0
        unread = batcher.stream(produce(3))  # admitted, never read (a client gone before the answer began)
        unread.close()
        assert batcher.admitted == 0
        await batcher.stop()
        return whole, first

    whole, first = run(main())
    assert whole == ["0 ", "1 ", "2 ", "3 ", "4 "] and first == "0 "


def test_a_lone_client_never_waits_for_partners_but_company_is_waited_for():
    import time

    recorder = Recorder()

    async def main():
        batcher = Batcher(recorder, max_batch_size=4, max_wait=0.5, max_queue=16)
        await batcher.start()
        started = time.perf_counter()
        alone = [await batcher.submit("k", i) for i in range(3)]  # one after another: nobody to wait for
        lone_seconds = time.perf_counter() - started
        pair = await asyncio.gather(batcher.submit("k", "a"), batcher.submit("k", "b"))
        late = asyncio.create_task(batcher.submit("k", "late"))  # company expected after a batch of two
        await asyncio.sleep(0.05)
        early = await asyncio.gather(batcher.submit("k", "early"), late)
        await batcher.stop()
        return alone, lone_seconds, pair, early

    alone, lone_seconds, pair, early = run(main())
    assert alone == ["k:0", "k:1", "k:2"] and lone_seconds < 0.4
    assert pair == ["k:a", "k:b"] and early == ["k:early", "k:late"]
    assert [items for _, items in recorder.calls] == [[0], [1], [2], ["a", "b"], ["late", "early"]]


def test_a_stream_left_early_is_closed_in_the_model_thread_before_the_next_job():
    order: list[str] = []
    recorder = Recorder()

    def produce():
        try:
            for i in range(10_000):
                yield str(i)
        finally:
            order.append(f"closed in {threading.current_thread().name}")

    def batch(key, items):
        order.append("next job")
        return recorder(key, items)

    async def main():
        batcher = Batcher(batch, max_batch_size=1, max_wait=0, max_queue=4)
        await batcher.start()
        stream = batcher.stream(produce)
        async for _ in stream:
            break
        stream.close()
        result = await batcher.submit("k", 1)
        await batcher.stop()
        return result

    assert run(main()) == "k:1"
    assert order[0].startswith("closed in pgmm-model") and order[1:] == ["next job"]
