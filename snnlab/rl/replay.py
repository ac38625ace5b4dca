"""A flat-array EpisodeReplayBuffer: RLlib's replay semantics for 1-step transitions, fast.

Why: profiling RLlib's TD3/SAC training step on 2 cores (Pendulum, batch 256) showed
52 ms of every 92 ms update in ``EpisodeReplayBuffer.sample``, which slices one
``SingleAgentEpisode`` per sampled transition and builds a new episode object from it,
and 15 ms more in the learner connector that turns those 256 episodes back into a batch;
the torch update itself took 9 ms.

:class:`FlatEpisodeReplayBuffer` subclasses RLlib's ``EpisodeReplayBuffer`` and keeps its
interface for adding (``add(episodes)`` with the episode chunks EnvRunners return, ongoing
episodes continued over calls), counting (``get_num_timesteps``, ``get_added_timesteps``,
``get_sampled_timesteps``, metrics) and checkpointing (``get_state``/``set_state``). It stores
each transition once in preallocated numpy arrays, and :meth:`sample_batch` draws a train
batch with one fancy-index per column.

Semantics, equal to ``EpisodeReplayBuffer.sample(n_step=1)`` (tested side by side): every
stored time step t of every episode is one item ``(o_t, a_t, r_{t+1}, o_{t+1},
terminated)``, ``terminated`` true only for the last step of a terminated episode (a
truncated episode's last step bootstraps); items are drawn uniformly with replacement; the
batch carries ``weights`` = 1 and ``n_step`` = 1 as RLlib's does. One difference, documented:
when full, the oldest *transitions* leave first (a ring), where RLlib evicts whole oldest
episodes (holding up to one episode fewer). n-step returns and sequence sampling are not
supported (TD3 and the paper use 1-step targets); ask the original for those.

:class:`FlatReplayTrainingStep` is the DQN-family training step that uses it (TD3's and
snnlab's SAC): DQN's new-API-stack step with the sampled batch handed to the Learner as
columns.

:class:`ReplayParams` is the replay part of an off-policy algorithm's config section (TD3's,
SAC's): buffer, capacity, warm-up, sampling and the number of updates per sampled env step,
with :meth:`ReplayParams.training_intensity` the one translation of that number into RLlib's
``training_intensity`` (the same runner correction for every algorithm).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field
from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TD_ERROR_KEY,
    TIMERS,
)
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer
from ray.rllib.utils.annotations import override

from ..config import Strict

#: the flat buffer's class path, as RLlib's ``replay_buffer_config["type"]`` takes it
FLAT_BUFFER = "snnlab.rl.replay.FlatEpisodeReplayBuffer"


class ReplayParams(Strict):
    """The replay settings of an off-policy algorithm's ``algorithm:`` section."""

    train_batch_size: int = Field(256, gt=0, description="transitions per gradient step")
    replay_capacity: int = Field(100_000, gt=0)
    replay_buffer: Literal["flat", "episode"] = Field(
        "flat", description="flat: snnlab's FlatEpisodeReplayBuffer (fast, 1-step); episode: RLlib's "
        "EpisodeReplayBuffer with the algorithm's own training step unchanged")
    learning_starts: int = Field(1000, ge=0, description="env steps sampled before learning starts")
    updates_per_env_step: float | None = Field(
        None, gt=0.0, description="gradient updates per env step sampled (all runners together); "
        "null: one update per sampling round (rollout_fragment_length x envs per runner env steps)")
    rollout_fragment_length: int = Field(1, gt=0, description="env steps per env between update rounds")
    env_steps_per_iteration: int = Field(1000, gt=0, description="min env steps per iteration")

    def buffer_config(self) -> dict[str, Any]:
        """RLlib's ``replay_buffer_config``."""
        return {"type": FLAT_BUFFER if self.replay_buffer == "flat" else "EpisodeReplayBuffer",
                "capacity": self.replay_capacity}

    def training_intensity(self, num_env_runners: int) -> float | None:
        """RLlib's ``training_intensity`` (transitions trained on per transition sampled) for
        ``updates_per_env_step`` updates of ``train_batch_size`` per sampled env step. DQN's round
        robin counts the local EnvRunner as sampling too, so with remote runners the ratio is
        scaled by ``(runners + 1) / runners``."""
        if self.updates_per_env_step is None:
            return None
        runners = int(num_env_runners)
        return self.updates_per_env_step * self.train_batch_size * (runners + 1) / max(runners, 1)


