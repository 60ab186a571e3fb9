"""The `kubetune` command: run a TuningJob or ModelComparison locally, validate one, write CRDs.

Bad input never shows a traceback: one readable line per problem and a non-zero exit.
Exit codes: 0 success, 1 the search failed, 2 bad input, 3 an internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Any

import yaml

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class InputError(Exception):
    """Bad input: each line of ``problems`` is printed as it is."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and getattr(args, "func", None) is not cmd_operator:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        code: int = args.func(args)
        return code
    except InputError as error:
        for line in error.problems:
            print(f"error: {_one_line(line)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # the last guard: one line, the traceback only on request
        if os.environ.get("KUBETUNE_DEBUG"):
            raise
        first = (str(error).splitlines() or [""])[0]
        print(
            f"error: internal: {type(error).__name__}: {first} "
            "(set KUBETUNE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def console() -> int:
    """The ``kubetune`` console script: :func:`main`, then a quick exit.

    At exit the interpreter garbage-collects every object still alive, some 150,000 of them once
    scikit-learn, SciPy and pandas are imported: a quarter of a second after the run is over.
    Frozen, they are skipped; the memory goes back to the system all the same. Not in
    :func:`main`, which tests call in-process.
    """
    code = main()
    gc.freeze()
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetune",
        description="Hyperparameter tuning for scikit-learn, on a laptop or a Kubernetes cluster.",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a TuningJob or ModelComparison here, with no cluster")
    run.add_argument("file", type=Path, help="the YAML file")
    run.add_argument(
        "-o",
        "--output",
        type=Path,
        help="folder for status.yaml, trials.csv and the model (default: kubetune-results/NAME)",
    )
    run.add_argument(
        "-j",
        "--parallelism",
        type=_positive,
        help="worker processes (default: spec.search.parallelism)",
    )
    run.add_argument("--no-model", action="store_true", help="do not refit and save the best model")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    run.add_argument(
        "--restart",
        action="store_true",
        help="start over instead of resuming an interrupted run in the output folder",
    )
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a file without fitting anything")
    validate.add_argument("file", type=Path)
    validate.set_defaults(func=cmd_validate)

    trials = sub.add_parser(
        "trials", help="the full trial table of a TuningJob in the cluster (from its ledger)"
    )
    trials.add_argument("name", help="the TuningJob")
    trials.add_argument("-n", "--namespace", help="default: the kubeconfig's namespace")
    trials.add_argument("--csv", type=Path, help="write every column to this CSV file")
    trials.set_defaults(func=cmd_trials)

    operator = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (same as python -m kubetune_operator)",
        add_help=False,
    )
    operator.set_defaults(func=cmd_operator)

    crds = sub.add_parser("crds", help="write the CustomResourceDefinitions")
    crds.add_argument(
        "-o", "--output", type=Path, default=Path("crds"), help="folder (default: crds)"
    )
    crds.add_argument(
        "--chart", type=Path, help="also copy the CRDs into this Helm chart's files/crds"
    )
    crds.set_defaults(func=cmd_crds)
    return parser


def _one_line(text: str) -> str:
    """A message on one line, so that every problem is exactly one ``error:`` line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error.

    PyYAML silently keeps the last of two equal keys, so a second ``search:`` block would quietly
    replace the first; kubectl rejects such a manifest, and so do we. Keys brought in by a merge
    (``<<: *anchor``) may still be overridden, as YAML intends.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def read_document(path: Path) -> dict[str, Any]:
    """The one YAML document in ``path``, or an InputError saying what is wrong with it."""
    if not path.exists():
        raise InputError([f"{path}: no such file"])
    if path.is_dir():
        raise InputError([f"{path}: is a directory, expected a YAML file"])
    try:
        text = path.read_text(encoding="utf-8")
        documents = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except UnicodeDecodeError:
        raise InputError([f"{path}: not a text file"]) from None
    except OSError as error:
        raise InputError([f"{path}: cannot read: {error.strerror or error}"]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError([f"{path}: invalid YAML{where}: {problem}"]) from None
    if not documents:
        raise InputError([f"{path}: the file is empty"])
    if len(documents) > 1:
        raise InputError([f"{path}: holds {len(documents)} documents; run one resource per file"])
    document = documents[0]
    if not isinstance(document, dict):
        raise InputError([f"{path}: expected a mapping with apiVersion, kind, metadata and spec"])
    return document


def load(path: Path, *, warm_workers: int | None = None, seed: int | None = None) -> Any:
    """Read, validate and prepare a resource: everything short of fitting.

    Args:
        path: the YAML file.
        warm_workers: get the imports of this many worker processes (or of the spec's
            parallelism if 0) under way as soon as the YAML is read, so that scikit-learn and
            the spec's estimators are imported for them while this process imports the engine
            and loads the data (see kubetune.pool.warm_up). None starts nothing.
        seed: the seed of an interrupted run that this one resumes (else the spec's, or new).
    """
    document = read_document(path)
    if warm_workers is not None:
        from kubetune.allowlist import fitting_modules
        from kubetune.pool import warm_up

        warm_up(
            warm_workers or _declared_parallelism(document),
            modules=fitting_modules(document.get("spec")),
        )

    from kubetune.startup import collector_paused

    # The heavy imports (and the estimator's module, imported by prepare) while the workers'
    # fork server imports its own: see kubetune.startup.
    with collector_paused():
        # The pydantic models before scikit-learn. On Python < 3.13 pydantic reads a model's
        # attribute docstrings by walking the stack with inspect.getmodule, which rescans
        # sys.modules: once scikit-learn's 2,000 modules are loaded, that is ~15 ms per model.
        import kubetune.planning  # noqa: F401
        from kubetune.api import SpecError, load_resource
        from kubetune.data import DataError
        from kubetune.engine import prepare

        try:
            resource = load_resource(document)
            if seed is not None:
                search = resource.spec.search.model_copy(update={"seed": seed})
                resource = resource.model_copy(
                    update={"spec": resource.spec.model_copy(update={"search": search})}
                )
            prepared = prepare(resource, base_dir=path.parent)
        except SpecError as error:
            raise InputError(error.problems) from None
        except DataError as error:
            raise InputError([str(error)]) from None
    return document, resource, prepared


def _declared_parallelism(document: dict[str, Any]) -> int:
    # Read before validation, only to start workers early: anything odd means none.
    spec = document.get("spec")
    search = spec.get("search") if isinstance(spec, dict) else None
    value = search.get("parallelism", 1) if isinstance(search, dict) else 1
    return value if isinstance(value, int) and 1 <= value <= 256 else 1


def cmd_validate(args: argparse.Namespace) -> int:
    _, resource, prepared = load(args.file)
    data = prepared.data.record
    print(
        f"{args.file}: valid {resource.kind} {resource.metadata.name!r}; "
        f"{data.rows} rows x {data.columns} features, objective {prepared.metric}"
    )
    return EXIT_OK


def cmd_trials(args: argparse.Namespace) -> int:
    """Print (or write as CSV) every trial of a TuningJob, read back from its trial ledger."""
    from kubernetes import config
    from kubernetes.client.exceptions import ApiException

    from kubetune.api import TuningJobSpec
    from kubetune.api.catalog import DEFAULT_METRIC, ESTIMATORS
    from kubetune.cluster import KubeConfigMaps, StatusWriter, api_client
    from kubetune.output import write_rows
    from kubetune.planning import ObjectRef
    from kubetune.report import table
    from kubetune.results import cv_results_rows
    from kubetune.trials import ledger_records

    namespace = args.namespace
    try:
        api = api_client()
        if namespace is None:
            try:
                _, context = config.list_kube_config_contexts()
                namespace = context["context"].get("namespace") or "default"
            except (config.ConfigException, OSError, TypeError):
                namespace = "default"
        target = ObjectRef(namespace=namespace, name=args.name)
        body = StatusWriter(target=target, api=api).get()
    except config.ConfigException as error:
        raise InputError([f"no cluster to read from: {error}"]) from None
    except ApiException as error:
        raise InputError(
            [f"cannot read tuningjob {args.name}: {error.status} {error.reason}"]
        ) from None
    except Exception as error:
        if type(error).__name__ == "ResourceGone":
            raise InputError(
                [f"tuningjob {args.name} not found in namespace {namespace}"]
            ) from None
        raise
    spec = TuningJobSpec.model_validate(body["spec"])
    owner = target.model_copy(update={"uid": body["metadata"].get("uid")})
    records = ledger_records(
        store=KubeConfigMaps(api=api, owner=owner),
        tuningjob=args.name,
        spec=spec,
        stages=(body.get("status") or {}).get("stages"),
    )
    metric = spec.scoring.metric or DEFAULT_METRIC[ESTIMATORS[spec.estimator.name]]
    metrics = [metric, *[m for m in spec.scoring.additional if m != metric]]
    rows = cv_results_rows(records, metrics)
    if args.csv:
        write_rows(path=args.csv, rows=rows)
        print(f"{len(rows)} trials written to {args.csv}")
        return EXIT_OK
    shown = [
        (
            r["trial"],
            r["stage"],
            r["state"],
            r[f"mean_test_{metric}"],
            r[f"std_test_{metric}"],
            r[f"rank_test_{metric}"],
            r["params"],
        )
        for r in rows
    ]
    print(table(shown, ["trial", "stage", "state", metric, "std", "rank", "params"]))
    return EXIT_OK


def cmd_operator(args: argparse.Namespace) -> int:
    """Hand over to the operator's own entry point (the library never imports the operator)."""
    argv = [sys.executable, "-m", "kubetune_operator", *getattr(args, "rest", [])]
    os.execv(sys.executable, argv)
    return EXIT_INTERNAL  # not reached


def cmd_crds(args: argparse.Namespace) -> int:
    from kubetune.crd import write_crds

    written = write_crds(output=args.output)
    for path in written:
        print(path)
    if args.chart is not None:
        if not (args.chart / "Chart.yaml").is_file():
            raise InputError([f"--chart: {args.chart} is not a Helm chart (no Chart.yaml)"])
        target = args.chart / "files" / "crds"
        target.mkdir(parents=True, exist_ok=True)
        for path in written:
            if path.name.startswith("kubetune.io_"):
                copy = target / path.name
                copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
                print(copy)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from kubetune import checkpoint

    name = (read_document(args.file).get("metadata") or {}).get("name")
    folder = args.output or Path("kubetune-results") / str(name)
    interrupted = None
    if isinstance(name, str):  # else load() says what is wrong
        if args.restart:
            checkpoint.discard(folder)
        try:
            interrupted = checkpoint.find_interrupted(
                folder=folder, document=read_document(args.file)
            )
        except checkpoint.CheckpointError as error:
            raise InputError([str(error)]) from None
    # Read the file before the heavy imports, so the workers start while this process imports.
    document, resource, prepared = load(
        args.file,
        warm_workers=args.parallelism or 0,
        seed=interrupted.seed if interrupted else None,
    )

    from kubetune.engine import JobRun, run_comparison, run_tuning_job
    from kubetune.output import write_model, write_status, write_trials
    from kubetune.report import ProgressBar, comparison_summary, tuning_summary

    dataset = prepared.reproducibility.dataset
    fingerprint = dataset.fingerprint if dataset else None
    if interrupted and interrupted.dataset_fingerprint not in (None, fingerprint):
        raise InputError(
            [f"{folder}: the data changed since the interrupted run; pass --restart to start over"]
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError([f"--output: cannot create {folder}: {error.strerror}"]) from None
    journal = checkpoint.open_journal(
        folder=folder, document=document, seed=prepared.seed, dataset=fingerprint
    )
    if interrupted:
        print(
            f"resuming the interrupted run in {folder}: "
            f"{checkpoint.finished_trials(journal)} finished trials kept (--restart starts over)",
            file=sys.stderr,
        )
    runs: list[JobRun] = []
    progress: ProgressBar | None = None

    class _Reporter:
        def trial(self, run: JobRun, record: Any) -> None:
            nonlocal progress
            if progress is None and not args.quiet:
                progress = ProgressBar(runs=runs)
            if progress:
                progress.trial(run, record)

        def stage(self, run: JobRun, stage: Any) -> None:
            if progress:
                progress.stage(run, stage)

    data = prepared.data.record
    print(
        f"{resource.kind} {resource.metadata.name}: {data.source} ({data.rows} x {data.columns}), "
        f"{prepared.reproducibility.cv.folds}-fold CV, objective {prepared.metric}, "
        f"seed {prepared.seed}",
        file=sys.stderr,
    )
    kind = resource.kind
    try:
        if kind == "TuningJob":
            tuned = run_tuning_job(
                resource,
                prepared=prepared,
                reporter=_Reporter(),
                parallelism=args.parallelism,
                runs_out=runs,
                storage=journal,
            )
            status: Any = tuned.status
            summary = tuning_summary(tuned.status)
            winner: JobRun | None = tuned.run
        else:
            compared = run_comparison(
                resource,
                prepared=prepared,
                reporter=_Reporter(),
                parallelism=args.parallelism,
                runs_out=runs,
                storage=journal,
            )
            status = compared.status
            summary = comparison_summary(compared.status)
            winner = next((r for r in compared.runs if r.name == status.best_model), None)
    except KeyboardInterrupt:
        if progress:
            progress.close()
        _write_interrupted(folder=folder, document=document, runs=runs, kind=kind)
        done = sum(len(r.records) for r in runs)
        # --restart would throw the kept trials away again.
        again = "the same command without --restart" if args.restart else "the same command"
        print(
            f"interrupted: kept {done} finished trials in {folder}; {again} resumes the run",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if progress:
        progress.close()
    checkpoint.discard(folder)  # the run ended: the next one starts afresh
    write_status(folder=folder, resource=document, status=status)
    write_trials(folder=folder, runs=runs)
    print(summary)
    if status.phase != "Succeeded":
        print(
            f"error: {resource.kind} {resource.metadata.name} failed: "
            f"{_one_line(status.message or status.phase)}",
            file=sys.stderr,
        )
        print(f"results in {folder}", file=sys.stderr)
        return EXIT_FAILED
    if not args.no_model and winner is not None:
        path = write_model(folder=folder, run=winner)
        if path:
            print(f"\nmodel: {path} (skops.io.load it, passing the types you trust as trusted=)")
    print(f"results in {folder}: status.yaml, trials.csv")
    return EXIT_OK


def _write_interrupted(
    *, folder: Path, document: dict[str, Any], runs: list[Any], kind: str
) -> None:
    from kubetune.api.status import phase_conditions
    from kubetune.engine import comparison_status
    from kubetune.output import write_status, write_trials

    write_trials(folder=folder, runs=runs)
    if not runs:
        return
    message = "interrupted; the finished trials are in trials.csv"
    if kind == "TuningJob":
        status: Any = runs[0].status()
    else:
        from kubetune.api import load_resource

        spec = load_resource(document).spec
        status = comparison_status(
            runs=runs,
            spec=spec,  # type: ignore[arg-type]
            reproducibility=runs[0].prepared.reproducibility,
            test_train_ratio=runs[0].test_train_ratio,
        )
    status.phase, status.message = "Failed", message
    status.conditions = phase_conditions([], phase="Failed", reason="Interrupted", message=message)
    write_status(folder=folder, resource=document, status=status)


if __name__ == "__main__":
    sys.exit(console())
