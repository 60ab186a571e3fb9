"""The `kubetune` command: exit codes and messages, over a corpus of bad YAML files.

Every file in ``bad/`` is one mistake a user makes. Its first lines say what the error must
contain (``# expect: <substring>``, one or more) and, optionally, the exit code (``# exit: N``,
2 by default). Each is run through ``kubetune validate`` and ``kubetune run --no-model``
in-process: nothing may print a traceback, and every problem is one ``error:`` line anchored to
the file or to a YAML field.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import cli, engine

pytestmark = pytest.mark.unit

HERE = Path(__file__).parent
BAD = HERE / "bad"
REPO = HERE.parent.parent
CORPUS = sorted(BAD.glob("*.yaml"))

# Where an error may point: the YAML file itself, or a field of the resource.
FIELD = re.compile(r"^(apiVersion|kind|metadata|spec|dataset|cv|scoring|preprocessing|search)\b")
ERROR_LINE = re.compile(r"^error: (?P<where>[^\s:]+): (?P<what>\S.*)$")


@dataclass(frozen=True)
class Case:
    path: Path
    expects: tuple[str, ...]
    exit: int


def read_case(path: Path) -> Case:
    """The ``# expect:`` and ``# exit:`` lines at the top of a corpus file."""
    expects: list[str] = []
    code = cli.EXIT_INPUT
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line.lstrip("# ").partition(":")
        if key == "expect":
            expects.append(value.strip())
        elif key == "exit":
            code = int(value)
    return Case(path=path, expects=tuple(expects), exit=code)


CASES = [read_case(p) for p in CORPUS]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_errors(out: str, err: str, *, file: Path) -> list[str]:
    """No traceback; stderr is nothing but ``error:`` lines, each naming the file or a field."""
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "expected at least one error line"
    for line in lines:
        match = ERROR_LINE.match(line)
        assert match, f"not a one-line 'error: WHERE: WHAT' message: {line!r}"
        where = match["where"]
        assert where == str(file) or FIELD.match(where), f"error names nothing concrete: {line!r}"
        assert len(line) < 500, f"error line too long to read: {line!r}"
    return lines


# --- the corpus -------------------------------------------------------------------------------


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 25
    numbers = [c.path.name.split("-")[0] for c in CASES]
    assert all(re.fullmatch(r"\d\d", n) for n in numbers), numbers
    assert len(set(numbers)) == len(numbers), "two corpus files share a number"
    for case in CASES:
        first = case.path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# expect: "), case.path.name
        assert all(case.expects), case.path.name


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_validate_rejects_bad_file(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "validate", str(case.path))
    assert code == case.exit, err
    assert out == ""
    lines = assert_clean_errors(out, err, file=case.path)
    for expected in case.expects:
        assert any(expected in line for line in lines), f"{expected!r} not in {lines}"


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_run_rejects_bad_file_before_any_output(
    case: Case, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", str(case.path), "--no-model", "-o", str(output))
    assert code == case.exit, err
    assert out == ""
    lines = assert_clean_errors(out, err, file=case.path)
    for expected in case.expects:
        assert any(expected in line for line in lines), f"{expected!r} not in {lines}"
    assert not output.exists(), "bad input must leave no results folder behind"


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("kubetune")
    found = str(script) if script.exists() else shutil.which("kubetune")
    if found is None:
        pytest.skip("the kubetune console script is not installed")
    bad = BAD / "13-fixed-param-typo.yaml"
    env = {**os.environ, "KUBETUNE_DEBUG": ""}
    for argv in (["validate", str(bad)], ["run", str(bad), "--no-model", "-o", str(tmp_path)]):
        done = subprocess.run(
            [found, *argv], capture_output=True, text=True, timeout=120, env=env, check=False
        )
        assert done.returncode == cli.EXIT_INPUT, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert done.stderr.splitlines() == [
            "error: spec.estimator.params.n_estimator: RandomForestClassifier has no parameter "
            "'n_estimator'; did you mean n_estimators?"
        ]


def test_console_script_freezes_the_heap_before_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    # The installed script is console(), which returns main's code and freezes the objects
    # alive so that the interpreter's final collection skips them.
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["kubetune"] == "kubetune.cli:console"
    calls: list[str] = []
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or cli.EXIT_FAILED)
    monkeypatch.setattr(cli.gc, "freeze", lambda: calls.append("freeze"))
    assert cli.console() == cli.EXIT_FAILED
    assert calls == ["main", "freeze"]


