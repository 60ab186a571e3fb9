"""optuna's GPSampler without the per-call cost of its CPU device context.

Since optuna's PR #6418 (for users who set ``torch.set_default_device("cuda")``),
``GPSampler.sample_relative`` runs its whole computation inside ``with torch.device("cpu")``.
PyTorch implements that context as a Python ``TorchFunctionMode``, so every torch call of the
kernel fit and the acquisition search then passes through a Python ``__torch_function__``
(pytorch/pytorch#92701). Those are tens of thousands of calls on 100 x 100 matrices per ask:
a third of the time of each ask on item 2's space (``bench/gp_ask.py``).

This subclass runs the same computation with PyTorch's function overrides switched off. Without
any mode, factory functions allocate on PyTorch's built-in default, the CPU, which is what
optuna's context asks for; a global ``set_default_device`` is itself such a mode and is
switched off too. The numbers are the same: ``tests/unit/test_fast_gp.py`` checks that the
trials are identical to optuna's sampler with the same seed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import optuna


def _torch_functions_off() -> contextlib.AbstractContextManager[Any]:
    import torch

    disable = getattr(torch._C, "DisableTorchFunction", None)
    # A PyTorch without it: run as optuna does, only slower.
    return disable() if disable is not None else contextlib.nullcontext()


class GPSampler(optuna.samplers.GPSampler):
    """optuna's GPSampler, same arguments and same trials, without the device mode's overhead."""

    def _sample_relative_impl(self, *args: Any, **kwargs: Any) -> Any:
        # The seam optuna puts inside its device context; a release without it never calls us.
        with _torch_functions_off():
            return super()._sample_relative_impl(*args, **kwargs)
