"""Learner parts shared by snnlab's algorithms (PPO's and TD3's Learners).

:class:`OneFiniteCheckMixin` replaces RLlib's per-parameter finiteness checks in
``TorchLearner.apply_gradients`` - ``torch.isfinite(grad).all()`` for every gradient, then again
for every parameter of every optimizer before its step: two scalar round trips per parameter and
minibatch, a measurable share of a small network's update on a CPU - by one check of all
gradients at once. When that check fails (or gradient scalers or learning-rate schedulers are in
use), RLlib's own method runs unchanged, so a non-finite gradient is handled exactly as RLlib
handles it (zeroed with a warning, or the step skipped). With finite gradients both paths set
the same gradients and step the same optimizers: the update is bit-identical.
"""

from __future__ import annotations

import torch


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True only if every value of every tensor is finite, with one cheap check: the sum of all
    values (NaN and inf propagate into it; torch's ``isfinite`` per tensor is a slow scalar loop
    on CPU). A sum that overflows though every value is finite says False: the caller then runs
    the exact per-tensor check, so the answer only costs time, never correctness."""
    if not tensors:
        return True
    return bool(torch.cat([t.reshape(-1) for t in tensors]).sum().isfinite())


class OneFiniteCheckMixin:
    """``TorchLearner.apply_gradients`` with one finiteness check for all gradients (module
    docstring). Put it before the Learner class: ``class L(OneFiniteCheckMixin, PPOTorchLearner)``.
    No ``@override``: RLlib's decorator requires the defining class to subclass the parent, and a
    mixin does not."""

    def apply_gradients(self, gradients_dict) -> None:
        if (self._grad_scalers is not None or self._lr_scheduler_classes is not None
                or (not self.config.torch_skip_nan_gradients and not all_finite(list(gradients_dict.values())))):
            super().apply_gradients(gradients_dict)  # RLlib's exact path
            return
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id, names in self._module_optimizers.items():
            for name in names:
                self.get_optimizer(module_id, name).step()