def test_bad_file_with_parallelism_exits_at_once_despite_warm_workers(tmp_path: Path) -> None:
    """`kubetune run` starts its workers before validating; a bad file still gives one line
    and an exit that does not wait on them."""
    script = Path(sys.executable).with_name("kubetune")
    found = str(script) if script.exists() else shutil.which("kubetune")
    if found is None:
        pytest.skip("the kubetune console script is not installed")
    document = yaml.safe_load((BAD / "13-fixed-param-typo.yaml").read_text())
    document["spec"]["search"]["parallelism"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [found, "run", str(bad), "--no-model", "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBETUNE_DEBUG": ""},
        check=False,
    )
    assert done.returncode == cli.EXIT_INPUT, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "n_estimator" in done.stderr


# --- the file itself --------------------------------------------------------------------------


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == cli.EXIT_INPUT
    assert assert_clean_errors(out, err, file=path) == [f"error: {path}: no such file"]


def test_directory_instead_of_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "validate", str(tmp_path))
    assert code == cli.EXIT_INPUT
    lines = assert_clean_errors(out, err, file=tmp_path)
    assert lines == [f"error: {tmp_path}: is a directory, expected a YAML file"]


def test_binary_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01\x80 not text")
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == cli.EXIT_INPUT
    assert assert_clean_errors(out, err, file=path) == [f"error: {path}: not a text file"]


def test_unreadable_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("kind: TuningJob\n")

    def denied(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == cli.EXIT_INPUT
    lines = assert_clean_errors(out, err, file=path)
    assert lines == [f"error: {path}: cannot read: Permission denied"]


def test_merge_keys_may_still_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Duplicate keys are rejected, but a key brought in by a YAML merge may be overridden.
    path = tmp_path / "merge.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            apiVersion: kubetune.io/v1alpha1
            kind: TuningJob
            metadata: {name: merged}
            spec:
              estimator: {name: LogisticRegression}
              dataset: {builtin: iris}
              cv: {folds: 5, shuffle: true}
              search:
                <<: {method: grid, seed: 1}
                method: random
                trials: 2
            """
        )
    )
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == cli.EXIT_OK, err
    assert "valid TuningJob 'merged'" in out


def test_problem_with_newlines_stays_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def two_line_problem(path: Path) -> Any:
        raise cli.InputError(["spec.x: first part\n  second part"])

    monkeypatch.setattr(cli, "load", two_line_problem)
    code, out, err = run_cli(capsys, "validate", "job.yaml")
    assert code == cli.EXIT_INPUT
    assert out == ""
    assert err == "error: spec.x: first part second part\n"


# --- the good path ----------------------------------------------------------------------------


def job_yaml(
    *,
    name: str = "iris-logistic",
    estimator: str = "{name: LogisticRegression}",
    parameters: str = "[{name: C, float: {low: 0.01, high: 10.0, log: true}}]",
    trials: int = 4,
) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: kubetune.io/v1alpha1
        kind: TuningJob
        metadata: {{name: {name}}}
        spec:
          estimator: {estimator}
          dataset: {{builtin: iris}}
          parameters: {parameters}
          search: {{method: random, trials: {trials}, seed: 7}}
          cv: {{folds: 3}}
        """
    )


