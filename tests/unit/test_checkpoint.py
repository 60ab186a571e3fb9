"""The local run's trial journal: what a killed run leaves behind is read back whole."""

from __future__ import annotations

import json
from pathlib import Path

from kubetune import checkpoint
from kubetune.checkpoint import JOURNAL


def log(n: int) -> dict[str, int]:
    return {"op_code": 0, "n": n}


def test_a_line_cut_short_by_a_kill_is_dropped_before_appending(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    whole = "".join(json.dumps(log(n)) + "\n" for n in range(2))
    path.write_text(whole + '{"op_code": 0, "n"')  # the kill came mid-write
    journal = checkpoint._file_journal(path)
    assert journal.read_logs(0) == [log(0), log(1)]
    assert path.read_text() == whole
    journal.append_logs([log(2)])
    assert checkpoint._file_journal(path).read_logs(0) == [log(0), log(1), log(2)]


def test_a_whole_last_line_without_its_newline_is_also_dropped(tmp_path: Path) -> None:
    # The newline is written with the line: without it the write did not finish.
    path = tmp_path / JOURNAL
    path.write_text(json.dumps(log(0)) + "\n" + json.dumps(log(1)))
    assert checkpoint._file_journal(path).read_logs(0) == [log(0)]


def test_discard_removes_a_journal_that_was_appended_to(tmp_path: Path) -> None:
    # No file handle is held between appends (Windows cannot delete an open file).
    journal = checkpoint._file_journal(tmp_path / JOURNAL)
    journal.append_logs([log(0)])
    (tmp_path / checkpoint.RUN_INFO).write_text("{}")
    checkpoint.discard(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    journal.append_logs([log(1)])  # a later append (not expected) starts a new file
    assert checkpoint._file_journal(tmp_path / JOURNAL).read_logs(0) == [log(1)]
