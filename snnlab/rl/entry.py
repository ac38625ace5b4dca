"""What the registry (:mod:`snnlab.rl.registry`) knows about one RL algorithm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym


@dataclass(frozen=True)
class AlgorithmEntry:
    name: str
    params: type
    build: Callable[[Any], tuple[Any, type]]
    algorithm: type
    actor_outputs: Callable[[gym.Space], int]
    smoke: dict[str, Any] = field(default_factory=dict)
    sequence_mode: bool = False
    actor_choice: bool = False


def box_actions(space: gym.Space) -> int:
    """One readout per action dimension of a flat Box."""
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise ValueError(f"a Box action space is needed, got {space}")
    return int(space.shape[0])
