"""snnlab/rl/learner.py's parts against RLlib's originals, without Ray running: the deferred
metrics logger reduces to what RLlib's MetricsLogger reduces to, and the lean minibatch iterator
yields RLlib's minibatches (same rows, order, random numbers and attributes)."""

import numpy as np
import pytest
import torch
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger
from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

from snnlab.rl import learner as parts
from snnlab.rl.learner import DeferredMetricsLogger, LeanCyclicIterator

from .helpers import leaves


def _log_like_a_learner(m, steps: int) -> None:
    """The kinds of calls an RLlib Learner makes per minibatch, plus ones that must not be held."""
    for i in range(steps):
        m.log_dict({"policy_loss": torch.tensor(0.5 * i), "entropy": 1.0 / (i + 1)}, key="p", window=1)
        m.log_value(("p", "changing"), 3.0 * i, window=1)
        m.log_value(("p", "weights_seq_no"), 7, window=1)
        m.log_value(("p", "batch_mean"), 64 + i % 3, reduce="mean")  # an EMA: not held
        m.log_value(("p", "steps"), 64 + i, reduce="sum")
        m.log_value(("all", "steps_lifetime"), 64, reduce="lifetime_sum", with_throughput=True)
        m.log_value(("p", "float_sum"), 0.1, reduce="sum")  # float sums: not held (rounding)
        m.log_value(("p", "switch"), i if i % 2 else float(i), window=1 if i < 3 else 2)
        m.log_value(("p", "window2"), float(i), window=1)  # created with window 2: not held
        m.log_value("top", np.int64(i), reduce="sum")


def _numbers(tree_) -> dict:
    """Every leaf with its type (RLlib's running sum turns ints into np.int64)."""
    return leaves(tree_, skip=("throughput",))


@pytest.mark.parametrize("rounds", [1, 3])
def test_deferred_metrics_reduce_to_rllibs_numbers(rounds):
    plain, deferred = MetricsLogger(root=False), DeferredMetricsLogger(root=False)
    results = []
    for m in (plain, deferred):
        m.log_value(("p", "window2"), -1.0, window=2)
        out = []
        for r in range(rounds):  # one Learner.update call each
            if m is deferred:
                m.defer()
            _log_like_a_learner(m, 9)
            if m is deferred:
                held = [k for k in (("p", "policy_loss"), ("p", "changing"), ("p", "steps"))
                        if not m._key_in_stats(k)]
                assert r > 0 or len(held) == 3  # held until the update ends
                assert m._key_in_stats(("p", "batch_mean")) and m._key_in_stats(("p", "float_sum"))
                m.stop_deferring()
            out.append(_numbers(m.reduce(compile=True)))
        results.append(out)
    assert results[0] == results[1]
    last = results[1][-1]
    assert last["/p/steps"] == ("int64", 9 * 64 + 36) and last["/p/policy_loss"][1] == 4.0
    assert last["/p/changing"][1] == 24.0 and last["/p/window2"][1] == 7.5


def test_deferred_metrics_hold_nothing_a_custom_stats_class_reduces():
    from ray.rllib.utils.metrics.metrics_logger import DEFAULT_STATS_CLS_LOOKUP
    from ray.rllib.utils.metrics.stats.sum import SumStats

    class MySum(SumStats):
        pass

    m = DeferredMetricsLogger(root=False, stats_cls_lookup={**DEFAULT_STATS_CLS_LOOKUP, "sum": MySum})
    m.defer()
    m.log_value("n", 2, reduce="sum")
    assert m._key_in_stats(("n",))  # logged at once: the class's reduction is not known
    m.log_value("loss", 1.0, window=1)
    assert not m._key_in_stats(("loss",))
    m.stop_deferring()


def test_deferred_metrics_are_readable_while_held():
    m = DeferredMetricsLogger(root=False)
    m.defer()
    m.log_value(("p", "kl"), 0.25, window=1)
    m.log_value(("p", "n"), 3, reduce="sum")
    assert m.peek(("p", "kl")) == 0.25 and ("p", "n") in m  # reading flushes what is held
    m.log_value(("p", "n"), 4, reduce="sum")
    m.stop_deferring()
    assert m.peek(("p", "n")) == 7
    m.defer()
    m.log_value(("p", "kl"), 9.0, window=1)
    state = m.get_state()  # includes what was held
    m.log_value(("p", "kl"), 5.0, window=1)
    m.set_state(state)  # a restore replaces what was logged since (as in RLlib's logger)
    m.stop_deferring()
    assert m.peek(("p", "kl")) == 9.0


def _batch(n: int, seed: int = 0, **extra) -> SampleBatch:
    g = torch.Generator().manual_seed(seed)
    cols = {"obs": torch.randn(n, 4, generator=g), "actions": torch.randint(0, 2, (n,), generator=g),
            "advantages": torch.randn(n, generator=g), **extra}
    return SampleBatch(cols, _num_grad_updates=3, _max_seq_len=20)  # RLlib's slices drop max_seq_len


def _minibatches(cls, n, size, epochs, shuffle, total=0, seed=0):
    np.random.seed(seed)  # SampleBatch.shuffle draws from numpy's global generator
    ma = MultiAgentBatch({"default_policy": _batch(n)}, env_steps=n)
    it = MiniBatchCyclicIterator(ma, num_epochs=epochs, minibatch_size=size,
                                 shuffle_batch_per_epoch=shuffle, num_total_minibatches=total)
    if cls is LeanCyclicIterator:
        it = LeanCyclicIterator.from_rllib(it)
    return list(it)


@pytest.mark.parametrize("n,size,epochs,shuffle,total", [
    (200, 64, 3, True, 0),    # minibatches across the epoch boundary
    (256, 64, 2, True, 0),    # an epoch ending exactly at a minibatch's end
    (100, 128, 2, False, 0),  # a minibatch larger than the batch
    (200, 48, 1, True, 7),    # a fixed number of minibatches
])
def test_lean_minibatches_are_rllibs(monkeypatch, n, size, epochs, shuffle, total):
    calls = []
    concat = parts._concat
    monkeypatch.setattr(parts, "_concat", lambda *a: calls.append(1) or concat(*a))
    theirs = _minibatches(MiniBatchCyclicIterator, n, size, epochs, shuffle, total)
    ours = _minibatches(LeanCyclicIterator, n, size, epochs, shuffle, total)
    assert len(calls) == len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert a.env_steps() == b.env_steps() and set(a.policy_batches) == set(b.policy_batches)
        x, y = a.policy_batches["default_policy"], b.policy_batches["default_policy"]
        assert x.keys() == y.keys() and len(x) == len(y) == size
        for key in y:
            assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key])
        for attr in ("num_grad_updates", "time_major", "zero_padded", "max_seq_len", "is_training",
                     "_slice_seq_lens_in_B"):
            assert getattr(x, attr) == getattr(y, attr), attr


def test_lean_minibatches_leave_other_batches_to_rllib(monkeypatch):
    """Batches the lean path does not cover (here: numpy columns) go through RLlib's own loop."""
    calls = []
    monkeypatch.setattr(parts, "_concat", lambda *a: calls.append(1))
    batch = SampleBatch({"obs": np.zeros((50, 2), np.float32), "actions": np.arange(50)})
    it = LeanCyclicIterator(MultiAgentBatch({"p": batch}, env_steps=50), num_epochs=1,
                            minibatch_size=20, shuffle_batch_per_epoch=False)
    got = [mb.policy_batches["p"]["actions"] for mb in it]
    assert not calls and [list(a) for a in got] == [list(range(20)), list(range(20, 40)),
                                                    list(range(40, 50)) + list(range(10))]
