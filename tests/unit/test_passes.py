"""The edge of every reconcile: one pass per resource at a time, a few at once, events coalesced,
and an event's pass retried on a busy API (kopf never retries an event's handler).

These drive ``handlers._pass`` directly with a stand-in for the API client, so that the order of
events (a pass queued, a pass reading, a pass cancelled) is set by the test, not by timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from kubetune_operator import handlers
from kubetune_operator.children import LABEL_COMPARISON, LABEL_TUNINGJOB
from kubetune_operator.kube import Retryable
from kubetune_operator.metrics import Metrics
from kubetune_operator.planner import Meta

pytestmark = pytest.mark.unit


class FakeKube:
    """``get`` answers a body; while ``gate`` is set, each read waits for it to open."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.reading = 0
        self.most_reading = 0
        self.gate: asyncio.Event | None = None

    async def get(self, *, kind: str, namespace: str, name: str) -> dict[str, Any]:
        self.reads.append(name)
        self.reading += 1
        self.most_reading = max(self.most_reading, self.reading)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
        finally:
            self.reading -= 1
        return {"metadata": {"name": name, "namespace": namespace, "uid": "u"}}


def _memo(slots: int = handlers.PASSES_AT_ONCE) -> kopf.Memo:
    return kopf.Memo(
        kube=FakeKube(),
        locks={},
        queued={},
        passes=asyncio.Semaphore(slots),
        metrics=Metrics(),
    )


def _coalesced(memo: kopf.Memo) -> float:
    return float(memo.metrics.reconcile_coalesced.labels(kind="TuningJob")._value.get())


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def _run(memo: kopf.Memo, name: str, seen: list[str], *, coalesce: bool) -> Any:
    async def reconcile(body: dict[str, Any], meta: Meta) -> None:
        seen.append(meta.name)

    return handlers._pass(memo, "TuningJob", name, "ns", reconcile, retry=0, coalesce=coalesce)


def test_an_event_while_a_pass_is_queued_runs_no_pass_of_its_own() -> None:
    async def scenario() -> None:
        memo, seen = _memo(), []
        lock = handlers._lock(memo, "TuningJob", Meta(name="a", namespace="ns", uid=""))
        await lock.acquire()  # a pass of "a" in progress: the next one queues
        queued = asyncio.create_task(_run(memo, "a", seen, coalesce=False))
        await _settle()
        for _ in range(3):  # three watch events while that pass has not read yet
            await asyncio.wait_for(_run(memo, "a", seen, coalesce=True), timeout=1)
        other = asyncio.create_task(_run(memo, "b", seen, coalesce=True))  # another resource
        lock.release()
        await asyncio.wait_for(asyncio.gather(queued, other), timeout=5)
        assert sorted(memo.kube.reads) == ["a", "b"]
        assert sorted(seen) == ["a", "b"]
        assert _coalesced(memo) == 3
        assert memo.queued == {}

    asyncio.run(scenario())


def test_an_event_after_the_pass_has_read_gets_a_pass_of_its_own() -> None:
    async def scenario() -> None:
        memo, seen = _memo(), []
        memo.kube.gate = asyncio.Event()
        first = asyncio.create_task(_run(memo, "a", seen, coalesce=True))
        await _settle()
        assert memo.kube.reads == ["a"]  # the first pass is reading: the event below is newer
        second = asyncio.create_task(_run(memo, "a", seen, coalesce=True))
        await _settle()
        assert not second.done()
        memo.kube.gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
        assert memo.kube.reads == ["a", "a"] and seen == ["a", "a"]
        assert _coalesced(memo) == 0

    asyncio.run(scenario())


def test_a_queued_pass_cancelled_before_it_read_does_not_swallow_later_events() -> None:
    async def scenario() -> None:
        memo, seen = _memo(), []
        lock = handlers._lock(memo, "TuningJob", Meta(name="a", namespace="ns", uid=""))
        await lock.acquire()
        queued = asyncio.create_task(_run(memo, "a", seen, coalesce=False))
        await _settle()
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        lock.release()
        assert memo.queued == {}
        await asyncio.wait_for(_run(memo, "a", seen, coalesce=True), timeout=5)
        assert memo.kube.reads == ["a"] and seen == ["a"]

    asyncio.run(scenario())


def test_at_most_the_slots_read_at_once_across_resources() -> None:
    async def scenario() -> None:
        memo, seen = _memo(slots=2), []
        memo.kube.gate = asyncio.Event()
        passes = [asyncio.create_task(_run(memo, f"r{i}", seen, coalesce=False)) for i in range(6)]
        await _settle()
        assert memo.kube.reading == 2
        memo.kube.gate.set()
        await asyncio.wait_for(asyncio.gather(*passes), timeout=5)
        assert memo.kube.most_reading == 2
        assert sorted(seen) == [f"r{i}" for i in range(6)]

    asyncio.run(scenario())


