"""One mechanism for algorithm-level state that every process must hold: push it to every
Learner and EnvRunner, and keep it in checkpoints.

RLlib callbacks run on the Algorithm and the EnvRunners, not on Learners, and weight sync
would deliver a changed buffer one iteration late; a recreated EnvRunner or a restored
checkpoint starts without the state. So a :class:`SyncedState` (an ``RLlibCallback``) keeps
its state on the Algorithm and pushes it:

- to every Learner (``learner_group.foreach_learner``) when :meth:`SyncedState.to_learner`
  is defined, and to every EnvRunner - local and remote, training and evaluation
  (``foreach_env_runner(..., local_env_runner=True)``) - with :meth:`SyncedState.to_env_runner`;
- again to EnvRunners that RLlib recreated (``on_env_runners_recreated``) and after a
  checkpoint load (``on_checkpoint_loaded``).

:class:`SyncedStateMixin` adds each state's :meth:`SyncedState.get_state` to
``Algorithm.get_state()`` under its :attr:`SyncedState.STATE_KEY` (what RLlib checkpoints and
Tune restores) and, in ``set_state``, restores it and pushes it at once.

Users: the slope schedule (:class:`snnlab.rl.callbacks.SlopeScheduleCallback`: the slope k
into every copy of the module) and the reward curriculum
(:class:`snnlab.rl.curriculum.CurriculumCallback`: the stage into every env).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override


def env_runner_groups(algorithm):
    """The algorithm's training and (when it has one) evaluation EnvRunner groups."""
    if getattr(algorithm, "env_runner_group", None) is not None:
        yield algorithm.env_runner_group
    if getattr(algorithm, "eval_env_runner_group", None) is not None:
        yield algorithm.eval_env_runner_group


def learner_results(results) -> list:
    """The values of a ``foreach_learner`` call; re-raises a Learner's error."""
    out = []
    for r in results:
        if not r.ok:
            raise r.get()
        out.append(r.get())
    return out


class SyncedState(RLlibCallback):
    """A piece of state on the Algorithm that every Learner and/or EnvRunner holds a copy of.

    Subclasses define :attr:`STATE_KEY`, :meth:`value` (what to push now; None: nothing),
    :meth:`to_env_runner` and/or :meth:`to_learner` (put a value into one process), and
    :meth:`get_state` / :meth:`set_state` (the state on the Algorithm, for checkpoints).
    """

    #: the key of this state in ``Algorithm.get_state()``
    STATE_KEY: ClassVar[str]
    #: whether :meth:`to_learner` is defined (the value goes to every Learner too)
    PUSH_TO_LEARNERS: ClassVar[bool] = False

    # --- what a state defines ---------------------------------------------------------------
    def value(self, algorithm) -> Any | None:
        """The value every process should hold now; None when there is nothing to push."""
        raise NotImplementedError

    def to_env_runner(self, env_runner, value) -> Any:
        """Put ``value`` into one EnvRunner (runs in that EnvRunner's process)."""
        raise NotImplementedError

    def to_learner(self, learner, value) -> Any:
        """Put ``value`` into one Learner (runs in that Learner's process)."""
        raise NotImplementedError

    def get_state(self, algorithm) -> dict | None:
        """The checkpointable state on ``algorithm``; None: nothing to save."""
        raise NotImplementedError

    def set_state(self, algorithm, state: dict) -> None:
        """Restore ``state`` (from :meth:`get_state`) onto ``algorithm`` (pushing comes after)."""
        raise NotImplementedError

    # --- the mechanism ----------------------------------------------------------------------
    def push(self, algorithm, value: Any | None = None) -> None:
        """Put ``value`` (default: :meth:`value`) into every Learner and every EnvRunner now."""
        value = self.value(algorithm) if value is None else value
        if value is None:
            return
        if self.PUSH_TO_LEARNERS:
            learner_results(algorithm.learner_group.foreach_learner(
                lambda learner: self.to_learner(learner, value)))
        for group in env_runner_groups(algorithm):
            group.foreach_env_runner(lambda er: self.to_env_runner(er, value), local_env_runner=True)

    @override(RLlibCallback)
    def on_env_runners_recreated(self, *, algorithm, env_runner_group, env_runner_indices,
                                 is_evaluation, **kwargs) -> None:
        value = self.value(algorithm)
        if value is not None:
            env_runner_group.foreach_env_runner(lambda er: self.to_env_runner(er, value),
                                                remote_worker_ids=env_runner_indices,
                                                local_env_runner=False)

    @override(RLlibCallback)
    def on_checkpoint_loaded(self, *, algorithm, **kwargs) -> None:
        self.push(algorithm)


class SyncedStateMixin:
    """Adds every :attr:`SYNCED_STATES` state to an Algorithm's checkpointable state
    (``class SpikingPPO(SyncedStateMixin, PPO)``); a restored state is pushed at once.

    ``get_state`` / ``set_state`` extend ``Algorithm``'s (no ``@override``: RLlib's decorator
    requires the defining class to subclass the parent, and a mixin does not)."""

    #: the states this algorithm checkpoints, restored (and pushed) in this order
    SYNCED_STATES: ClassVar[tuple[type[SyncedState], ...]] = ()

    def get_state(self, *args, **kwargs) -> dict:
        state = super().get_state(*args, **kwargs)
        for cls in self.SYNCED_STATES:
            own = cls().get_state(self)
            if own is not None:
                state[cls.STATE_KEY] = own
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        for cls in self.SYNCED_STATES:
            if cls.STATE_KEY in state:
                synced = cls()
                synced.set_state(self, state[cls.STATE_KEY])
                synced.push(self)
