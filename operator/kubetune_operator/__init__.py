"""The kubetune operator (kopf): reconciles TuningJobs and ModelComparisons on Kubernetes.

Lives in the ``operator/`` source root; never importable as ``operator`` (a standard-library
module). The handlers, planner and Job builders arrive with the operator issue.
"""

from __future__ import annotations

__all__: list[str] = []
