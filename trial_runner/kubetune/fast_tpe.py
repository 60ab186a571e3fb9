"""A vectorised log of the normal CDF for optuna's TPE sampler.

optuna computes ``log Phi(x)`` for TPE's truncated-normal kernels element by element in Python
(``optuna.samplers._tpe._truncnorm._log_ndtr``: ``np.frompyfunc`` over a scalar function, kept
free of SciPy on purpose). For integer and stepped parameters it evaluates it for every
(candidate, past trial) pair, so at 1,000 trials it was over 80% of the time of each ask, 40 ms
per trial (``bench/overhead.py``; optuna issue #5478). SciPy, which scikit-learn already brings,
has the same function vectorised in C and more accurate in the tails, so we put it in its place.

Only that one function is replaced, and only if optuna still has it with the signature we know;
``tests/unit/test_fast_tpe.py`` checks the two agree and that the replacement is in effect.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_ndtr


def _log_ndtr(a: Any) -> np.ndarray:
    return np.asarray(log_ndtr(np.asarray(a, dtype=float)), dtype=float)


def install() -> bool:
    """Use SciPy's vectorised ``log_ndtr`` in optuna's TPE; returns whether it is in place."""
    try:
        from optuna.samplers._tpe import _truncnorm
    except ImportError:  # a future optuna without the private module: nothing to speed up
        return False
    if not callable(getattr(_truncnorm, "_log_ndtr", None)):
        return False
    if getattr(_truncnorm, "_log_ndtr", None) is not _log_ndtr:
        _truncnorm._log_ndtr = _log_ndtr
    return True
