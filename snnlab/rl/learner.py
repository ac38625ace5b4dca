"""Learner parts shared by snnlab's algorithms (PPO's and TD3's Learners).

- :class:`OneFiniteCheckMixin` replaces RLlib's per-parameter finiteness checks in
  ``TorchLearner.apply_gradients`` - ``torch.isfinite(grad).all()`` for every gradient, then
  again for every parameter of every optimizer before its step: two scalar round trips per
  parameter and minibatch, a measurable share of a small network's update on a CPU - by one
  check of all gradients at once. When that check fails (or gradient scalers or learning-rate
  schedulers are in use), RLlib's own method runs unchanged, so a non-finite gradient is handled
  exactly as RLlib handles it (zeroed with a warning, or the step skipped). With finite gradients
  both paths set the same gradients and step the same optimizers: the update is bit-identical.
- :class:`DeferredMetricsMixin`: inside one ``Learner.update`` call (many minibatches for PPO),
  a value logged with ``window=1`` is kept only as the last one and integer sums are added up,
  then each key is logged once before ``after_gradient_based_update`` (which reads them, e.g.
  PPO's KL coefficient update). A window of 1 reduces to its last value and a sum of integers
  to its total, so the reduced results are the same numbers; RLlib's ``MetricsLogger`` call per
  value and minibatch (~0.3 ms of a 3.3 ms PPO minibatch, profiled) happens once per call.
- :class:`LeanMinibatchMixin`: RLlib's ``MiniBatchCyclicIterator`` with its slicing and
  ``concat_samples`` (a generic tree walk per column and minibatch) replaced, for flat batches of
  tensors, by column slices copied with one ``torch.cat``/``clone`` each: the same rows in the same
  order (the same ``SampleBatch.shuffle`` calls, so the same random numbers), the same batch
  attributes. Batches with sequences, infos or nested columns keep RLlib's iterator.
"""

from __future__ import annotations

import numpy as np
import torch
from ray._common.deprecation import DEPRECATED_VALUE  # what log_dict forwards for deprecated arguments
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics.metrics_logger import DEFAULT_STATS_CLS_LOOKUP, MetricsLogger
from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

#: torch.optim.Adam's implementations, by the name of an ``adam`` setting. ``loop`` (torch's
#: default on CPU: one tensor at a time) and ``foreach`` (all tensors per op) give bit-identical
#: parameters; ``fused`` (one kernel per step) rounds differently: parameters differ from
#: ``loop``'s by float32 rounding (measured: docs/benchmarks.md)
ADAM_IMPLS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}


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


# --- metrics once per update call -------------------------------------------------------------
_LAST, _SUM = "last", "sum"


def _given(kwargs) -> dict:
    """The keyword arguments a caller really set (``log_dict`` forwards RLlib's deprecated ones as
    ``DEPRECATED_VALUE``; None is the default of the rest)."""
    return {k: v for k, v in kwargs.items() if v is not None and v is not DEPRECATED_VALUE}


def _deferrable(value, reduce, window, given) -> str | None:
    """How a ``log_value`` call may be deferred: ``last`` (a window of 1: only the last value
    survives a reduce), ``sum`` (an integer added to a sum: only the total does), or None."""
    if set(given) - {"with_throughput"}:
        return None  # anything unusual (ema, percentiles, deprecated arguments) goes straight in
    if window == 1 and reduce in (None, "mean") and not given:
        return _LAST
    if (window is None and reduce in ("sum", "lifetime_sum")
            and (type(value) is int or type(value) is np.int64)):
        return _SUM
    return None


