"""One registry of RL algorithms: a name -> everything snnlab needs to know about it.

Adding an algorithm is one new file that ends with an ``ALGORITHM = AlgorithmEntry(...)`` and
one line in :data:`REGISTRY` below. The entry holds:

- ``params``: the pydantic model of its ``algorithm:`` section (``name: Literal[...]`` is the
  tag; :mod:`snnlab.rl.config` builds the tagged union from the registry);
- ``build``: ``build(cfg) -> (AlgorithmConfig, RLModule class)``, the algorithm's own part of
  the RLlib config (its ``.training(...)``, replay, sampling); :func:`snnlab.rl.train.build_algorithm_config`
  adds what every algorithm shares (env, runners, module spec, callbacks, seed, evaluation);
- ``algorithm``: its Spiking* Algorithm class (RLlib's algorithm whose checkpoints also hold
  the slope schedule and the reward curriculum; the sweep's trainable subclasses it);
- ``smoke``: the ``--budget smoke`` overrides of its section (minutes-long, same grid);
- ``actor_outputs(action_space)``: the spiking actor's readout size (the energy estimate);
- ``sequence_mode``: whether it trains stateful modules (``model.mode: sequence``);
- ``actor_choice``: whether ``model.actor`` / ``model.actor_inputs`` apply.
"""

from __future__ import annotations

from . import ppo, sac, td3
from .entry import AlgorithmEntry

REGISTRY: dict[str, AlgorithmEntry] = {entry.name: entry for entry in (
    ppo.ALGORITHM,
    sac.ALGORITHM,
    td3.ALGORITHM,
)}
