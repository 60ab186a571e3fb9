"""Resuming an interrupted `kubetune run`: the trial journal kept in the output folder.

While a run goes, every finished trial is appended to ``journal.log`` in the output folder
(optuna's journal file, the same journal format as the cluster's trial ledger), and
``journal.json`` records which resource it belongs to and the seed. A run that ends, in
success or failure, removes both. A run that was stopped (Ctrl-C, a killed process) leaves
them, and the next run of the same YAML into the same folder picks up there: finished trials
are kept, not fitted again, and with the recorded seed every stage proposes what the first run
would have.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

JOURNAL = "journal.log"
RUN_INFO = "journal.json"


class CheckpointError(Exception):
    """The output folder holds an interrupted run that this one cannot continue."""


def spec_digest(document: dict[str, Any]) -> str:
    """sha256 of the resource's kind, name and spec, as written (key order aside)."""
    key = {
        "kind": document.get("kind"),
        "name": (document.get("metadata") or {}).get("name"),
        "spec": document.get("spec"),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Interrupted:
    """What ``journal.json`` says of the interrupted run."""

    seed: int
    dataset_fingerprint: str | None


def find_interrupted(*, folder: Path, document: dict[str, Any]) -> Interrupted | None:
    """The interrupted run of this resource in ``folder``, if there is one.

    Raises:
        CheckpointError: the folder holds an interrupted run of another spec.
    """
    info_path = folder / RUN_INFO
    if not (folder / JOURNAL).exists() or not info_path.exists():
        return None
    try:
        info = json.loads(info_path.read_text())
        seed, digest = int(info["seed"]), str(info["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"{folder}: {RUN_INFO} of an interrupted run is unreadable; "
            "pass --restart to start over"
        ) from None
    if digest != spec_digest(document):
        raise CheckpointError(
            f"{folder} holds an interrupted run of a different spec; pass --restart to "
            "discard it, or choose another --output"
        )
    return Interrupted(seed=seed, dataset_fingerprint=info.get("dataset"))


def open_journal(
    *, folder: Path, document: dict[str, Any], seed: int, dataset: str | None
) -> optuna.storages.JournalStorage:
    """The journal this run appends its trials to (an existing one is continued)."""
    # optuna is imported here, not above: `kubetune run` looks for a checkpoint before its
    # heavy imports, while its worker processes start.
    import optuna

    info = {"spec": spec_digest(document), "seed": seed, "dataset": dataset}
    (folder / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return optuna.storages.JournalStorage(_file_journal(folder / JOURNAL))


def _file_journal(path: Path) -> Any:
    """An optuna journal backend that appends to one file, for one writer: this run.

    optuna's own ``JournalFileBackend`` serves several processes: it takes a file lock and
    reads the file again on every storage read, which cost 3.4 ms per trial here (1,000
    DummyClassifier trials: 8.8 s, against 6.3 s with this one and 5.4 s with no journal). One
    writer needs neither: the log is kept in memory and each append opens the file, writes and
    closes it, so a killed run keeps every finished trial and no handle is left open when the
    journal is discarded (Windows cannot delete an open file).
    """
    from optuna.storages.journal import BaseJournalBackend

    class FileJournal(BaseJournalBackend):
        def __init__(self) -> None:
            self._logs: list[dict[str, Any]] = []
            if not path.exists():
                return
            text = path.read_bytes()
            whole = 0  # bytes of complete, readable lines
            for line in text.splitlines(keepends=True):
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError
                    self._logs.append(json.loads(line))
                except ValueError:  # a line cut short by a kill: that trial never ended
                    break
                whole += len(line)
            if whole < len(text):  # drop it, or the next line would be appended to it
                with path.open("r+b") as file:
                    file.truncate(whole)

        def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
            return self._logs[log_number_from:]

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            self._logs += logs
            with path.open("a") as file:
                file.write("".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs))

    return FileJournal()


def finished_trials(storage: optuna.storages.BaseStorage) -> int:
    """Trials that ended (succeeded or failed) in every study of the journal."""
    import optuna
    from optuna.trial import TrialState

    ended = (TrialState.COMPLETE, TrialState.FAIL)
    return sum(
        len(optuna.load_study(study_name=name, storage=storage).get_trials(False, states=ended))
        for name in optuna.get_all_study_names(storage)
    )


def discard(folder: Path) -> None:
    """Forget the journal: the run ended, or the user asked to start over."""
    for name in (JOURNAL, RUN_INFO):
        (folder / name).unlink(missing_ok=True)