class FlatEpisodeReplayBuffer(EpisodeReplayBuffer):
    """RLlib's EpisodeReplayBuffer interface over flat transition arrays (see module docstring)."""

    def __init__(self, capacity: int = 10_000, *, seed: int | None = None, **kwargs) -> None:
        super().__init__(capacity=capacity, **kwargs)
        self.capacity = int(capacity)
        self._columns: dict[str, np.ndarray] | None = None
        self._next = 0  # ring position of the next write
        self._size = 0
        self.rng = np.random.default_rng(seed)

    # --- adding ----------------------------------------------------------------------------
    def _allocate(self, obs: np.ndarray, actions: np.ndarray) -> None:
        n = self.capacity
        self._columns = {
            Columns.OBS: np.zeros((n, *obs.shape[1:]), dtype=obs.dtype),
            Columns.ACTIONS: np.zeros((n, *actions.shape[1:]), dtype=actions.dtype),
            Columns.REWARDS: np.zeros(n, dtype=np.float32),
            Columns.NEXT_OBS: np.zeros((n, *obs.shape[1:]), dtype=obs.dtype),
            Columns.TERMINATEDS: np.zeros(n, dtype=bool),
        }

    @override(EpisodeReplayBuffer)
    def add(self, episodes) -> None:
        """Store every transition of the given episode chunks (each chunk of length L holds L+1
        observations; its last transition is terminal iff the chunk ends a terminated episode)."""
        if not isinstance(episodes, list):
            episodes = [episodes]
        added = 0
        for ep in episodes:
            n = len(ep)
            if n == 0:
                continue
            obs = np.asarray(ep.get_observations(slice(0, n + 1)))
            actions = np.asarray(ep.get_actions(slice(0, n)))
            rewards = np.asarray(ep.get_rewards(slice(0, n)), dtype=np.float32)
            terminated = np.zeros(n, dtype=bool)
            terminated[-1] = bool(ep.is_terminated)
            if self._columns is None:
                self._allocate(obs, actions)
            self._write({Columns.OBS: obs[:-1], Columns.ACTIONS: actions, Columns.REWARDS: rewards,
                         Columns.NEXT_OBS: obs[1:], Columns.TERMINATEDS: terminated})
            added += n
        self._num_timesteps_added += added
        self._num_timesteps = self._size

    def _write(self, rows: dict[str, np.ndarray]) -> None:
        n = len(rows[Columns.REWARDS])
        if n >= self.capacity:  # only the newest `capacity` rows survive
            rows = {k: v[-self.capacity:] for k, v in rows.items()}
            n = self.capacity
        idx = (self._next + np.arange(n)) % self.capacity
        for k, v in rows.items():
            self._columns[k][idx] = v
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    # --- sampling ----------------------------------------------------------------------------
    def sample_batch(self, num_items: int, repeats: int = 1) -> dict[str, np.ndarray]:
        """``num_items`` transitions drawn uniformly with replacement, as numpy columns
        (obs, actions, rewards, new_obs, terminateds, weights, n_step).

        ``repeats`` > 1: that many train batches of ``num_items`` one after another (rows
        ``[i * num_items, (i + 1) * num_items)`` are batch i), drawn with the same random numbers
        as ``repeats`` separate calls and gathered at once."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if repeats == 1:
            idx = self.rng.integers(self._size, size=num_items)
        else:  # one draw per batch, as separate calls would make: the same sequence
            idx = np.concatenate([self.rng.integers(self._size, size=num_items) for _ in range(repeats)])
        n = len(idx)
        batch = {k: v[idx] for k, v in self._columns.items()}
        batch["weights"] = np.ones(n, dtype=np.float32)
        batch["n_step"] = np.ones(n, dtype=np.int64)
        self.sampled_timesteps += n
        return batch

    @override(EpisodeReplayBuffer)
    def sample(self, num_items: int | None = None, *, n_step: int | None = 1, batch_length_T=None,
               **kwargs):
        if (n_step or 1) != 1 or batch_length_T:
            raise ValueError("FlatEpisodeReplayBuffer samples 1-step transitions only "
                             "(use RLlib's EpisodeReplayBuffer for n-step or sequences)")
        return self.sample_batch(num_items or self.batch_size_B)

    # --- counting and checkpoints ----------------------------------------------------------
    def __len__(self) -> int:
        return self._size

    @override(EpisodeReplayBuffer)
    def get_num_timesteps(self, module_id=None) -> int:
        return self._size

    @override(EpisodeReplayBuffer)
    def get_metrics(self) -> dict[str, Any]:
        return {"num_timesteps": self._size, "num_timesteps_added": self._num_timesteps_added,
                "num_timesteps_sampled": self.sampled_timesteps}

    @override(EpisodeReplayBuffer)
    def get_state(self) -> dict[str, Any]:
        return {"columns": self._columns, "next": self._next, "size": self._size,
                "_num_timesteps_added": self._num_timesteps_added,
                "sampled_timesteps": self.sampled_timesteps, "rng": self.rng.bit_generator.state}

    @override(EpisodeReplayBuffer)
    def set_state(self, state: dict[str, Any]) -> None:
        self._columns = state["columns"]
        self._next, self._size = state["next"], state["size"]
        self._num_timesteps = self._size
        self._num_timesteps_added = state["_num_timesteps_added"]
        self.sampled_timesteps = state["sampled_timesteps"]
        self.rng.bit_generator.state = state["rng"]


class FlatReplayTrainingStep:
    """Mixin for a DQN-family Algorithm (``class TD3(FlatReplayTrainingStep, DQN)``,
    ``SpikingSAC``): with a :class:`FlatEpisodeReplayBuffer` the training step is DQN's
    new-API-stack step - sample ``rollout_fragment_length`` steps per env, add them to the
    buffer, and once ``num_steps_sampled_before_learning_starts`` env steps were sampled make
    as many Learner updates per round as ``training_intensity`` asks, then sync weights - with
    one change: each train batch comes from the buffer as columns and goes to
    ``learner_group.update(batch=...)`` (no per-transition episode objects, no learner
    connector). Any other buffer (RLlib's own) runs the algorithm's own step unchanged.
    The buffer's sampling RNG is seeded from the config's seed.

    ``updates_in_one_call`` (an algorithm whose Learner supports it: TD3's): a round's updates
    go to the Learner as one batch of ``train_weight`` minibatches in one
    ``learner_group.update`` call (:meth:`_update_in_one_call`) instead of one call each.

    ``setup`` / ``training_step`` extend DQN's (no ``@override``: RLlib's decorator requires the
    defining class to subclass the parent, and a mixin does not).
    """

    #: hand a round's updates to the Learner in one call (its Learner must act per minibatch)
    updates_in_one_call: bool = False

    def setup(self, config) -> None:
        super().setup(config)
        if isinstance(self.local_replay_buffer, FlatEpisodeReplayBuffer) and config.seed is not None:
            self.local_replay_buffer.rng = np.random.default_rng(config.seed)

    def training_step(self) -> None:
        if not isinstance(self.local_replay_buffer, FlatEpisodeReplayBuffer):
            return super().training_step()
        store_weight, train_weight = calculate_rr_weights(self.config)
        for _ in range(store_weight):
            with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
                episodes, env_runner_results = synchronous_parallel_sample(
                    worker_set=self.env_runner_group, concat=True,
                    sample_timeout_s=self.config.sample_timeout_s,
                    _uses_new_env_runners=True, _return_metrics=True)
            self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
                self.local_replay_buffer.add(episodes)

        sampled = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        if sampled < self.config.num_steps_sampled_before_learning_starts:
            return
        if self.updates_in_one_call and train_weight > 1:
            learner_results = self._update_in_one_call(train_weight, sampled)
        else:
            learner_results = self._update_one_by_one(train_weight, sampled)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=set(learner_results[0].keys()) - {ALL_MODULES},
                global_vars=None, inference_only=True)

    def _update_one_by_one(self, train_weight: int, sampled: int):
        """DQN's way: one replay sample and one ``learner_group.update`` call per update."""
        for _ in range(train_weight):
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
                columns = self.local_replay_buffer.sample_batch(self.config.total_train_batch_size)
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(columns)},
                                        env_steps=len(columns[Columns.REWARDS]))
                learner_results = self.learner_group.update(
                    batch=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: sampled})
                for res in learner_results:  # TD errors are for prioritized buffers, not logs
                    for module_results in res.values():
                        module_results.pop(TD_ERROR_KEY, None)
                self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        return learner_results

    def _update_in_one_call(self, train_weight: int, sampled: int):
        """All of a round's updates in one ``learner_group.update`` call: ``train_weight`` train
        batches drawn at once (the same draws as one by one) and handed over as one batch that
        the Learner cuts into minibatches of ``train_batch_size``, in order - one gradient update
        each, exactly the updates one call per batch would make (the Learner must do per
        minibatch what it would do per call: TD3's does its target update there). RLlib's
        per-call work (batch conversion, metrics reduce, results) happens once per round.
        ``LEARNER_UPDATE_TIMER`` then times the whole round's updates."""
        size = self.config.total_train_batch_size
        with self.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
            columns = self.local_replay_buffer.sample_batch(size, repeats=train_weight)
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(columns)},
                                    env_steps=len(columns[Columns.REWARDS]))
            learner_results = self.learner_group.update(
                batch=batch, minibatch_size=size, num_epochs=1, shuffle_batch_per_epoch=False,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: sampled})
            for res in learner_results:
                for module_results in res.values():
                    module_results.pop(TD_ERROR_KEY, None)
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        return learner_results