def read_trials(folder: Path) -> list[dict[str, str]]:
    with (folder / "trials.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_validate_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "validate", str(REPO / "examples" / "tuningjob.yaml"))
    assert code == cli.EXIT_OK, err
    assert err == ""
    assert "valid TuningJob 'forest-cancer'" in out
    assert "569 rows x 30 features" in out


def test_run_writes_status_trials_and_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import skops.io

    path = tmp_path / "job.yaml"
    path.write_text(job_yaml())
    output = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", str(path), "-q", "-o", str(output))
    assert code == cli.EXIT_OK, err
    assert "Traceback" not in out + err
    assert "error:" not in err

    document = yaml.safe_load((output / "status.yaml").read_text())
    assert document["metadata"]["name"] == "iris-logistic"
    status = document["status"]
    assert status["phase"] == "Succeeded"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Succeeded"] == "True"
    assert conditions["Failed"] == "False"
    assert set(status["best"]["params"]) == {"C"}
    assert 0.01 <= status["best"]["params"]["C"] <= 10.0
    assert status["trials"] == {"completed": 4, "failed": 0, "planned": 4}

    rows = read_trials(output)
    assert len(rows) == 4
    assert {"mean_test_accuracy", "rank_test_accuracy", "param_C", "error"} <= set(rows[0])
    assert min(int(r["rank_test_accuracy"]) for r in rows) == 1
    best = max(rows, key=lambda r: float(r["mean_test_accuracy"]))
    assert best["rank_test_accuracy"] == "1"
    assert float(best["mean_test_accuracy"]) == pytest.approx(status["best"]["score"])

    model_path = output / "model.skops"
    model = skops.io.load(model_path, trusted=skops.io.get_untrusted_types(file=model_path))
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    assert model.score(X, y) > 0.8
    assert model.get_params()["model__C"] == pytest.approx(status["best"]["params"]["C"])
    assert "model.skops" in out


def test_run_no_model_writes_no_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(job_yaml(trials=2))
    output = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", str(path), "--no-model", "-q", "-o", str(output))
    assert code == cli.EXIT_OK, err
    assert sorted(p.name for p in output.iterdir()) == ["status.yaml", "trials.csv"]
    assert "model.skops" not in out


def test_run_where_every_trial_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # hidden_layer_sizes=[0] passes scikit-learn's parameter constraints but fails every fit.
    path = tmp_path / "job.yaml"
    path.write_text(
        job_yaml(
            name="mlp-broken",
            estimator="{name: MLPClassifier, params: {hidden_layer_sizes: [0]}}",
            parameters="[{name: alpha, float: {low: 0.0001, high: 0.1, log: true}}]",
            trials=3,
        )
    )
    assert run_cli(capsys, "validate", str(path))[0] == cli.EXIT_OK  # only a fit can tell
    output = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", str(path), "-q", "-o", str(output))
    assert code == cli.EXIT_FAILED
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: TuningJob mlp-broken failed: ")
    assert "all 3 trials failed: ValueError: hidden_layer_sizes must be > 0" in errors[0]

    rows = read_trials(output)
    assert len(rows) == 3
    assert {r["state"] for r in rows} == {"FAIL"}
    assert all("hidden_layer_sizes must be > 0" in r["error"] for r in rows)
    status = yaml.safe_load((output / "status.yaml").read_text())["status"]
    assert status["phase"] == "Failed"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Failed"] == "True"
    assert not (output / "model.skops").exists()


def test_run_output_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(job_yaml())
    taken = tmp_path / "taken"
    taken.write_text("")
    code, out, err = run_cli(capsys, "run", str(path), "-o", str(taken))
    assert code == cli.EXIT_INPUT
    assert "Traceback" not in out + err
    assert err.startswith(f"error: --output: cannot create {taken}: ")
    assert len(err.splitlines()) == 1


def test_crds(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "crds", "-o", str(tmp_path))
    assert code == cli.EXIT_OK, err
    written = sorted(tmp_path.iterdir())
    assert len(written) == 3
    assert sorted(out.split()) == sorted(str(p) for p in written)
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in written if p.name != "kustomization.yaml"
    )
    plurals = set()
    for path in written:
        if path.name == "kustomization.yaml":
            continue
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition"
        assert crd["spec"]["group"] == "kubetune.io"
        plurals.add(crd["spec"]["names"]["plural"])
    assert plurals == {"tuningjobs", "modelcomparisons"}


