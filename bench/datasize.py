"""Peak memory of `kubetune run` on a large synthetic dataset (issue 7, item 6).

`kubetune run job.yaml -o DIR --no-model -q` with dataset.synthetic regression 200,000 x 50
(X float64 = 80 MB), Ridge over alpha, 4 random trials x 5 folds, parallelism 2. The process and
all its descendants (the loky workers) are sampled every 20 ms from /proc: the peak of the summed
RSS (shared pages, such as the memory-mapped data, counted once per process) and of the summed
PSS (/proc/PID/smaps_rollup: shared pages split between the processes that map them; the
whole tree's real footprint). The same run on 2,000 rows gives the fixed cost of the processes
(interpreters and imports), which the data does not change.

Side by side, the yardstick a user would write in a notebook: ``RandomizedSearchCV(Ridge(),
alpha log-uniform, n_iter=4, cv=5, n_jobs=2, refit=False)`` on ``make_regression`` of the same
shape, measured the same way, so the ratio kubetune / scikit-learn shows what kubetune adds.

    python bench/datasize.py [--rows 200000] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import Report
from grid_vs_gridsearchcv import console_script

GOAL_FACTOR = 3.0
FEATURES = 50
MiB = 1024 * 1024


def job_document(rows: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": "bench-datasize"},
        "spec": {
            "estimator": {"name": "Ridge"},
            "dataset": {
                "synthetic": {
                    "task": "regression",
                    "samples": rows,
                    "features": FEATURES,
                    "seed": 0,
                }
            },
            "parameters": [{"name": "alpha", "float": {"low": 1e-3, "high": 1e3, "log": True}}],
            "search": {"method": "random", "trials": 4, "parallelism": 2, "seed": 0},
            "cv": {"folds": 5},
        },
    }


# The yardstick, run as `python -c SKLEARN ROWS`.
SKLEARN = """
import sys, warnings
from scipy.stats import loguniform
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, RandomizedSearchCV
warnings.simplefilter("ignore")
X, y = make_regression(n_samples=int(sys.argv[1]), n_features=50, n_informative=10,
                       noise=1.0, random_state=0)
search = RandomizedSearchCV(Ridge(), {"alpha": loguniform(1e-3, 1e3)}, n_iter=4,
                            cv=KFold(5, shuffle=True, random_state=0), n_jobs=2, refit=False,
                            random_state=0)
search.fit(X, y)
"""


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    tree = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += tree.get(pid, [])
    return out


def _kb(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_peak(command: list[str]) -> dict[str, Any]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = {"rss": 0, "pss": 0, "processes": 0, "rss_by_process": []}
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            pids = _tree(proc.pid)
            rss = [(p, _kb(f"/proc/{p}/status", "VmRSS")) for p in pids]
            total_rss = sum(r for _, r in rss)
            total_pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
            if total_pss > peak["pss"]:
                peak["pss"] = total_pss
            if total_rss > peak["rss"]:
                peak["rss"] = total_rss
                peak["processes"] = len(pids)
                peak["rss_by_process"] = [rss[0][1], *sorted((r for _, r in rss[1:]), reverse=True)]
            time.sleep(0.02)

    start = time.perf_counter()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    _, err = proc.communicate()
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {err}")
    peak["wall"] = time.perf_counter() - start
    return peak


def measure(rows: int) -> dict[str, Any]:
    script = console_script()
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as tmp:
        job = Path(tmp) / "job.yaml"
        job.write_text(yaml.safe_dump(job_document(rows), sort_keys=False))
        out = Path(tmp) / "out"
        result = sample_peak([script, "run", str(job), "-o", str(out), "--no-model", "-q"])
        shutil.rmtree(out, ignore_errors=True)
    result["rows"] = rows
    result["data_bytes"] = rows * FEATURES * 8
    result["tool"] = "kubetune"
    result["sklearn"] = sample_peak([sys.executable, "-c", SKLEARN, str(rows)])
    return result


def run_all(rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return measure(rows), measure(2000)


def report(big: dict[str, Any], small: dict[str, Any], rep: Report) -> list[dict[str, Any]]:
    data = big["data_bytes"]
    rows = []
    for r in (big, small):
        for tool, m in (("kubetune", r), ("RandomizedSearchCV", r["sklearn"])):
            rows.append(
                (
                    r["rows"],
                    tool,
                    f"{r['data_bytes'] / MiB:.1f}",
                    f"{m['pss'] / MiB:.0f}",
                    f"{m['rss'] / MiB:.0f}",
                    m["processes"],
                    " + ".join(f"{x / MiB:.0f}" for x in m["rss_by_process"]),
                    f"{m['wall']:.1f}",
                )
            )
    rep.table(
        [
            "rows x 50",
            "run",
            "X MiB",
            "peak PSS MiB (tree)",
            "peak RSS MiB (tree)",
            "processes",
            "RSS per process at peak MiB (main first)",
            "wall s",
        ],
        rows,
        caption="Item 6, kubetune run, Ridge, 4 trials x 5 folds, parallelism 2 (tree = the "
        "process and its descendants, sampled every 20 ms)",
    )
    factor = big["pss"] / data
    extra = (big["pss"] - small["pss"]) / data
    sk = big["sklearn"]
    sk_extra = (sk["pss"] - small["sklearn"]["pss"]) / data
    rep.line(
        f"kubetune: peak PSS / X size = {factor:.2f}; minus the 2,000-row run's peak (fixed cost "
        f"of the processes, {small['pss'] / MiB:.0f} MiB): {extra:.2f} x X; summed RSS / X = "
        f"{big['rss'] / data:.2f}"
    )
    rep.line(
        f"RandomizedSearchCV: peak PSS / X size = {sk['pss'] / data:.2f}; minus its 2,000-row "
        f"peak ({small['sklearn']['pss'] / MiB:.0f} MiB): {sk_extra:.2f} x X"
    )
    rep.line(
        f"ratio kubetune / RandomizedSearchCV, peak PSS: {big['pss'] / sk['pss']:.2f} at "
        f"{big['rows']:,} rows, {small['pss'] / small['sklearn']['pss']:.2f} at "
        f"{small['rows']:,} rows"
    )
    return [
        {
            "item": "6",
            "goal": f"peak memory of the process tree <= {GOAL_FACTOR:g} x dataset (PSS)",
            "figure": f"{factor:.2f} x ({big['pss'] / MiB:.0f} MiB for {data / MiB:.0f} MiB; "
            f"data-dependent part {extra:.2f} x)",
            "held": factor <= GOAL_FACTOR,
        },
        {
            "item": "6",
            "goal": "peak memory (PSS) no more than RandomizedSearchCV's on the same data",
            "figure": f"ratio {big['pss'] / sk['pss']:.2f} ({big['pss'] / MiB:.0f} MiB vs "
            f"{sk['pss'] / MiB:.0f} MiB)",
            "held": big["pss"] <= sk["pss"],
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    rep = Report("Data size")
    big, small = run_all(args.rows)
    for g in report(big, small, rep):
        rep.line(f"{g['goal']}: {g['figure']} -> {'held' if g['held'] else 'missed'}")
    if args.markdown:
        rep.write_markdown(args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
