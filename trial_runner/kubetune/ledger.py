"""The trial ledger: optuna's journal kept outside the pod, in ConfigMaps owned by the TuningJob.

Why ConfigMaps: no database server to run, garbage-collected with the TuningJob, readable with
`kubectl`. Each finished trial appends its journal lines as one new data key (a merge patch that
carries only that key), so the history is never rewritten. A ConfigMap holds at most about
900 KB; the ledger then starts the next one, up to ``max_chunks``, and past that it fails with a
clear message instead of losing trials.

One writer at a time (a stage's single pod), so the logs are kept in memory after one read at
start, and optuna's frequent re-reads cost nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from optuna.storages.journal import BaseJournalBackend

CHUNK_BYTES = 900_000
MAX_CHUNKS = 64
KEY_DIGITS = 10


class LedgerFull(Exception):
    """The ledger reached its capacity; the message says how much and what to do."""


class ConfigMapStore(Protocol):
    """ConfigMap access, by name, in one namespace (the cluster's or an in-memory one)."""

    def read(self, name: str) -> dict[str, str] | None: ...

    def create(self, name: str, data: dict[str, str]) -> None: ...

    def add(self, name: str, data: dict[str, str]) -> None: ...


def chunk_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index}"


class ConfigMapJournal(BaseJournalBackend):
    """An optuna journal backend on ConfigMaps named ``prefix-0``, ``prefix-1``, ...

    ``append_logs`` only collects; ``flush`` writes what was collected as one key. The engine
    flushes after every finished trial, so a killed pod loses no finished trial.
    """

    def __init__(
        self,
        *,
        store: ConfigMapStore,
        prefix: str,
        chunk_bytes: int = CHUNK_BYTES,
        max_chunks: int = MAX_CHUNKS,
    ) -> None:
        self.store, self.prefix = store, prefix
        self.chunk_bytes, self.max_chunks = chunk_bytes, max_chunks
        self._logs: list[dict[str, Any]] = []
        self._pending: list[str] = []
        self._chunk = 0
        self._chunk_size = 0
        self._exists = False
        self.bytes_written = 0
        self.writes = 0
        self._load()

    def _load(self) -> None:
        index = 0
        while (data := self.store.read(chunk_name(self.prefix, index))) is not None:
            self._chunk, self._exists = index, True
            self._chunk_size = sum(len(k) + len(v) for k, v in data.items())
            for key in sorted(data):
                self._logs += [json.loads(line) for line in data[key].splitlines() if line]
            index += 1

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return list(self._logs[log_number_from:])

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._logs += logs
        self._pending += [json.dumps(log, separators=(",", ":")) for log in logs]

    def flush(self) -> None:
        """Write the collected lines as one new key of the current (or a new) ConfigMap."""
        if not self._pending:
            return
        first = len(self._logs) - len(self._pending)
        text = "\n".join(self._pending) + "\n"
        key = f"{first:0{KEY_DIGITS}d}"
        size = len(key) + len(text)
        if size > self.chunk_bytes:
            raise LedgerFull(f"one trial's journal is {size} bytes, more than a ConfigMap holds")
        if self._exists and self._chunk_size + size > self.chunk_bytes:
            self._chunk, self._exists, self._chunk_size = self._chunk + 1, False, 0
        if self._chunk >= self.max_chunks:
            raise LedgerFull(
                f"the trial ledger is full ({self.max_chunks} ConfigMaps of "
                f"{self.chunk_bytes // 1000} KB, {len(self._logs)} journal entries); "
                "split the search into several TuningJobs"
            )
        name = chunk_name(self.prefix, self._chunk)
        if self._exists:
            self.store.add(name, {key: text})
        else:
            self.store.create(name, {key: text})
            self._exists = True
        self._chunk_size += size
        self._pending = []
        self.bytes_written += size
        self.writes += 1


class MemoryStore:
    """ConfigMaps in a dict: for tests and benchmarks."""

    def __init__(self) -> None:
        self.maps: dict[str, dict[str, str]] = {}

    def read(self, name: str) -> dict[str, str] | None:
        data = self.maps.get(name)
        return None if data is None else dict(data)

    def create(self, name: str, data: dict[str, str]) -> None:
        if name in self.maps:
            raise FileExistsError(name)
        self.maps[name] = dict(data)

    def add(self, name: str, data: dict[str, str]) -> None:
        self.maps[name].update(data)
