"""Spiking RLlib RLModules (new API stack) built on the shared SpikingMLP.

Two modes (``model_config["mode"]``):

- ``reset`` (the paper's Part 1): membranes are reset before every action
  and the network runs ``num_steps`` internal steps on the same observation.
  Stateless from RLlib's point of view, so it works with any algorithm.
- ``sequence``: membranes are carried across environment steps as the
  module's RLlib state (``STATE_IN`` / ``STATE_OUT``, one entry per LIF
  layer); each environment step runs ``num_steps`` internal steps. The
  Learner trains on chunks of ``max_seq_len`` steps (truncated BPTT).

The critic (PPO's value function, SAC's twin Q networks) is a plain ANN, as in
the paper. The spiking network's readout gives the action distribution's
inputs directly (logits; or the Gaussian mean, with a state-independent
learnable log-std for PPO).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from ..spiking import SpikingMLP, SpikingMLPConfig

#: keys of ``model_config`` that shape the spiking network (see snnlab.rl.config.RLModelConfig)
NETWORK_KEYS = ("hidden", "num_steps", "readout", "surrogate", "slope", "beta", "threshold",
                "learn_beta", "learn_threshold", "neuron_init", "weight_init", "init_gain", "backend",
                "spike_matmul")


def build_network(model_config: dict, n_in: int, n_out: int) -> SpikingMLP:
    kw = {k: model_config[k] for k in NETWORK_KEYS if k in model_config}
    if "hidden" in kw:
        kw["hidden"] = tuple(kw["hidden"])
    return SpikingMLP(SpikingMLPConfig(n_in=n_in, n_out=n_out, **kw))


def mlp(n_in: int, hidden: list[int], n_out: int, activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), activation()]
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def obs_dim(space: gym.Space) -> int:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"spiking modules need a flat Box observation space, got {space}")
    return int(space.shape[0])


class SpikingPPOModule(TorchRLModule, ValueFunctionAPI):
    """Spiking actor + ANN value function, for PPO (discrete or continuous actions)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = self.model_config
        self.mode = cfg.get("mode", "reset")
        if self.mode not in ("reset", "sequence"):
            raise ValueError(f"mode must be 'reset' or 'sequence', got {self.mode!r}")
        n_obs = obs_dim(self.observation_space)
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            n_out, self.continuous = int(space.n), False
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            n_out, self.continuous = int(space.shape[0]), True
            self.log_std = nn.Parameter(torch.full((n_out,), float(cfg.get("initial_log_std", 0.0))))
        else:
            raise ValueError(f"unsupported action space {space}")
        self.net = build_network(cfg, n_obs, n_out)
        self.vf = mlp(n_obs, list(cfg.get("critic_hidden", [64, 64])), 1)
        # No layer here behaves differently in training and eval mode, yet RLlib sets the mode
        # around every call (eval + train per exploration step, train per minibatch), each a walk
        # over every submodule (~10% of an iteration). Start in eval mode and walk only when the
        # mode changes (train()): an EnvRunner's copy stays in eval mode, the Learner's switches
        # to training once.
        self.eval()

    def train(self, mode: bool = True) -> SpikingPPOModule:
        if mode == self.training:
            return self
        return super().train(mode)

    # --- state (sequence mode) ---------------------------------------------
    @override(TorchRLModule)
    def get_initial_state(self) -> dict:
        if self.mode != "sequence":
            return {}
        return {f"mem{i}": np.zeros(lif.size, dtype=np.float32) for i, lif in enumerate(self.net.lifs)}

    # --- forward -------------------------------------------------------------
    def _actor(self, batch: dict[str, Any]) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        out: dict[str, Any] = {}
        if self.mode == "reset":
            y = self.net(obs).out
        else:  # obs: [B, L, n_obs]; one env step = num_steps internal steps
            state = [batch[Columns.STATE_IN][f"mem{i}"] for i in range(len(self.net.lifs))]
            x_seq = obs.transpose(0, 1).repeat_interleave(self.net.num_steps, dim=0)
            res = self.net.forward_steps(x_seq, state)
            y = res.out.transpose(0, 1)
            out[Columns.STATE_OUT] = {f"mem{i}": m for i, m in enumerate(res.state)}
        if self.continuous:
            y = torch.cat([y, self.log_std.expand_as(y)], dim=-1)
        out[Columns.ACTION_DIST_INPUTS] = y
        return out

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._actor(batch)

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.vf(batch[Columns.OBS]).squeeze(-1)


class SpikingEncoder(nn.Module):
    """Adapter: RLlib encoders take a batch dict and return {ENCODER_OUT: tensor}."""

    def __init__(self, net: SpikingMLP) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {ENCODER_OUT: self.net(batch[Columns.OBS]).out}
