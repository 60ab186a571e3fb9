"""The full trial table of a TuningJob, rebuilt from its trial ledger (`kubetune trials`)."""

from __future__ import annotations

from typing import Any

import optuna

from kubetune.api.parameters import Parameter
from kubetune.api.spec import TuningJobSpec
from kubetune.ledger import ConfigMapJournal, ConfigMapStore
from kubetune.planning import resolve_space, stage_name
from kubetune.results import TrialRecord, record_from_ledger
from kubetune.space import decode
from kubetune.strategies import FOLDS_ATTR, NUMBER_ATTR


def ledger_prefix(tuningjob: str) -> str:
    return f"{tuningjob}-ledger"


def ledger_records(
    *,
    store: ConfigMapStore,
    tuningjob: str,
    spec: TuningJobSpec,
    stages: list[dict[str, Any]] | None = None,
) -> list[TrialRecord]:
    """Every finished trial of every stage, numbered across stages as in status.

    Args:
        store: where the ledger's ConfigMaps are.
        tuningjob: the TuningJob's name.
        spec: its spec (stage methods and the original space).
        stages: status.stages, for each stage's narrowed space (decoding list choices).
    """
    storage = optuna.storages.JournalStorage(
        ConfigMapJournal(store=store, prefix=ledger_prefix(tuningjob))
    )
    names = {s.study_name for s in storage.get_all_studies()}
    spaces = {s["name"]: s.get("space") for s in stages or []}
    original = resolve_space(estimator=spec.estimator, parameters=spec.parameters)
    records: list[TrialRecord] = []
    for index, stage in enumerate(spec.search.stage_list()):
        name = stage_name(index, stage.method)
        if name not in names:
            break
        space = [Parameter.model_validate(p) for p in spaces.get(name) or []] or original
        study = optuna.load_study(study_name=name, storage=storage)
        for trial in study.get_trials(deepcopy=False):
            if trial.state.is_finished() and FOLDS_ATTR in trial.user_attrs:
                records.append(
                    record_from_ledger(
                        number=trial.user_attrs[NUMBER_ATTR],
                        stage=name,
                        params=decode(space, trial.params),
                        folds=trial.user_attrs[FOLDS_ATTR],
                    )
                )
    return sorted(records, key=lambda r: r.number)
