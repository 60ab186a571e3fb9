"""kubetune: hyperparameter tuning for scikit-learn, on a laptop or a Kubernetes cluster."""

from __future__ import annotations

__version__ = "0.1.0"
