"""The in-cluster runner: ``python -m kubetune.runner`` runs one stage of a TuningJob in its
Job's pod (:mod:`kubetune.runner.stage`).

``python -m`` imports this package before it runs ``__main__``, so nothing heavy is imported
here: ``__main__`` starts the workers' fork server first, then imports the stage code while the
server imports scikit-learn.
"""

from __future__ import annotations

TASK_ENV = "KUBETUNE_TASK"
"""The environment variable with the frozen stage task (JSON), set by the operator."""
