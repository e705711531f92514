"""AdmissionGate on its own: FIFO hand-over, immediate rejection, queue timeout, cancels."""

from __future__ import annotations

import asyncio
import time

import pytest

from gpt4all_api.services.admission import Admission, AdmissionGate, QueueFull, QueueTimeout


def test_fifo_order_and_hand_over() -> None:
    async def main() -> list[int]:
        gate = AdmissionGate("m", capacity=1, max_queue=10, timeout=None)
        order: list[int] = []
        first = await gate.acquire()

        async def user(i: int) -> None:
            slot = await gate.acquire()
            order.append(i)
            await asyncio.sleep(0)
            slot.release()

        tasks = [asyncio.create_task(user(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        assert gate.waiting == 5 and gate.running == 1
        first.release()
        await asyncio.gather(*tasks)
        assert gate.waiting == 0 and gate.running == 0
        return order

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_full_queue_rejects_at_once_without_touching_the_queued() -> None:
    async def main() -> None:
        gate = AdmissionGate("m", capacity=1, max_queue=2, timeout=None)
        held = await gate.acquire()
        queued = [asyncio.create_task(gate.acquire()) for _ in range(2)]
        await asyncio.sleep(0.01)
        started = time.monotonic()
        for _ in range(100):
            with pytest.raises(QueueFull) as info:
                await gate.acquire()
        assert time.monotonic() - started < 0.5
        assert info.value.status_code == 429 and info.value.code == "queue_full"
        assert int(info.value.headers["Retry-After"]) >= 1
        assert gate.waiting == 2
        held.release()
        slot = await queued[0]
        slot.release()
        (await queued[1]).release()
        assert gate.running == 0

    asyncio.run(main())


def test_queue_timeout_skips_the_request_and_keeps_the_order() -> None:
    async def main() -> None:
        gate = AdmissionGate("m", capacity=1, max_queue=5, timeout=0.1)
        held = await gate.acquire()
        started = time.monotonic()
        with pytest.raises(QueueTimeout) as info:
            await gate.acquire()
        assert 0.09 <= time.monotonic() - started < 1.0
        assert info.value.status_code == 503 and info.value.code == "queue_timeout"
        assert gate.waiting == 0
        held.release()
        (await gate.acquire()).release()
        assert gate.running == 0

    asyncio.run(main())


def test_cancelled_waiter_leaves_the_queue() -> None:
    async def main() -> None:
        gate = AdmissionGate("m", capacity=1, max_queue=1, timeout=None)
        held = await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0
        nxt = asyncio.create_task(gate.acquire())  # the place is free again
        await asyncio.sleep(0.01)
        held.release()
        (await nxt).release()
        assert gate.running == 0

    asyncio.run(main())


def test_slot_handed_over_as_the_waiter_gives_up_is_passed_on() -> None:
    async def main() -> None:
        gate = AdmissionGate("m", capacity=1, max_queue=5, timeout=None)
        held = await gate.acquire()
        a = asyncio.create_task(gate.acquire())
        b = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.01)
        held.release()  # hands the slot to a ...
        a.cancel()  # ... which is cancelled before it runs: b must get the slot
        with pytest.raises(asyncio.CancelledError):
            await a
        (await asyncio.wait_for(b, 1)).release()
        assert gate.running == 0 and gate.waiting == 0

    asyncio.run(main())


def test_release_is_idempotent_and_unlimited_gates_never_queue() -> None:
    async def main() -> None:
        gate = AdmissionGate("m", capacity=2, max_queue=0, timeout=None)
        s1, s2 = await gate.acquire(), await gate.acquire()
        with pytest.raises(QueueFull):
            await gate.acquire()
        s1.release()
        s1.release()
        assert gate.running == 1
        s2.release()
        assert gate.running == 0
        free = AdmissionGate("m", capacity=None, max_queue=0, timeout=None)
        slots = [await free.acquire() for _ in range(50)]
        assert free.waiting == 0
        for s in slots:
            s.release()

    asyncio.run(main())


def test_admission_keeps_one_gate_per_model() -> None:
    admission = Admission(max_queue=3, timeout=None)
    assert admission.gate("a", 1) is admission.gate("a", 1)
    assert admission.gate("a", 1) is not admission.gate("b", 1)
    assert sorted(admission.snapshot()) == [("a", 0, 0), ("b", 0, 0)]
