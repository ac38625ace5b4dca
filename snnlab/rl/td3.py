"""TD3 (Fujimoto et al. 2018) on RLlib's new API stack, built the way RLlib builds SAC.

RLlib 2.60 ships no TD3; this file adds it from RLlib's own parts, one piece per RLlib
concept, each the counterpart of a SAC piece:

=====================  =============================================  ===========================
piece                  TD3 here                                       SAC in RLlib
=====================  =============================================  ===========================
AlgorithmConfig        :class:`TD3Config`                             ``SACConfig``
Algorithm              :class:`TD3` (DQN's step, flat batches)        ``SAC`` (DQN's training step)
RLModule               :class:`TD3TorchRLModule`                      ``DefaultSACTorchRLModule``
Learner                :class:`TD3TorchLearner`                       ``SACTorchLearner``
replay buffer          snnlab's ``FlatEpisodeReplayBuffer`` (default;  ``EpisodeReplayBuffer``
                       ``replay_buffer: episode``: RLlib's)
=====================  =============================================  ===========================

The training step (:class:`snnlab.rl.replay.FlatReplayTrainingStep`) is DQN's, as for SAC:
sample ``rollout_fragment_length`` steps per env, add them to the replay buffer, and - once
``num_steps_sampled_before_learning_starts`` env steps were sampled - draw ``train_batch_size``
transitions and make one Learner update, as many times per sampling round as
``training_intensity`` asks (from ``updates_per_env_step``); then sync the weights to the
EnvRunners. With the flat buffer the batches go to ``learner_group.update(batch=...)`` as
columns - all of a round's updates in one call (``TD3.updates_in_one_call``): the Learner cuts
the batch into minibatches of ``train_batch_size`` in order and makes one update each, moving
the targets per minibatch, so the updates are those of one call per batch, bit for bit, while
RLlib's per-call work (batch conversion, metrics reduce) happens once per round; with RLlib's
buffer (``replay_buffer: episode``) DQN's step runs unchanged.

Speed (issue #20, ``benchmarks/floor.py``): one finiteness check of all gradients instead of
RLlib's ``torch.isfinite`` per parameter (a slow scalar loop on CPU), Polyak averaging as
three foreach ops, no ``train()`` walk over the submodules per update, torch's fused Adam
(``adam: fused``, the default; ``foreach`` / ``loop`` reproduce the old parameters bit for bit,
fused ones differ by float32 rounding); ``model.spike_matmul: sparse`` runs the actor's second
layer as a sparse spike matmul (equal to float32 rounding; no measurable gain here yet).

Actions live in [-1, 1] inside the module (RLlib's ``normalize_actions``, on by default,
rescales them to the env's Box). One Learner update on a batch (s, a, r, s', done)::

    a'   = clip(pi_targ(s') + clip(N(0, target_noise^2), -target_noise_clip, +target_noise_clip), -1, 1)
    y    = r + gamma^n (1 - done) min(Q1_targ(s', a'), Q2_targ(s', a'))     (clipped double Q)
    L_Q  = mean (Q1(s, a) - y)^2 + mean (Q2(s, a) - y)^2                     (every update)
    every policy_delay-th update (the 1st, the (d+1)-th, ...):
    L_pi = -mean Q1(s, pi(s))                                                (critics frozen)
    theta_targ <- tau theta + (1 - tau) theta_targ   for pi, Q1 and Q2       (after L_pi's step)

Exploration on the EnvRunners (``forward_exploration``, with RLlib's global env step t):
uniform random actions while t < ``num_steps_sampled_before_learning_starts`` (the random
warm-up), then ``clip(pi(s) + N(0, exploration_noise^2), -1, 1)``. Evaluation runners
(``explore=False``) act with ``pi(s)``.

The actor is deterministic: ``tanh`` of the spiking MLP's readout (``model_config["actor"]
= "spiking"``, the paper's; reset mode: fresh membranes and ``num_steps`` internal steps per
action) or of an MLP (``"mlp"``, the ANN baseline). The critics are ReLU MLPs on
``concat(obs, action)``. ``model_config["actor_inputs"]`` (> 0) lets the actor read only the
first that many observation values, e.g. the 18 base values of the quadrotor while the
critics also see its action history.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

import gymnasium as gym
import torch
from pydantic import Field
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.dqn.dqn import DQN
from ray.rllib.algorithms.dqn.dqn_learner import DQNLearner
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.core.learner.utils import make_target_network, update_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import NUM_TARGET_UPDATES, TD_ERROR_KEY
from torch import nn

from .callbacks import SpikingStateMixin
from .entry import AlgorithmEntry, box_actions
from .learner import ADAM_IMPLS, OneFiniteCheckMixin
from .modules import build_network, mlp, obs_dim
from ..config import Strict
from .replay import FLAT_BUFFER, FlatReplayTrainingStep, ReplayParams

QF_PREDS = "qf_preds"
QF_TWIN_PREDS = "qf_twin_preds"
QF_TARGET_NEXT = "q_target_next"
QF_LOSS_KEY = "qf_loss"

#: the flat buffer (default, fast) or RLlib's own episode buffers (DQN's training step)
REPLAY_BUFFERS = (FLAT_BUFFER, "EpisodeReplayBuffer", "PrioritizedEpisodeReplayBuffer")


def _known_buffer(kind) -> bool:
    """A name of REPLAY_BUFFERS, or the class RLlib's from_config may have put in its place."""
    from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer

    return kind in REPLAY_BUFFERS or (isinstance(kind, type) and issubclass(kind, EpisodeReplayBuffer))