class DeferredMetricsLogger(MetricsLogger):
    """RLlib's ``MetricsLogger`` that, between :meth:`defer` and :meth:`stop_deferring`, keeps the
    last value of each window-1 key and the running total of each integer sum, and logs each key
    once when it stops (or before anything reads the logger: ``peek``, ``reduce``, state).

    A key is held only where RLlib's default Stats classes would reduce it that way: the
    reduction's class is the default one and a Stats object already under the key has that class
    and window. A sum of more than one value is logged as ``np.int64``, the type RLlib's running
    sum gives; a lifetime sum adds floats either way."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending: dict | None = None  # None: not deferring
        self._checked: set = set()  # keys whose existing Stats object allows holding

    def defer(self) -> None:
        self._flush()
        self._pending = {}

    def stop_deferring(self) -> None:
        self._flush()
        self._pending = None

    def _flush(self, only=None) -> None:
        if not self._pending:
            return
        for key in (list(self._pending) if only is None else [only]):
            value, reduce, window, kwargs, kind, count = self._pending.pop(key)
            if kind == _SUM and reduce == "sum" and count > 1:
                value = np.int64(value)
            super().log_value(key, value, reduce=reduce, window=window, **kwargs)

    def _may_hold(self, key: tuple, kind: str, reduce, window) -> bool:
        name = "mean" if kind == _LAST else reduce
        cls = DEFAULT_STATS_CLS_LOOKUP.get(name)
        if cls is None or self.stats_cls_lookup.get(name) is not cls:
            return False  # a custom Stats class: its reduction is not known here
        if (key, name) in self._checked:
            return True
        if self._key_in_stats(key):
            stats = self._get_key(key)
            if type(stats) is not cls or getattr(stats, "_window", None) != window:
                return False
        self._checked.add((key, name))
        return True

    def log_value(self, key, value, *, reduce=None, window=None, **kwargs) -> None:
        if self._pending is not None:
            tkey = key if isinstance(key, tuple) else (key,)
            given = _given(kwargs)
            kind = _deferrable(value, reduce, window, given)
            if kind is not None and not self._may_hold(tkey, kind, reduce, window):
                kind = None
            held = self._pending.get(tkey)
            if held is not None and (kind is None or held[4] != kind or held[1:4] != (reduce, window, kwargs)):
                self._flush(tkey)
                held = None
            if kind == _LAST:
                self._pending[tkey] = (value, reduce, window, kwargs, kind, 1)
                return
            if kind == _SUM:
                total, count = (int(value), 1) if held is None else (held[0] + int(value), held[5] + 1)
                self._pending[tkey] = (total, reduce, window, kwargs, kind, count)
                return
        super().log_value(key, value, reduce=reduce, window=window, **kwargs)

    def peek(self, *args, **kwargs):
        self._flush()
        return super().peek(*args, **kwargs)

    def reduce(self, *args, **kwargs):
        self._flush()
        return super().reduce(*args, **kwargs)

    def get_state(self):
        self._flush()
        return super().get_state()

    def __contains__(self, key) -> bool:
        self._flush()
        return super().__contains__(key)

    # what RLlib would have logged before these calls is replaced or removed by them
    def set_state(self, state) -> None:
        self._drop()
        super().set_state(state)

    def reset(self) -> None:
        self._drop()
        super().reset()

    def delete(self, *key, key_error: bool = True) -> None:
        self._drop()
        super().delete(*key, key_error=key_error)

    def _drop(self) -> None:
        if self._pending:
            self._pending.clear()
        self._checked.clear()


class DeferredMetricsMixin:
    """A Learner whose metrics are logged once per ``update`` call (module docstring). Put it
    before the Learner class. RLlib creates the logger in ``__init__`` and ``_reset``; both are
    followed by a swap to :class:`DeferredMetricsLogger` (empty at that point)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._use_deferred_metrics()

    def _reset(self):
        super()._reset()
        self._use_deferred_metrics()

    def _use_deferred_metrics(self) -> None:
        self.metrics = DeferredMetricsLogger(stats_cls_lookup=self.config.stats_cls_lookup, root=False)

    def before_gradient_based_update(self, *, timesteps) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self.metrics.defer()

    def after_gradient_based_update(self, *, timesteps) -> None:
        self.metrics.stop_deferring()
        super().after_gradient_based_update(timesteps=timesteps)


