"""PPO with the spiking actor: RLlib's PPO, its ``algorithm:`` section and its registry entry.

The module is :class:`snnlab.rl.modules.SpikingPPOModule` (spiking actor, ANN value head;
``reset`` or ``sequence`` mode). ``SpikingPPO`` is RLlib's PPO whose checkpoints also hold the
slope schedule and the reward curriculum; its Learner is RLlib's ``PPOTorchLearner`` with one
finiteness check of all gradients per minibatch instead of two per parameter
(:class:`snnlab.rl.learner.OneFiniteCheckMixin`), its metrics logged once per update call
instead of once per minibatch (:class:`~snnlab.rl.learner.DeferredMetricsMixin`), minibatches cut
as column slices (:class:`~snnlab.rl.learner.LeanMinibatchMixin`) and torch's foreach Adam; the
updates and the reported learner metrics are bit-identical to RLlib's. ``adam: fused`` (torch's
one-kernel Adam) is faster and rounds differently (float32 rounding only).
"""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import torch
from pydantic import Field
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.utils.annotations import override

from ..config import Strict
from .callbacks import SpikingStateMixin
from .entry import AlgorithmEntry, box_actions
from .learner import ADAM_IMPLS, DeferredMetricsMixin, LeanMinibatchMixin, OneFiniteCheckMixin
from .modules import SpikingPPOModule


class PPOParams(Strict):
    name: Literal["PPO"] = "PPO"
    lr: float = Field(3e-4, gt=0.0)
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    lambda_: float = Field(0.95, ge=0.0, le=1.0)
    clip_param: float = Field(0.2, gt=0.0)
    vf_clip_param: float = Field(10.0, gt=0.0)
    entropy_coeff: float = Field(0.0, ge=0.0)
    vf_loss_coeff: float = Field(1.0, ge=0.0)
    train_batch_size: int = Field(2000, gt=0, description="env steps per iteration")
    minibatch_size: int = Field(128, gt=0)
    num_epochs: int = Field(10, gt=0)
    grad_clip: float | None = Field(None, gt=0.0)
    adam: Literal["foreach", "loop", "fused"] = Field(
        "foreach", description="torch's Adam implementation: foreach (default) or loop give RLlib's "
        "PPO bit for bit; fused is faster and rounds differently (float32 rounding only)")


class SpikingPPO(SpikingStateMixin, PPO):
    """RLlib's PPO whose checkpoints also hold the slope schedule and the reward curriculum."""


class SpikingPPOTorchLearner(OneFiniteCheckMixin, DeferredMetricsMixin, LeanMinibatchMixin,
                             PPOTorchLearner):
    """RLlib's PPO Learner; ``apply_gradients`` checks all gradients for finiteness at once,
    metrics are logged once per update call, minibatches are column slices, and the Adam step runs
    the config's implementation (``foreach`` by default: bit-identical to the per-parameter loop
    torch runs on a CPU by default; tests/test_rl_algorithms.py checks the whole against RLlib's)."""

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        # TorchLearner's default (one Adam over the module, lr from config.lr), config.adam's kind
        params = self.get_parameters(self._module[module_id])
        adam = torch.optim.Adam(params, **ADAM_IMPLS[getattr(config, "adam", "foreach")])
        self.register_optimizer(module_id=module_id, optimizer=adam, params=params,
                                lr_or_lr_schedule=config.lr)


class SpikingPPOConfig(PPOConfig):
    """RLlib's PPOConfig whose default Learner is :class:`SpikingPPOTorchLearner`, plus ``adam``:
    torch's Adam implementation (:data:`snnlab.rl.learner.ADAM_IMPLS`)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class)
        self.adam = "foreach"

    @override(PPOConfig)
    def training(self, *, adam=NotProvided, **kwargs) -> "SpikingPPOConfig":
        super().training(**kwargs)
        if adam is not NotProvided:
            self.adam = adam
        return self

    @override(PPOConfig)
    def validate(self) -> None:
        super().validate()
        if self.adam not in ADAM_IMPLS:
            self._value_error(f"adam must be one of {', '.join(ADAM_IMPLS)}, got {self.adam!r}")

    @override(PPOConfig)
    def get_default_learner_class(self):
        return SpikingPPOTorchLearner


def build(cfg) -> tuple[PPOConfig, type]:
    a = cfg.algorithm
    config = SpikingPPOConfig(algo_class=SpikingPPO).training(
        lr=a.lr, gamma=a.gamma, lambda_=a.lambda_, clip_param=a.clip_param,
        vf_clip_param=a.vf_clip_param, entropy_coeff=a.entropy_coeff,
        vf_loss_coeff=a.vf_loss_coeff, train_batch_size_per_learner=a.train_batch_size,
        minibatch_size=a.minibatch_size, num_epochs=a.num_epochs, grad_clip=a.grad_clip, adam=a.adam,
    )
    return config, SpikingPPOModule


def actor_outputs(space: gym.Space) -> int:
    """Logits of a Discrete space; the Gaussian's mean of a Box (the log-std is a parameter)."""
    return int(space.n) if isinstance(space, gym.spaces.Discrete) else box_actions(space)


ALGORITHM = AlgorithmEntry(
    name="PPO", params=PPOParams, build=build, algorithm=SpikingPPO, actor_outputs=actor_outputs,
    smoke={"algorithm.train_batch_size": 256, "algorithm.minibatch_size": 64, "algorithm.num_epochs": 2},
    sequence_mode=True,
)