# --- argparse ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["run"], "the following arguments are required: file"),
        (["run", "job.yaml", "-j", "0"], "must be at least 1, got 0"),
        (["run", "job.yaml", "-j", "two"], "expected a whole number, got 'two'"),
        (["tune", "job.yaml"], "invalid choice: 'tune'"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == cli.EXIT_INPUT
    assert "Traceback" not in out + err
    assert err.startswith("usage: kubetune")
    assert message in err


# --- interruption and internal errors ---------------------------------------------------------


def test_ctrl_c_keeps_finished_trials(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_drive = engine.drive

    def drive_then_interrupt(runs: Any, executor: Any, *, reporter: Any = None, **kw: Any) -> None:
        class Interrupting:
            seen = 0

            def trial(self, run: Any, record: Any) -> None:
                reporter.trial(run, record)
                Interrupting.seen += 1
                if Interrupting.seen == 2:
                    raise KeyboardInterrupt

            def stage(self, run: Any, stage: Any) -> None:
                reporter.stage(run, stage)

        real_drive(runs, executor, reporter=Interrupting(), **kw)

    monkeypatch.setattr(engine, "drive", drive_then_interrupt)
    path = tmp_path / "job.yaml"
    path.write_text(job_yaml(trials=6))
    output = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", str(path), "-o", str(output))
    assert code == cli.EXIT_INTERRUPTED
    assert "Traceback" not in out + err
    assert f"interrupted: kept 2 finished trials in {output}; the same command resumes" in err
    assert len(read_trials(output)) == 2
    status = yaml.safe_load((output / "status.yaml").read_text())["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "Interrupted")
    assert not (output / "model.skops").exists()


def interrupt_after(monkeypatch: pytest.MonkeyPatch, trials: int) -> None:
    """The next run gets Ctrl-C once ``trials`` trials have finished."""
    real_drive = engine.drive

    def drive_then_interrupt(runs: Any, executor: Any, *, reporter: Any = None, **kw: Any) -> None:
        class Interrupting:
            seen = 0

            def trial(self, run: Any, record: Any) -> None:
                reporter.trial(run, record)
                Interrupting.seen += 1
                if Interrupting.seen == trials:
                    raise KeyboardInterrupt

            def stage(self, run: Any, stage: Any) -> None:
                reporter.stage(run, stage)

        real_drive(runs, executor, reporter=Interrupting(), **kw)

    monkeypatch.setattr(engine, "drive", drive_then_interrupt)


def count_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the fold fits of the following runs (parallelism 1: they run in this process)."""
    from kubetune import executor

    fits = [0]
    real = executor.fit_and_score

    def counted(**kwargs: Any) -> Any:
        fits[0] += 1
        return real(**kwargs)

    monkeypatch.setattr(executor, "fit_and_score", counted)
    return fits


def test_an_interrupted_run_resumes_without_fitting_its_finished_trials_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(job_yaml(trials=6))
    reference = tmp_path / "whole"
    assert run_cli(capsys, "run", str(path), "-o", str(reference), "--no-model")[0] == 0

    output = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        code, _, err = run_cli(capsys, "run", str(path), "-o", str(output), "--no-model")
    assert code == cli.EXIT_INTERRUPTED
    assert "the same command resumes the run" in err
    assert (output / "journal.log").exists()

    fits = count_fits(monkeypatch)
    code, _, err = run_cli(capsys, "run", str(path), "-o", str(output), "--no-model")
    assert code == cli.EXIT_OK, err
    assert f"resuming the interrupted run in {output}: 2 finished trials kept" in err
    assert fits[0] == 4 * 3  # the 4 trials left, 3 folds each
    key = ("trial", "stage", "state", "param_C", "split0_test_accuracy", "mean_test_accuracy")
    resumed = [tuple(t[k] for k in key) for t in read_trials(output)]
    assert resumed == [tuple(t[k] for k in key) for t in read_trials(reference)]
    # The run ended: its journal is gone, and the next run starts afresh.
    assert not (output / "journal.log").exists() and not (output / "journal.json").exists()
    assert run_cli(capsys, "run", str(path), "-o", str(output), "--no-model")[0] == 0
    assert fits[0] == 4 * 3 + 6 * 3


def test_a_resumed_run_keeps_the_seed_it_chose_and_restart_starts_over(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(job_yaml(trials=6).replace(", seed: 7", ""))  # the run chooses a seed
    output = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)
        assert run_cli(capsys, "run", str(path), "-o", str(output))[0] == cli.EXIT_INTERRUPTED
    seed = yaml.safe_load((output / "status.yaml").read_text())["status"]["reproducibility"]
    seed = seed["seed"]

    code, _, err = run_cli(capsys, "run", str(path), "-o", str(output), "--no-model")
    assert code == cli.EXIT_OK and "3 finished trials kept" in err
    status = yaml.safe_load((output / "status.yaml").read_text())["status"]
    assert status["reproducibility"]["seed"] == seed
    assert status["trials"]["completed"] == 6

    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        run_cli(capsys, "run", str(path), "-o", str(output))
    with monkeypatch.context() as patch:  # interrupted again, started with --restart
        interrupt_after(patch, 1)
        code, _, err = run_cli(capsys, "run", str(path), "-o", str(output), "--restart")
    assert code == cli.EXIT_INTERRUPTED
    assert "kept 1 finished trials" in err
    assert "the same command without --restart resumes the run" in err
    code, _, err = run_cli(capsys, "run", str(path), "-o", str(output), "--no-model")
    assert code == cli.EXIT_OK and "1 finished trials kept" in err
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        run_cli(capsys, "run", str(path), "-o", str(output))
    fits = count_fits(monkeypatch)
    code, _, err = run_cli(capsys, "run", str(path), "-o", str(output), "--no-model", "--restart")
    assert code == cli.EXIT_OK and "resuming" not in err
    assert fits[0] == 6 * 3


def test_an_interrupted_comparison_resumes_each_model_from_its_own_trials(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "comparison.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            apiVersion: kubetune.io/v1alpha1
            kind: ModelComparison
            metadata: {name: iris-models}
            spec:
              dataset: {builtin: iris}
              models:
              - {name: logreg, estimator: {name: LogisticRegression}}
              - {name: knn, estimator: {name: KNeighborsClassifier}}
              search: {method: random, trials: 4, seed: 7}
              cv: {folds: 3}
              execution: {mode: sequential}
            """
        )
    )
    output = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 6)  # logreg done, knn half way
        assert run_cli(capsys, "run", str(path), "-o", str(output))[0] == cli.EXIT_INTERRUPTED
    fits = count_fits(monkeypatch)
    code, _, err = run_cli(capsys, "run", str(path), "-o", str(output), "--no-model")
    assert code == cli.EXIT_OK, err
    assert "6 finished trials kept" in err
    assert fits[0] == 2 * 3
    rows = read_trials(output)
    assert sorted((r["model"], r["trial"]) for r in rows) == sorted(
        (m, str(t)) for m in ("logreg", "knn") for t in range(4)
    )


