"""bf16 mixed precision (issue 20, item 5): Lightning's bf16-mixed, autocast in RLlib's Learner,
the LIF dynamics kept in fp32, and the one-line notice on CPUs without bf16."""

import math
import warnings

import pytest
import torch

from snnlab import precision
from snnlab.config import ConfigError
from snnlab.experiment import validate_experiment
from snnlab.spiking import SpikingMLP, SpikingMLPConfig
from snnlab.supervised import train_supervised

from .test_supervised import read_metrics, small_cfg


def _dtypes(net):
    """Record the dtype of each Linear's output and each LIF layer's input during forwards."""
    seen = {"linear": [], "lif": []}
    hooks = [lin.register_forward_hook(lambda m, a, out: seen["linear"].append(out.dtype))
             for lin in [*net.linears, net.readout]]
    hooks += [lif.register_forward_pre_hook(lambda m, a: seen["lif"].append(a[0].dtype)) for lif in net.lifs]
    return seen, hooks


@pytest.mark.parametrize("backend", ["cpp", "fused"])
def test_lif_dynamics_stay_fp32_under_bf16_autocast(backend):
    torch.manual_seed(0)
    net = SpikingMLP(SpikingMLPConfig(n_in=18, n_out=4, hidden=(64, 32), num_steps=4, backend=backend,
                                      neuron_init="uniform", learn_beta=True, learn_threshold=True))
    x = torch.randn(256, 18)
    seen, hooks = _dtypes(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    for h in hooks:
        h.remove()
    assert set(seen["linear"]) == {torch.bfloat16}  # the matmuls ran in bf16
    assert set(seen["lif"]) == {torch.float32}  # ... the membranes did not
    assert all(r.dtype == torch.float32 for r in out.rates) and all(s.dtype == torch.float32 for s in out.state)
    out.out.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    # the same network in fp32: rates close (bf16 currents flip a few threshold crossings)
    ref = net(x)
    for r16, r32 in zip(out.rates, ref.rates):
        assert abs(float(r16) - float(r32)) < 0.02


def test_fp32_forward_is_untouched_by_the_island():
    """Without autocast the cast is skipped: the same forward twice, bit for bit, on a seeded net."""
    torch.manual_seed(1)
    net = SpikingMLP(SpikingMLPConfig(n_in=5, n_out=2, hidden=(16, 8), num_steps=3))
    x = torch.randn(32, 5)
    seen, hooks = _dtypes(net)
    a, b = net(x).out, net(x).out
    for h in hooks:
        h.remove()
    assert torch.equal(a, b) and set(seen["linear"]) == set(seen["lif"]) == {torch.float32}


def test_supervised_bf16_mixed_trains_through_lightning(tmp_path):
    cfg = small_cfg(tmp_path, "trainer.precision=bf16-mixed")
    from snnlab.supervised.train import build, build_trainer

    dm, module, slope_cb = build(cfg, progress=False)
    trainer = build_trainer(cfg, slope_cb, logger=False, progress=False, checkpointing=False, root_dir=tmp_path)
    assert trainer.precision == "bf16-mixed"  # Lightning's own plugin: autocast on the CPU
    result = train_supervised(cfg)
    rows = read_metrics(result.run_dir)
    acc = [float(r["val_acc"]) for r in rows if r.get("val_acc")]
    assert len(acc) == 2 and acc[-1] > 0.5  # digits after 2 epochs of a 32-neuron net


def test_precision_is_validated_in_both_worlds():
    with pytest.raises(ConfigError, match=r"trainer\.precision.*'32-true' or 'bf16-mixed'"):
        validate_experiment({"kind": "supervised", "trainer": {"precision": "16-mixed"}}, "t")
    with pytest.raises(ConfigError, match=r"runners\.precision.*'32-true' or 'bf16-mixed'"):
        validate_experiment({"kind": "rl", "env": "CartPole-v1", "runners": {"precision": "bf16"}}, "t")


def test_a_cpu_without_bf16_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        precision.check_precision("bf16-mixed", "trainer.precision")
        precision.check_precision("32-true", "trainer.precision")
    assert len(got) == 1 and "\n" not in str(got[0].message)
    assert "trainer.precision: bf16-mixed on a CPU without bf16" in str(got[0].message)


def test_td3_learner_updates_under_autocast(ray_session):
    from snnlab.rl.train import build_algorithm_config

    data = {"kind": "rl", "env": "Pendulum-v1", "seed": 0,
            "algorithm": {"name": "TD3", "train_batch_size": 32, "learning_starts": 64,
                          "env_steps_per_iteration": 64, "replay_capacity": 2000},
            "model": {"hidden": [16, 16], "num_steps": 2, "critic_hidden": [16]},
            "slope": {"kind": "fixed", "k": 5}, "logging": {"wandb": "off"},
            "runners": {"precision": "bf16-mixed"}}
    algo = build_algorithm_config(validate_experiment(data, "t")).build_algo()
    try:
        learner = algo.learner_group._learner
        assert type(learner).__name__ == "BF16TD3TorchLearner"
        mod = learner.module["default_policy"]
        seen, hooks = _dtypes(mod.pi.body)  # the spiking actor (a SpikingMLP)
        w0 = [p.detach().clone() for p in mod.parameters()]
        for _ in range(3):
            result = algo.train()
        for h in hooks:
            h.remove()
        assert torch.bfloat16 in seen["linear"] and set(seen["lif"]) == {torch.float32}
        assert all(p.dtype == torch.float32 for p in mod.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(w0, mod.parameters()))
        losses = result["learners"]["default_policy"]
        assert all(math.isfinite(v) for k, v in losses.items() if "loss" in k and isinstance(v, float))
    finally:
        algo.stop()