class TD3Config(AlgorithmConfig):
    """TD3's hyper-parameters; the defaults are the TD3 paper's (and the snnlab paper's).

    .. code-block:: python

        config = (TD3Config().environment("Pendulum-v1")
                  .training(actor_lr=1e-3, critic_lr=1e-3, policy_delay=2))
        algo = config.build_algo()
        algo.train()
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or TD3)
        self.actor_lr = 1e-3
        self.critic_lr = 1e-3
        self.lr = None  # per-network rates above, as in SAC
        self.tau = 0.005
        self.policy_delay = 2
        self.target_noise = 0.2
        self.target_noise_clip = 0.5
        self.exploration_noise = 0.1
        self.n_step = 1
        self.training_intensity = None
        self.target_network_update_freq = 0  # DQNLearner's knob; TD3 moves targets with the actor
        self.replay_buffer_config = {"type": FLAT_BUFFER, "capacity": int(1e6)}
        self.store_buffer_in_checkpoints = False
        self.num_steps_sampled_before_learning_starts = 10_000
        self.train_batch_size_per_learner = 256
        self.rollout_fragment_length = 1
        self.grad_clip = None
        self.adam = "fused"  # torch's Adam implementation: fused | foreach | loop (see ADAM_IMPLS)
        self.min_time_s_per_iteration = None
        self.min_sample_timesteps_per_iteration = 1000

    @override(AlgorithmConfig)
    def training(self, *, actor_lr=NotProvided, critic_lr=NotProvided, tau=NotProvided,
                 policy_delay=NotProvided, target_noise=NotProvided,
                 target_noise_clip=NotProvided, exploration_noise=NotProvided, n_step=NotProvided,
                 training_intensity=NotProvided, replay_buffer_config=NotProvided,
                 store_buffer_in_checkpoints=NotProvided,
                 num_steps_sampled_before_learning_starts=NotProvided, adam=NotProvided,
                 **kwargs) -> TD3Config:
        """TD3's knobs (see the module docstring for where each one acts); the rest as for
        every AlgorithmConfig (``gamma``, ``grad_clip``, ``train_batch_size_per_learner``, ...).

        ``training_intensity``: transitions trained on per transition sampled, as in SAC/DQN;
        ``train_batch_size`` times the updates per env step. ``adam``: torch's Adam
        implementation for both optimizers (:data:`ADAM_IMPLS`).
        """
        super().training(**kwargs)
        for name, value in dict(
            actor_lr=actor_lr, critic_lr=critic_lr, tau=tau, policy_delay=policy_delay,
            target_noise=target_noise, target_noise_clip=target_noise_clip,
            exploration_noise=exploration_noise, n_step=n_step,
            training_intensity=training_intensity, store_buffer_in_checkpoints=store_buffer_in_checkpoints,
            num_steps_sampled_before_learning_starts=num_steps_sampled_before_learning_starts,
            adam=adam,
        ).items():
            if value is not NotProvided:
                setattr(self, name, value)
        if replay_buffer_config is not NotProvided:
            self.replay_buffer_config = {**self.replay_buffer_config, **replay_buffer_config}
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        checks = [
            (self.policy_delay >= 1, f"policy_delay must be >= 1, got {self.policy_delay}"),
            (0.0 < self.tau <= 1.0, f"tau must be in (0, 1], got {self.tau}"),
            (self.target_noise >= 0.0, f"target_noise must be >= 0, got {self.target_noise}"),
            (self.target_noise_clip >= 0.0, f"target_noise_clip must be >= 0, got {self.target_noise_clip}"),
            (self.exploration_noise >= 0.0, f"exploration_noise must be >= 0, got {self.exploration_noise}"),
            (self.n_step == 1 or self.replay_buffer_config.get("type") != FLAT_BUFFER,
             f"n_step {self.n_step} needs RLlib's EpisodeReplayBuffer; the flat buffer stores 1-step transitions"),
            (self.lr is None, "TD3 uses actor_lr and critic_lr; leave lr at None"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.adam in ADAM_IMPLS, f"adam must be one of {', '.join(ADAM_IMPLS)}, got {self.adam!r}"),
            (_known_buffer(self.replay_buffer_config.get("type")),
             f"replay_buffer_config type must be one of {', '.join(REPLAY_BUFFERS)}"),
        ]
        for ok, message in checks:
            if not ok:
                self._value_error(message)

    @override(AlgorithmConfig)
    def get_rollout_fragment_length(self, worker_index: int = 0) -> int:
        return 1 if self.rollout_fragment_length == "auto" else self.rollout_fragment_length

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=TD3TorchRLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        return TD3TorchLearner

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return super()._model_config_auto_includes | {
            "exploration_noise": self.exploration_noise,
            "random_steps": self.num_steps_sampled_before_learning_starts,
            "target_noise": self.target_noise,
            "target_noise_clip": self.target_noise_clip,
        }


class TD3(FlatReplayTrainingStep, DQN):
    """TD3: DQN's new-API-stack training step (replay buffer, round-robin sampling and
    updates, weight sync) with TD3's module and learner - exactly how RLlib's SAC is built.

    With the default :class:`~snnlab.rl.replay.FlatEpisodeReplayBuffer` the step is
    :class:`~snnlab.rl.replay.FlatReplayTrainingStep`'s: DQN's with one change, the train batch
    comes from the buffer as columns and goes to ``learner_group.update(batch=...)`` (no
    per-transition episode objects, no learner connector). With RLlib's own
    ``EpisodeReplayBuffer`` it is DQN's step unchanged.
    """

    #: a round's updates in one learner_group.update call (TD3TorchLearner acts per minibatch)
    updates_in_one_call = True

    @classmethod
    @override(DQN)
    def get_default_config(cls) -> TD3Config:
        return TD3Config()

# --- RLModule -------------------------------------------------------------------------------
class _TanhActor(nn.Module):
    """a = tanh(body(obs[..., :n_in])): the deterministic actor, actions in [-1, 1]."""

    def __init__(self, body: nn.Module, n_in: int, spiking: bool) -> None:
        super().__init__()
        self.body, self.n_in, self.spiking = body, n_in, spiking

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs[..., : self.n_in]
        y = self.body(x).out if self.spiking else self.body(x)
        return torch.tanh(y)


class _Critic(nn.Module):
    """Q(s, a): a ReLU MLP on concat(obs, action)."""

    def __init__(self, n_obs: int, n_act: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = mlp(n_obs + n_act, hidden, 1, activation=nn.ReLU)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


class TD3TorchRLModule(TorchRLModule, TargetNetworkAPI, QNetAPI, InferenceOnlyAPI):
    """Deterministic actor (``pi``: spiking or MLP, tanh) + twin Q critics + target copies.

    model_config keys: ``actor`` ("spiking" | "mlp"), ``actor_inputs`` (0: all observation
    values), the spiking network's keys (see :mod:`snnlab.rl.modules`), ``hidden`` (also
    the MLP actor's layers), ``critic_hidden``; from TD3Config: ``exploration_noise``,
    ``random_steps``, ``target_noise``, ``target_noise_clip``.
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = self.model_config
        space = self.action_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise ValueError(f"TD3 needs a 1-D Box action space, got {space}")
        if cfg.get("mode", "reset") != "reset":
            raise ValueError("TD3 supports only mode 'reset' (the replay buffer holds single transitions)")
        n_obs, n_act = obs_dim(self.observation_space), int(space.shape[0])
        n_in = int(cfg.get("actor_inputs") or n_obs)
        if not 0 < n_in <= n_obs:
            raise ValueError(f"actor_inputs must be in [1, {n_obs}] (the observation size), got {n_in}")
        kind = cfg.get("actor", "spiking")
        if kind == "spiking":
            body = build_network(cfg, n_in, n_act)
        elif kind == "mlp":
            body = mlp(n_in, list(cfg.get("hidden", [256, 256])), n_act, activation=nn.ReLU)
        else:
            raise ValueError(f"actor must be 'spiking' or 'mlp', got {kind!r}")
        self.pi = _TanhActor(body, n_in, spiking=kind == "spiking")
        if not self.inference_only:
            hidden = list(cfg.get("critic_hidden", [256, 256]))
            self.qf = _Critic(n_obs, n_act, hidden)
            self.qf_twin = _Critic(n_obs, n_act, hidden)

    def _param(self, key: str, default: float) -> float:
        return float(self.model_config.get(key, default))

    # --- EnvRunners -------------------------------------------------------------------------
    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTIONS: self.pi(batch[Columns.OBS])}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], t: int = 0, **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        if t < self._param("random_steps", 0):  # random warm-up: uniform over [-1, 1]
            n = obs.shape[0]
            return {Columns.ACTIONS: torch.rand(n, self.action_space.shape[0]) * 2.0 - 1.0}
        a = self.pi(obs)
        sigma = self._param("exploration_noise", 0.1)
        return {Columns.ACTIONS: (a + sigma * torch.randn_like(a)).clamp(-1.0, 1.0)}

    # --- Learner ------------------------------------------------------------------------------
    def smoothed_target_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """Target-policy smoothing: clip(pi_targ(s) + clip(eps, -c, c), -1, 1), eps ~ N(0, sigma^2)."""
        a = self.target_pi(obs)
        c = self._param("target_noise_clip", 0.5)
        noise = (self._param("target_noise", 0.2) * torch.randn_like(a)).clamp(-c, c)
        return (a + noise).clamp(-1.0, 1.0)

    def train(self, mode: bool = True) -> TD3TorchRLModule:
        # TorchRLModule.forward_train calls self.train() before every update: a walk over every
        # submodule (~0.2 ms here). Walk only when the mode changes (no layer of this module
        # behaves differently in training and eval mode anyway).
        if mode == self.training:
            return self
        return super().train(mode)

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs, actions = batch[Columns.OBS], batch[Columns.ACTIONS]
        out = {QF_PREDS: self.qf(obs, actions), QF_TWIN_PREDS: self.qf_twin(obs, actions)}
        with torch.no_grad():
            next_obs = batch[Columns.NEXT_OBS]
            out[QF_TARGET_NEXT] = self.forward_target(
                {Columns.OBS: next_obs, Columns.ACTIONS: self.smoothed_target_actions(next_obs)})
        return out

    def actor_q(self, obs: torch.Tensor) -> torch.Tensor:
        """Q1(s, pi(s)) with the critic's parameters frozen (gradient reaches the actor only)."""
        params = list(self.qf.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            return self.qf(obs, self.pi(obs))
        finally:
            for p in params:
                p.requires_grad_(True)

    # --- RLlib APIs --------------------------------------------------------------------------
    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        self.target_pi = make_target_network(self.pi)
        self.target_qf = make_target_network(self.qf)
        self.target_qf_twin = make_target_network(self.qf_twin)

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self):
        return [(self.pi, self.target_pi), (self.qf, self.target_qf),
                (self.qf_twin, self.target_qf_twin)]

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict[str, Any], **kwargs) -> torch.Tensor:
        """min(Q1_targ, Q2_targ)(s, a): the clipped double-Q value."""
        obs, actions = batch[Columns.OBS], batch[Columns.ACTIONS]
        return torch.min(self.target_qf(obs, actions), self.target_qf_twin(obs, actions))

    @override(QNetAPI)
    def compute_q_values(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.qf(batch[Columns.OBS], batch[Columns.ACTIONS])

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["qf", "qf_twin", "target_pi", "target_qf", "target_qf_twin"]


# --- Learner --------------------------------------------------------------------------------
class TD3TorchLearner(OneFiniteCheckMixin, DQNTorchLearner):
    """TD3's losses, the delayed actor update and the delayed Polyak target update.

    Two optimizers per module, as in RLlib's SAC: ``qf`` (both critics, ``critic_lr``)
    and ``policy`` (the actor, ``actor_lr``). The actor gets a gradient - and so an Adam
    step - only on every ``policy_delay``-th update; its parameters' gradients are absent
    otherwise, which torch's optimizers skip. The targets move right after an actor step.
    """

    @override(DQNTorchLearner)
    def build(self) -> None:
        super().build()
        self._updates: dict[str, int] = defaultdict(int)
        self._actor_updated: dict[str, bool] = {}
        # per update() call: the latest value of each loss metric, target updates, steps trained
        self._pending_metrics: dict[str, dict[str, Any]] = defaultdict(dict)
        self._pending_target_updates: dict[str, int] = defaultdict(int)
        self._pending_steps: dict[str, int] = defaultdict(int)
        # TD errors feed a prioritized buffer's priorities; the flat buffer has none
        self._log_td_error = not _is_flat_buffer(self.config.replay_buffer_config.get("type"))

    @override(DQNTorchLearner)
    def configure_optimizers_for_module(self, module_id, config: AlgorithmConfig = None) -> None:
        module = self._module[module_id]
        impl = ADAM_IMPLS[config.adam]
        critic = self.get_parameters(module.qf) + self.get_parameters(module.qf_twin)
        self.register_optimizer(module_id=module_id, optimizer_name="qf",
                                optimizer=torch.optim.Adam(critic, **impl), params=critic,
                                lr_or_lr_schedule=config.critic_lr)
        actor = self.get_parameters(module.pi)
        self.register_optimizer(module_id=module_id, optimizer_name="policy",
                                optimizer=torch.optim.Adam(actor, **impl), params=actor,
                                lr_or_lr_schedule=config.actor_lr)

    @override(DQNTorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        module = self._module[module_id].unwrapped()
        not_done = 1.0 - batch[Columns.TERMINATEDS].float()
        target = (batch[Columns.REWARDS] + config.gamma ** batch["n_step"] * not_done
                  * fwd_out[QF_TARGET_NEXT]).detach()
        q1, q2 = fwd_out[QF_PREDS], fwd_out[QF_TWIN_PREDS]
        weights = batch["weights"]  # importance weights (1 unless prioritized replay)
        critic_loss = (weights * (q1 - target) ** 2).mean() + (weights * (q2 - target) ** 2).mean()
        td_error = 0.5 * ((q1 - target).abs() + (q2 - target).abs()).detach()

        update_actor = self._updates[module_id] % config.policy_delay == 0
        self._updates[module_id] += 1
        self._actor_updated[module_id] = update_actor
        total = critic_loss
        metrics = {QF_LOSS_KEY: critic_loss, "qf_mean": q1.mean(), "qf_max": q1.max(),
                   "qf_min": q1.min(), "td_error_mean": td_error.mean()}
        if update_actor:
            actor_loss = -module.actor_q(batch[Columns.OBS]).mean()
            total = total + actor_loss
            metrics[POLICY_LOSS_KEY] = actor_loss
        if self._log_td_error:
            self.metrics.log_value((module_id, TD_ERROR_KEY), td_error, reduce="item_series")
        # window 1: only the latest value of each key counts, so keep it and log once per call
        self._pending_metrics[module_id].update(metrics)
        return total

    @override(DQNTorchLearner)
    def compute_gradients(self, loss_per_module, **kwargs):
        # One backward: the critic loss reaches only the critics (targets are detached), the
        # actor loss only the actor (critics frozen in actor_q). Absent gradients (the actor
        # between delayed updates) are left out, so its optimizer skips the step.
        grads = super().compute_gradients(loss_per_module, **kwargs)
        return {pid: g for pid, g in grads.items() if g is not None}

    @override(DQNTorchLearner)
    def postprocess_gradients_for_module(self, *, module_id, config=None, module_gradients_dict):
        if not module_gradients_dict:
            return module_gradients_dict
        if not self._actor_updated.get(module_id, True) and config.grad_clip:
            # clip the critic's gradients only (an empty actor dict has no norm to clip)
            optim = self.get_optimizer(module_id, "qf")
            critic = self.filter_param_dict_for_optimizer(module_gradients_dict, optim)
            from ray.rllib.utils.torch_utils import clip_gradients

            clip_gradients(critic, grad_clip=config.grad_clip, grad_clip_by=config.grad_clip_by)
            return module_gradients_dict
        return super().postprocess_gradients_for_module(
            module_id=module_id, config=config, module_gradients_dict=module_gradients_dict)

    @override(DQNTorchLearner)
    def apply_gradients(self, gradients_dict) -> None:
        """RLlib's step of every optimizer with one finiteness check for all gradients
        (:class:`~snnlab.rl.learner.OneFiniteCheckMixin`); then the targets move if the actor
        stepped - per update, so that several updates in one ``update()`` call (minibatches)
        each see the targets the previous one left."""
        super().apply_gradients(gradients_dict)
        self._update_targets()

    def _update_targets(self) -> None:
        """theta_targ <- tau theta + (1 - tau) theta_targ for pi, Q1, Q2 after an actor step."""
        for module_id, module in self.module._rl_modules.items():
            if not self._actor_updated.get(module_id, False):
                continue
            tau = self.config.get_config_for_module(module_id).tau
            for main, target in module.unwrapped().get_target_network_pairs():
                polyak_update(main, target, tau)
            self._pending_target_updates[module_id] += 1
            self._actor_updated[module_id] = False

    @override(DQNTorchLearner)
    def _log_steps_trained_metrics(self, batch) -> None:
        # RLlib calls this per minibatch, each carrying the whole call's env steps; count each
        # minibatch's rows once and log them once per call (after_gradient_based_update)
        for module_id, module_batch in batch.policy_batches.items():
            self._pending_steps[module_id] += len(module_batch)

    @override(DQNTorchLearner)
    def after_gradient_based_update(self, *, timesteps) -> None:
        # super(DQNLearner, self) on purpose: it skips DQNLearner's own after_gradient_based_update
        # (a target sync every target_network_update_freq steps) and runs Learner's; TD3 moves
        # the targets by tau right after each actor step instead (apply_gradients).
        super(DQNLearner, self).after_gradient_based_update(timesteps=timesteps)
        if self._pending_steps:
            super()._log_steps_trained_metrics(_Counted(dict(self._pending_steps)))
            self._pending_steps.clear()
        for module_id, metrics in self._pending_metrics.items():
            self.metrics.log_dict(metrics, key=module_id, window=1)
        self._pending_metrics.clear()
        for module_id, n in self._pending_target_updates.items():
            self.metrics.log_value((module_id, NUM_TARGET_UPDATES), n, reduce="lifetime_sum")
        self._pending_target_updates.clear()

    @override(DQNTorchLearner)
    def get_state(self, *args, **kwargs):
        state = super().get_state(*args, **kwargs)
        state["td3_updates"] = dict(self._updates)
        return state

    @override(DQNTorchLearner)
    def set_state(self, state) -> None:
        super().set_state(state)
        if "td3_updates" in state:
            self._updates = defaultdict(int, state["td3_updates"])


def _is_flat_buffer(kind) -> bool:
    from .replay import FlatEpisodeReplayBuffer

    return kind == FLAT_BUFFER or (isinstance(kind, type) and issubclass(kind, FlatEpisodeReplayBuffer))


@torch.no_grad()
def polyak_update(main: nn.Module, target: nn.Module, tau: float) -> None:
    """RLlib's ``update_target_network`` (every state_dict entry, buffers too:
    ``tau * main + (1 - tau) * target``), as three foreach ops over all entries instead of a new
    state dict and ``load_state_dict``; the same float32 operations, so bit-identical (tested)."""
    m, t = main.state_dict(keep_vars=True), target.state_dict(keep_vars=True)
    if m.keys() != t.keys() or not all(v.is_floating_point() for v in t.values()):
        return update_target_network(main_net=main, target_net=target, tau=tau)
    targets = [v.detach() for v in t.values()]
    scaled = torch._foreach_mul([m[k].detach() for k in t], tau)
    torch._foreach_mul_(targets, 1 - tau)
    torch._foreach_add_(targets, scaled)


def reference_update(module: TD3TorchRLModule, critic_opt: torch.optim.Optimizer,
                     actor_opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor], *,
                     actor_step: bool, gamma: float, tau: float, target_noise: float,
                     target_noise_clip: float) -> dict[str, float]:
    """One TD3 update in plain torch, operation for operation what :class:`TD3TorchLearner`
    computed before issue #20 (one ``learner_group.update`` call per update, torch's default
    Adam, RLlib's ``update_target_network``): the reference its equivalence tests and
    ``benchmarks/floor.py --numerics`` compare the learner with. ``critic_opt`` holds both
    critics' parameters, ``actor_opt`` the actor's. Returns the losses."""
    obs, actions, nxt = batch[Columns.OBS], batch[Columns.ACTIONS], batch[Columns.NEXT_OBS]
    q1, q2 = module.qf(obs, actions), module.qf_twin(obs, actions)
    with torch.no_grad():
        a = module.target_pi(nxt)
        noise = (target_noise * torch.randn_like(a)).clamp(-target_noise_clip, target_noise_clip)
        a = (a + noise).clamp(-1.0, 1.0)
        q_next = torch.min(module.target_qf(nxt, a), module.target_qf_twin(nxt, a))
    not_done = 1.0 - batch[Columns.TERMINATEDS].float()
    target = (batch[Columns.REWARDS] + gamma ** batch["n_step"] * not_done * q_next).detach()
    w = batch["weights"]
    critic_loss = (w * (q1 - target) ** 2).mean() + (w * (q2 - target) ** 2).mean()
    total, out = critic_loss, {QF_LOSS_KEY: critic_loss.item()}
    if actor_step:
        frozen = list(module.qf.parameters())
        for p in frozen:
            p.requires_grad_(False)
        actor_loss = -module.qf(obs, module.pi(obs)).mean()
        for p in frozen:
            p.requires_grad_(True)
        total = total + actor_loss
        out[POLICY_LOSS_KEY] = actor_loss.item()
    critic_opt.zero_grad(set_to_none=True)
    actor_opt.zero_grad(set_to_none=True)
    total.backward()
    critic_opt.step()
    actor_opt.step()
    if actor_step:
        for main, tgt in ((module.pi, module.target_pi), (module.qf, module.target_qf),
                          (module.qf_twin, module.target_qf_twin)):
            update_target_network(main_net=main, target_net=tgt, tau=tau)
    return out


class _Counted:
    """What Learner._log_steps_trained_metrics reads of a batch: rows per module, env steps."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.policy_batches = {mid: range(n) for mid, n in rows.items()}
        self._env_steps = sum(rows.values())

    def env_steps(self) -> int:
        return self._env_steps


__all__ = ["TD3", "TD3Config", "TD3TorchLearner", "TD3TorchRLModule", "polyak_update", "reference_update"]


class SpikingTD3(SpikingStateMixin, TD3):
    """snnlab's TD3 whose checkpoints also hold the slope schedule and the reward curriculum."""


class _TD3Own(Strict):
    name: Literal["TD3"]
    actor_lr: float = Field(1e-3, gt=0.0)
    critic_lr: float = Field(1e-3, gt=0.0)
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    tau: float = Field(0.005, gt=0.0, le=1.0, description="Polyak rate of the target networks")
    exploration_noise: float = Field(0.1, ge=0.0, description="std of the Gaussian action noise "
                                     "on the EnvRunners (actions in [-1, 1]); none in evaluation")
    target_noise: float = Field(0.2, ge=0.0, description="target-policy smoothing noise std")
    target_noise_clip: float = Field(0.5, ge=0.0, description="clip of the smoothing noise")
    policy_delay: int = Field(2, ge=1, description="one actor + target update per this many critic updates")
    grad_clip: float | None = Field(None, gt=0.0, description="clip each network's global grad norm")
    adam: Literal["fused", "foreach", "loop"] = Field(
        "fused", description="torch's Adam implementation: fused (fastest; rounds differently "
        "from loop, float32 rounding only), foreach or loop (torch's CPU default; bit-identical "
        "to each other)")


class TD3Params(ReplayParams, _TD3Own):
    """TD3's ``algorithm:`` section: its own keys, then the replay keys (:class:`ReplayParams`,
    TD3's defaults below); defaults are the paper's (PAPER.md, "The paper's own RL and BC setups")."""

    replay_capacity: int = Field(1_000_000, gt=0)
    learning_starts: int = Field(10_000, ge=0, description="env steps of uniform random actions "
                                 "before learning starts (the random warm-up)")
    updates_per_env_step: float = Field(1.0, gt=0.0, description="gradient updates per env step "
                                        "sampled (all runners together)")


def build(cfg) -> tuple[TD3Config, type]:
    a = cfg.algorithm
    config = TD3Config(algo_class=SpikingTD3).training(
        actor_lr=a.actor_lr, critic_lr=a.critic_lr, gamma=a.gamma, tau=a.tau,
        policy_delay=a.policy_delay, target_noise=a.target_noise,
        target_noise_clip=a.target_noise_clip, exploration_noise=a.exploration_noise,
        train_batch_size_per_learner=a.train_batch_size, grad_clip=a.grad_clip, adam=a.adam,
        num_steps_sampled_before_learning_starts=a.learning_starts,
        training_intensity=a.training_intensity(cfg.runners.num_env_runners),
        replay_buffer_config=a.buffer_config(),
    ).env_runners(rollout_fragment_length=a.rollout_fragment_length).reporting(
        min_sample_timesteps_per_iteration=a.env_steps_per_iteration)
    return config, TD3TorchRLModule


ALGORITHM = AlgorithmEntry(
    name="TD3", params=TD3Params, build=build, algorithm=SpikingTD3, actor_outputs=box_actions,
    # 2 x 256 steps: Pendulum's 200-step episodes finish
    smoke={"algorithm.learning_starts": 64, "algorithm.env_steps_per_iteration": 256,
           "algorithm.train_batch_size": 32},
    actor_choice=True,
)