# --- lean minibatches -------------------------------------------------------------------------
def _flat_tensor_batch(batch: SampleBatch) -> bool:
    """A batch the lean iterator can slice: flat torch columns, no sequences, no infos."""
    return (not batch._slice_seq_lens_in_B and batch.get(SampleBatch.SEQ_LENS) is None
            and not batch.zero_padded and not batch.time_major and Columns.INFOS not in batch and len(batch) > 0
            and all(isinstance(v, torch.Tensor) for v in batch.values()))


class LeanCyclicIterator(MiniBatchCyclicIterator):
    """RLlib's ``MiniBatchCyclicIterator`` (same stopping rule, same epoch wrap-around and
    shuffles) whose minibatches of flat tensor batches are column slices copied once, instead of
    ``SampleBatch`` slices put through ``concat_samples``. Other batches: RLlib's own loop."""

    @classmethod
    def from_rllib(cls, it: MiniBatchCyclicIterator) -> "LeanCyclicIterator":
        return cls(it._batch, num_epochs=it._num_epochs, minibatch_size=it._minibatch_size,
                   shuffle_batch_per_epoch=it._shuffle_batch_per_epoch,
                   num_total_minibatches=it._num_total_minibatches)

    def __iter__(self):
        if not all(_flat_tensor_batch(b) for b in self._batch.policy_batches.values()):
            yield from super().__iter__()
            return
        while ((self._num_total_minibatches == 0 and min(self._num_covered_epochs.values()) < self._num_epochs)
               or (self._num_total_minibatches > 0 and self._minibatch_count < self._num_total_minibatches)):
            minibatch = {}
            for module_id, module_batch in self._batch.policy_batches.items():
                s, n = self._start[module_id], self._minibatch_size
                pieces = []  # (columns, start, stop) of each piece, as RLlib cuts them
                while s + n >= len(module_batch):
                    pieces.append((dict(module_batch), s, len(module_batch)))
                    n -= len(module_batch) - s
                    s = 0
                    self._num_covered_epochs[module_id] += 1
                    if self._shuffle_batch_per_epoch:
                        module_batch.shuffle()  # RLlib's own, in place: the same permutation
                e = s + n
                if e > s:
                    pieces.append((dict(module_batch), s, e))
                minibatch[module_id] = _concat(pieces, module_batch)
                self._start[module_id] = e
            yield MultiAgentBatch(minibatch, len(self._batch))
            self._minibatch_count += 1


def _concat(pieces, like: SampleBatch) -> SampleBatch:
    """The ``SampleBatch`` RLlib's ``concat_samples`` makes of these row ranges of ``like``: each
    column through one ``torch.cat`` (a copy, also of a single piece), ``num_grad_updates`` the
    row-weighted mean computed as RLlib computes it (0.0 when the batch has none)."""
    cols = {key: torch.cat([columns[key][a:b] for columns, a, b in pieces]) for key in pieces[0][0]}
    rows, weighted = 0, 0.0
    if like.num_grad_updates is not None:
        for _, a, b in pieces:
            rows += b - a
            weighted += like.num_grad_updates * (b - a)
    # RLlib's flat slices carry no max_seq_len and zero_padded=False; concat_samples keeps those
    return SampleBatch(cols, seq_lens=[], _time_major=like.time_major, _zero_padded=False,
                       _max_seq_len=None, _num_grad_updates=weighted / (rows or 1.0))


class LeanMinibatchMixin:
    """A Learner that iterates minibatches with :class:`LeanCyclicIterator` wherever RLlib would
    use its ``MiniBatchCyclicIterator``. Put it before the Learner class."""

    def _create_iterator_if_necessary(self, **kwargs):
        it = super()._create_iterator_if_necessary(**kwargs)
        return LeanCyclicIterator.from_rllib(it) if type(it) is MiniBatchCyclicIterator else it
