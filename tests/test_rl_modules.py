"""The spiking RLModules on their own (no Ray cluster needed)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from snnlab.rl.callbacks import get_module_slope, set_module_slope
from snnlab.rl.modules import SpikingPPOModule

OBS = gym.spaces.Box(-1, 1, (5,), np.float32)
CFG = {"hidden": [16, 16], "num_steps": 3, "slope": 10.0, "critic_hidden": [8]}


def module(action_space, **kw):
    torch.manual_seed(0)
    return SpikingPPOModule(observation_space=OBS, action_space=action_space,
                            model_config={**CFG, **kw})


def test_reset_mode_discrete_is_stateless_and_slope_free_in_forward():
    m = module(gym.spaces.Discrete(3))
    assert not m.is_stateful() and m.get_initial_state() == {}
    batch = {Columns.OBS: torch.randn(7, 5)}
    outs = []
    for k in (1.0, 25.0, 100.0):
        set_module_slope(m, k)
        assert get_module_slope(m) == k
        outs.append(m.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS])
    assert outs[0].shape == (7, 3)
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert m.compute_values(batch).shape == (7,)


def test_reset_mode_continuous_outputs_mean_and_log_std():
    m = module(gym.spaces.Box(-1, 1, (2,), np.float32), initial_log_std=-0.5)
    out = m.forward_inference({Columns.OBS: torch.randn(4, 5)})[Columns.ACTION_DIST_INPUTS]
    assert out.shape == (4, 4)
    assert torch.all(out[:, 2:] == -0.5)


def test_sequence_mode_carries_membranes_as_rllib_state():
    m = module(gym.spaces.Discrete(2), mode="sequence", max_seq_len=4)
    assert m.is_stateful()
    init = m.get_initial_state()
    assert set(init) == {"mem0", "mem1"} and init["mem0"].shape == (16,)
    B, L = 3, 4
    obs = torch.randn(B, L, 5)
    state = {k: torch.from_numpy(v).unsqueeze(0).repeat(B, 1) for k, v in init.items()}
    full = m.forward_train({Columns.OBS: obs, Columns.STATE_IN: state})
    assert full[Columns.ACTION_DIST_INPUTS].shape == (B, L, 2)
    # one env step at a time, as the EnvRunner calls it (T=1), carrying STATE_OUT -> STATE_IN
    s, steps = state, []
    for t in range(L):
        o = m.forward_exploration({Columns.OBS: obs[:, t:t + 1], Columns.STATE_IN: s})
        steps.append(o[Columns.ACTION_DIST_INPUTS])
        s = o[Columns.STATE_OUT]
    torch.testing.assert_close(torch.cat(steps, dim=1), full[Columns.ACTION_DIST_INPUTS])
    for k in s:
        torch.testing.assert_close(s[k], full[Columns.STATE_OUT][k])
    # the carried state matters: starting from the end state gives different outputs
    again = m.forward_train({Columns.OBS: obs, Columns.STATE_IN: s})
    assert not torch.equal(again[Columns.ACTION_DIST_INPUTS], full[Columns.ACTION_DIST_INPUTS])


def test_bad_spaces_and_mode():
    with pytest.raises(ValueError, match="mode"):
        module(gym.spaces.Discrete(2), mode="carry")
    with pytest.raises(ValueError, match="flat Box"):
        SpikingPPOModule(observation_space=gym.spaces.Discrete(4), action_space=gym.spaces.Discrete(2),
                         model_config=CFG)


def test_mode_is_walked_only_when_it_changes(monkeypatch):
    """RLlib sets the mode around every call; the module walks its submodules only when the mode
    really changes (it starts in eval mode, as an EnvRunner uses it), and the outputs do not
    depend on the mode."""
    m = module(gym.spaces.Discrete(3))
    assert not m.training and not any(s.training for s in m.modules())
    walks = []
    real = torch.nn.Module.train
    monkeypatch.setattr(torch.nn.Module, "train", lambda self, mode=True: walks.append(mode) or real(self, mode))
    batch = {Columns.OBS: torch.randn(7, 5)}
    explored = [m.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS] for _ in range(3)]
    assert walks == []  # EnvRunner: eval throughout, no walk
    trained = [m.forward_train(batch)[Columns.ACTION_DIST_INPUTS] for _ in range(3)]
    assert walks == [True] * len(list(m.modules()))  # one walk into training mode (self + every submodule)
    assert all(s.training for s in m.modules())
    assert all(torch.equal(a, b) for a, b in zip(explored, trained))
    m.forward_exploration(batch)  # RLlib's eval + train round trip: two walks, mode restored
    assert m.training and walks.count(False) >= 1
