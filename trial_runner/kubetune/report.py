"""What `kubetune run` shows: a live progress line and the final tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from kubetune.api.status import ModelComparisonStatus, StageStatus, TuningJobStatus
from kubetune.engine import JobRun
from kubetune.results import TrialRecord

BAR_WIDTH = 24


class ProgressBar:
    """One line redrawn in place on a terminal; on a pipe, a line per stage and every 10 s."""

    def __init__(self, *, runs: Sequence[JobRun], stream: TextIO | None = None) -> None:
        self.runs = list(runs)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def trial(self, run: JobRun, record: TrialRecord) -> None:
        interval = 0.1 if self.tty else 10.0
        if time.monotonic() - self._drawn >= interval:
            self._draw()

    def stage(self, run: JobRun, stage: StageStatus) -> None:
        best = "-" if stage.best_score is None else f"{stage.best_score:.4f}"
        who = f"{run.name} " if len(self.runs) > 1 else ""
        line = (
            f"{who}{stage.name}: {stage.phase.lower()}, {stage.trials.completed} completed, "
            f"{stage.trials.failed} failed, best {best}"
        )
        if stage.message:
            line += f" ({stage.message})"
        self._clear()
        print(line, file=self.stream, flush=True)
        self._draw()

    def close(self) -> None:
        self._clear()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        done = sum(len(r.records) for r in self.runs)
        planned = max(done, sum(r.counts().planned for r in self.runs)) or 1
        filled = int(BAR_WIDTH * done / planned)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        active = [r for r in self.runs if r.phase == "Running"]
        where = ", ".join(
            f"{r.name + ' ' if len(self.runs) > 1 else ''}{r.plan.name if r.plan else ''}"
            for r in active[:3]
        )
        best = [b for r in self.runs if (b := r.best_record()) is not None]
        metric = self.runs[0].metric
        top = max((b.mean(metric) for b in best), default=None)
        best_text = "-" if top is None else f"{top:.4f}"
        elapsed = time.monotonic() - self.started
        line = (
            f"[{bar}] {done}/{planned} trials | {where or 'finishing'} | "
            f"best {metric} {best_text} | {elapsed:.0f}s"
        )
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def tuning_summary(status: TuningJobStatus) -> str:
    rows = [
        (s.name, s.phase, s.trials.completed, s.trials.failed, s.best_score) for s in status.stages
    ]
    out = [table(rows, ["stage", "phase", "trials", "failed", "best"])]
    if status.best is not None:
        b = status.best
        params = ", ".join(f"{k}={v!r}" for k, v in b.params.items())
        out.append(
            f"\nbest {b.metric}: {b.score:.4f} ± {b.std:.4f} "
            f"(95% interval {b.interval95.low:.4f} to {b.interval95.high:.4f}), "
            f"trial {b.trial} in {b.stage}"
        )
        out.append(f"params: {params}")
        if b.metrics:
            out.append("also: " + ", ".join(f"{k} {v:.4f}" for k, v in b.metrics.items()))
    return "\n".join(out)


def comparison_summary(status: ModelComparisonStatus) -> str:
    rows = [
        (e.rank, e.model, e.estimator, e.phase, e.score, e.std, e.trials.completed)
        for e in status.ranking
    ]
    out = [table(rows, ["rank", "model", "estimator", "phase", "score", "std", "trials"])]
    sig = status.significance
    if sig is not None:
        p = "n/a (identical fold differences)" if sig.p_value is None else f"{sig.p_value:.4f}"
        verdict = "significant" if sig.significant else "not significant"
        out.append(
            f"\n{sig.winner} leads {sig.runner_up} by {sig.mean_difference:+.4f}: "
            f"p = {p}, {verdict} at alpha {sig.alpha} ({sig.test})"
        )
    return "\n".join(out)