def _failing_first(failures: int, seen: list[str]) -> Any:
    calls = 0

    async def reconcile(body: dict[str, Any], meta: Meta) -> None:
        nonlocal calls
        calls += 1
        if calls <= failures:  # the API answers 429 to this pass's status patch
            raise Retryable(429, "Too Many Requests", 0.01)
        seen.append(meta.name)

    return reconcile


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "backoff", lambda retry, **_: 0.01)


@pytest.mark.usefixtures("quick_backoff")
def test_a_busy_api_fails_an_events_pass_only_after_retries_so_merged_events_are_kept() -> None:
    async def scenario() -> None:
        memo, seen = _memo(), []
        reconcile = _failing_first(1, seen)
        lock = handlers._lock(memo, "TuningJob", Meta(name="a", namespace="ns", uid=""))
        await lock.acquire()
        first = asyncio.create_task(
            handlers._pass(memo, "TuningJob", "a", "ns", reconcile, retry=0, coalesce=True)
        )
        await _settle()
        # A second event merges into the queued pass, which then meets a 429: kopf would not
        # retry an event's handler, so the pass must retry itself or the second event is lost.
        await handlers._pass(memo, "TuningJob", "a", "ns", reconcile, retry=0, coalesce=True)
        lock.release()
        await asyncio.wait_for(first, timeout=5)
        assert seen == ["a"] and memo.kube.reads == ["a", "a"]

    asyncio.run(scenario())


@pytest.mark.usefixtures("quick_backoff")
def test_an_events_pass_gives_up_after_its_retries_and_other_passes_leave_retries_to_kopf() -> None:
    async def scenario() -> None:
        memo, seen = _memo(), []
        with pytest.raises(kopf.TemporaryError):
            await handlers._pass(
                memo, "TuningJob", "a", "ns", _failing_first(99, seen), retry=0, coalesce=True
            )
        assert len(memo.kube.reads) == handlers.EVENT_RETRIES + 1
        memo.kube.reads.clear()
        with pytest.raises(kopf.TemporaryError):  # a create or the timer: kopf retries it
            await handlers._pass(
                memo, "TuningJob", "b", "ns", _failing_first(99, seen), retry=0, coalesce=False
            )
        assert memo.kube.reads == ["b"] and seen == [] and memo.queued == {}

    asyncio.run(scenario())


def test_while_an_events_pass_waits_to_retry_it_holds_nothing_and_later_events_merge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "backoff", lambda retry, **_: 30.0)  # a wait the test ends

    async def scenario() -> None:
        memo, seen = _memo(slots=1), []
        lock = handlers._lock(memo, "TuningJob", Meta(name="a", namespace="ns", uid=""))
        retrying = asyncio.create_task(
            handlers._pass(
                memo, "TuningJob", "a", "ns", _failing_first(1, seen), retry=0, coalesce=True
            )
        )
        for _ in range(100):  # until the 429 has come back and the backoff has begun
            await asyncio.sleep(0.01)
            if memo.kube.reads and not lock.locked() and not memo.passes.locked():
                break
        assert memo.kube.reads == ["a"] and not retrying.done()
        assert not lock.locked() and not memo.passes.locked()  # neither held while waiting
        await asyncio.wait_for(_run(memo, "b", seen, coalesce=False), timeout=1)  # slot free
        await asyncio.wait_for(_run(memo, "a", seen, coalesce=True), timeout=1)  # merges
        assert _coalesced(memo) == 1 and memo.kube.reads == ["a", "b"]
        retrying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await retrying
        assert memo.queued == {}  # a cancelled wait leaves nothing queued

    asyncio.run(scenario())


def test_only_watch_event_handlers_coalesce(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, bool] = {}

    async def fake_pass(memo: Any, kind: str, name: str, *_: Any, **kw: Any) -> None:
        calls[name] = kw.get("coalesce", False)

    monkeypatch.setattr(handlers, "_pass", fake_pass)
    memo = _memo()

    async def scenario() -> None:
        tj = {"memo": memo, "stage_jobs": {}, "namespace": "ns"}
        mc = {"memo": memo, "comparison_children": {}, "namespace": "ns"}
        await handlers.tuningjob_changed(name="changed", **tj)
        await handlers.tuningjob_resync(name="resync", status={}, **tj)
        await handlers.stage_reported(name="reported", type="MODIFIED", **tj)
        await handlers.stage_job_changed(labels={LABEL_TUNINGJOB: "job-event"}, **tj)
        await handlers.comparison_changed(name="mc-changed", **mc)
        await handlers.comparison_resync(name="mc-resync", status={}, **mc)
        await handlers.child_changed(labels={LABEL_COMPARISON: "child-event"}, **mc)

    asyncio.run(scenario())
    assert calls == {
        "changed": False,
        "resync": False,
        "reported": True,
        "job-event": True,
        "mc-changed": False,
        "mc-resync": False,
        "child-event": True,
    }