def test_an_interrupted_run_of_another_spec_is_not_resumed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(job_yaml(trials=6))
    output = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        run_cli(capsys, "run", str(path), "-o", str(output))
    path.write_text(job_yaml(trials=8))
    code, out, err = run_cli(capsys, "run", str(path), "-o", str(output))
    assert code == cli.EXIT_INPUT and "Traceback" not in out + err
    assert err.strip().splitlines() == [
        f"error: {output} holds an interrupted run of a different spec; pass --restart to "
        "discard it, or choose another --output"
    ]
    assert (output / "journal.log").exists()  # nothing was thrown away


def test_ctrl_c_while_loading(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "prepare", interrupted)
    code, out, err = run_cli(capsys, "validate", str(REPO / "examples" / "tuningjob.yaml"))
    assert code == cli.EXIT_INTERRUPTED
    assert err == "interrupted\n"
    assert out == ""


def test_internal_error_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine exploded\nwith details")

    monkeypatch.setattr(engine, "prepare", broken)
    monkeypatch.delenv("KUBETUNE_DEBUG", raising=False)
    example = str(REPO / "examples" / "tuningjob.yaml")
    code, out, err = run_cli(capsys, "validate", example)
    assert code == cli.EXIT_INTERNAL
    assert "Traceback" not in out + err
    assert err == (
        "error: internal: RuntimeError: engine exploded (set KUBETUNE_DEBUG=1 for the traceback)\n"
    )
    monkeypatch.setenv("KUBETUNE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="engine exploded"):
        cli.main(["validate", example])


def test_crds_also_refresh_the_charts_copies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    code, _, err = run_cli(capsys, "crds", "-o", str(tmp_path / "crds"), "--chart", str(chart))
    assert code == cli.EXIT_INPUT
    assert "is not a Helm chart" in err
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: x\nversion: 0.1.0\n")
    code, _, err = run_cli(capsys, "crds", "-o", str(tmp_path / "crds"), "--chart", str(chart))
    assert code == cli.EXIT_OK, err
    copies = sorted(p.name for p in (chart / "files" / "crds").iterdir())
    assert copies == ["kubetune.io_modelcomparisons.yaml", "kubetune.io_tuningjobs.yaml"]
    for name in copies:
        assert (chart / "files" / "crds" / name).read_text() == (
            tmp_path / "crds" / name
        ).read_text()
