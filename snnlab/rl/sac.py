"""RLlib's SAC with snnlab's flat replay buffer (the default for ``algorithm: {name: SAC}``).

Profiled on 2 cores (docs/benchmarks.md): RLlib's ``EpisodeReplayBuffer`` spends most of an
SAC update building one episode object per sampled transition, and the learner connector
turns them back into a batch. :class:`FlatSACConfig` is RLlib's ``SACConfig`` that also
accepts :class:`~snnlab.rl.replay.FlatEpisodeReplayBuffer` (whose samples carry the same
columns, ``weights`` and ``n_step`` included, that SAC's loss reads); the algorithm
(``SpikingSAC``) takes :class:`~snnlab.rl.replay.FlatReplayTrainingStep`'s step with it.
RLlib's own buffers (``replay_buffer: episode``, prioritized replay) keep SAC unchanged.

The module (:class:`SpikingSACModule`) is RLlib's default SAC module with the policy network
replaced by the spiking MLP, whose readout emits the squashed Gaussian's mean and log-std;
RLlib's twin Q networks and targets stay. Also here: SAC's ``algorithm:`` section
(:class:`SACParams`) and its registry entry.
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
from pydantic import Field, model_validator
from ray.rllib.algorithms.sac import SAC, SACConfig
from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from ..config import Strict
from .callbacks import SpikingStateMixin
from .entry import AlgorithmEntry, box_actions
from .modules import SpikingEncoder, build_network, obs_dim
from .replay import FLAT_BUFFER, FlatReplayTrainingStep, ReplayParams


class FlatSACConfig(SACConfig):
    """``SACConfig`` whose validation also admits the flat buffer (1-step targets only)."""

    @override(SACConfig)
    def validate(self) -> None:
        buffer = self.replay_buffer_config
        if buffer.get("type") != FLAT_BUFFER:
            return super().validate()
        if self.n_step != 1:
            self._value_error(f"n_step {self.n_step} needs RLlib's EpisodeReplayBuffer; the flat "
                              "buffer stores 1-step transitions")
        # SACConfig.validate accepts RLlib's episode buffers by name only; the flat buffer is
        # one of them (a subclass of EpisodeReplayBuffer with its interface)
        self.replay_buffer_config = {**buffer, "type": "EpisodeReplayBuffer"}
        try:
            super().validate()
        finally:
            self.replay_buffer_config = buffer


class SpikingSACModule(DefaultSACTorchRLModule):
    """RLlib's SAC module with the policy network replaced by the spiking MLP.

    The twin Q networks and their targets stay RLlib's ANNs. Reset mode only: RLlib's SAC
    does not train stateful modules.
    """

    @override(DefaultSACTorchRLModule)
    def setup(self) -> None:
        super().setup()
        cfg = self.model_config
        if cfg.get("mode", "reset") != "reset":
            raise ValueError("SAC supports only mode 'reset' (RLlib's SAC has no stateful modules)")
        n_obs = obs_dim(self.observation_space)
        n_out = actor_outputs(self.action_space)  # mean and log-std of the squashed Gaussian
        self.pi_encoder = SpikingEncoder(build_network(cfg, n_obs, n_out))
        self.pi = nn.Identity()


class SpikingSAC(SpikingStateMixin, FlatReplayTrainingStep, SAC):
    """RLlib's SAC whose checkpoints also hold the slope schedule and the reward curriculum;
    with snnlab's flat replay buffer it trains with the flat step."""


class _SACOwn(Strict):
    name: Literal["SAC"]
    actor_lr: float = Field(3e-4, gt=0.0)
    critic_lr: float = Field(3e-4, gt=0.0)
    alpha_lr: float = Field(3e-4, gt=0.0)
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    tau: float = Field(0.005, gt=0.0, le=1.0)
    initial_alpha: float = Field(1.0, gt=0.0)


class SACParams(ReplayParams, _SACOwn):
    """SAC's ``algorithm:`` section: its own keys, then the replay keys (:class:`ReplayParams`)."""

    prioritized_replay: bool = Field(False, description="RLlib's PrioritizedEpisodeReplayBuffer "
                                     "(slower per update; needs replay_buffer: episode)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "training_intensity" in data:
            raise ValueError("training_intensity is now updates_per_env_step (gradient updates per env "
                             "step sampled = training_intensity / train_batch_size), as for TD3")
        return data

    @model_validator(mode="after")
    def _prioritized_needs_episode_buffer(self):
        if self.prioritized_replay and "replay_buffer" in self.model_fields_set and self.replay_buffer == "flat":
            raise ValueError("prioritized_replay needs replay_buffer: episode (RLlib's prioritized "
                             "buffer); the flat buffer samples uniformly")
        return self  # prioritized_replay alone selects RLlib's prioritized buffer (buffer_config)

    def buffer_config(self) -> dict[str, Any]:
        if self.prioritized_replay:
            return {"type": "PrioritizedEpisodeReplayBuffer", "capacity": self.replay_capacity,
                    "alpha": 0.6, "beta": 0.4}
        return super().buffer_config()


def build(cfg) -> tuple[FlatSACConfig, type]:
    a = cfg.algorithm
    config = FlatSACConfig(algo_class=SpikingSAC).training(
        actor_lr=a.actor_lr, critic_lr=a.critic_lr, alpha_lr=a.alpha_lr, gamma=a.gamma,
        tau=a.tau, initial_alpha=a.initial_alpha, train_batch_size_per_learner=a.train_batch_size,
        num_steps_sampled_before_learning_starts=a.learning_starts,
        training_intensity=a.training_intensity(cfg.runners.num_env_runners),
        replay_buffer_config=a.buffer_config(),
    ).env_runners(rollout_fragment_length=a.rollout_fragment_length).reporting(
        min_sample_timesteps_per_iteration=a.env_steps_per_iteration)
    return config, SpikingSACModule


def actor_outputs(space: gym.Space) -> int:
    """The squashed Gaussian's mean and log-std per action dimension."""
    return 2 * box_actions(space)


ALGORITHM = AlgorithmEntry(
    name="SAC", params=SACParams, build=build, algorithm=SpikingSAC, actor_outputs=actor_outputs,
    smoke={"algorithm.learning_starts": 64, "algorithm.env_steps_per_iteration": 64,
           "algorithm.train_batch_size": 32},
)
