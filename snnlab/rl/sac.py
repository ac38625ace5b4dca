"""RLlib's SAC with snnlab's flat replay buffer (the default for ``algorithm: {name: SAC}``).

Profiled on 2 cores (docs/benchmarks.md): RLlib's ``EpisodeReplayBuffer`` spends most of an
SAC update building one episode object per sampled transition, and the learner connector
turns them back into a batch. :class:`FlatSACConfig` is RLlib's ``SACConfig`` that also
accepts :class:`~snnlab.rl.replay.FlatEpisodeReplayBuffer` (whose samples carry the same
columns, ``weights`` and ``n_step`` included, that SAC's loss reads); the algorithm
(``SpikingSAC``) takes :class:`~snnlab.rl.replay.FlatReplayTrainingStep`'s step with it.
RLlib's own buffers (``replay_buffer: episode``, prioritized replay) keep SAC unchanged.
"""

from __future__ import annotations

from ray.rllib.algorithms.sac import SACConfig

from .td3 import FLAT_BUFFER


class FlatSACConfig(SACConfig):
    """``SACConfig`` whose validation also admits the flat buffer (1-step targets only)."""

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
