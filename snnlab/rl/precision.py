"""bf16 mixed precision in RLlib's Learner (``runners.precision: bf16-mixed``; see snnlab.precision).

:func:`autocast_learner` subclasses an algorithm's own Learner class so that each update - RLlib's
``TorchLearner._uncompiled_update``: forward_train, losses, backward, gradient post-processing and
the optimizer step - runs under ``torch.autocast("cpu", dtype=torch.bfloat16)``. Autocast casts
only matmul-like ops to bf16: parameters, gradients and the optimizer state stay fp32, and the
spiking networks keep their LIF dynamics in fp32. ``32-true`` (the default) leaves RLlib's class
untouched, so fp32 runs are bit-identical to runs without this option.
"""

from __future__ import annotations

import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner


class AutocastLearnerMixin:
    """Runs every update of a TorchLearner under CPU bf16 autocast (extends
    ``TorchLearner._uncompiled_update``; no ``@override``: a mixin is not a TorchLearner)."""

    AUTOCAST_DTYPE = torch.bfloat16

    def _uncompiled_update(self, batch, **kwargs):
        with torch.autocast("cpu", dtype=self.AUTOCAST_DTYPE):
            return super()._uncompiled_update(batch, **kwargs)


def autocast_learner(learner_class: type[TorchLearner]) -> type[TorchLearner]:
    """``learner_class`` with :class:`AutocastLearnerMixin` (named ``BF16<name>``)."""
    if not (isinstance(learner_class, type) and issubclass(learner_class, TorchLearner)):
        raise TypeError(f"bf16-mixed needs a torch Learner class, got {learner_class!r}")
    cls = type(f"BF16{learner_class.__name__}", (AutocastLearnerMixin, learner_class),
               {"__module__": __name__, "__doc__": f"{learner_class.__name__} under bf16 autocast."})
    return cls
