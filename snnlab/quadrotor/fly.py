"""Fly a policy in the batched quadrotor: the evaluation both worlds share.

:func:`fly` runs ``episodes`` deterministic episodes of ``snnlab/QuadrotorHover-v0`` at once
in :class:`~snnlab.quadrotor.vector_env.QuadrotorHoverVector` (one drone per episode, drone i reset
with seed ``seed + i``, so the same seed gives the same initial states to every policy) and
returns their returns, lengths and the fraction that flew all ``max_steps`` steps inside the
box. ``policy`` maps observations ``[N, obs_dim]`` (numpy float32) to actions ``[N, 4]`` in
[-1, 1]; :func:`torch_policy` wraps a torch module (a behaviour-cloned network, a TD3 actor).
numpy + gymnasium (+ torch for :func:`torch_policy`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class FlightStats:
    episodes: int
    return_mean: float
    return_std: float
    length_mean: float
    full_fraction: float  # flew all max_steps steps inside the box

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def fly(policy: Policy, env_config: dict | None = None, episodes: int = 20, seed: int = 0) -> FlightStats:
    """Fly ``episodes`` episodes of ``policy`` at once (each drone one episode, no autoreset)."""
    from .vector_env import QuadrotorHoverVector

    cfg = {k: v for k, v in dict(env_config or {}).items() if k != "curriculum_steps_per_stage"}
    env = QuadrotorHoverVector(num_envs=episodes, **cfg)
    obs, _ = env.reset(seed=seed)
    alive = np.ones(episodes, dtype=bool)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    full = np.zeros(episodes, dtype=bool)
    while alive.any():
        actions = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, terminated, truncated, _ = env.step(actions)
        returns[alive] += reward[alive]
        lengths[alive] += 1
        full |= alive & truncated & ~terminated
        alive &= ~(terminated | truncated)  # finished drones would autoreset next step: ignored
    env.close()
    return FlightStats(episodes=episodes, return_mean=float(returns.mean()), return_std=float(returns.std()),
                       length_mean=float(lengths.mean()), full_fraction=float(full.mean()))


def torch_policy(module, device=None, on_forward: Callable[[], None] | None = None) -> Policy:
    """A numpy policy from a torch module mapping observations to actions: each call runs the
    module without autograd in eval mode (its mode is restored after), on ``device``, then
    calls ``on_forward()`` (e.g. to read the network's spike rates of that step)."""
    import torch

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            was_training = module.training
            module.eval()
            try:
                out = module(torch.as_tensor(obs, device=device))
            finally:
                module.train(was_training)
        if on_forward is not None:
            on_forward()
        return out.cpu().numpy()

    return act
