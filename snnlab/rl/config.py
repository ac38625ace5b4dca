"""The RL experiment's schema (``kind: rl``): env, algorithm, spiking actor, runners, stop rule.

The ``algorithm:`` section is a tagged union over :data:`snnlab.rl.registry.REGISTRY`: each
algorithm defines its own section's model in its own file. The env id and ``env_config`` are
tried once at validation (the env is made and closed), so an unknown env or a kwarg the env
refuses is a one-line config error before Ray starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

import gymnasium as gym
from pydantic import Field, field_validator, model_validator

from ..config import (DiagnosticsConfig, FixedSlopeConfig, LoggingConfig, ModelConfig, Seed, SlopeConfig, Strict,
                      _fixed_if_no_kind, check_finite)
from ..energy import NetShape
from ..precision import Precision
from .modules import obs_dim
from .registry import REGISTRY

AlgorithmParams = Annotated[Union[tuple(entry.params for entry in REGISTRY.values())],  # noqa: UP007
                            Field(discriminator="name")]


def check_env_id(env_id: str) -> None:
    """Raise ValueError unless gymnasium knows ``env_id`` (``"module:Id"`` imports the module first)."""
    import importlib

    import gymnasium as gym

    from .. import quadrotor  # noqa: F401  (registers snnlab/QuadrotorHover-v0)

    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"cannot import module {module!r} for environment {env_id!r}: {e}") from None
    if name not in gym.envs.registry:
        close = [k for k in gym.envs.registry if name.lower().split("/")[-1][:4] in k.lower()][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown gymnasium environment {name!r}{hint}")


def make_env(env_id: str, env_config: dict[str, Any] | None = None):
    """One env as the EnvRunners make it: snnlab's quadrotor through its creator, any other id
    through ``gym.make(env_id, **env_config)``."""
    from ..quadrotor.env import ENV_ID, make_quadrotor

    if env_id == ENV_ID:
        return make_quadrotor(env_config)
    return gym.make(env_id, **dict(env_config or {}))


def env_kwargs(env_id: str) -> list[str]:
    """The keyword arguments ``env_id``'s constructor takes (its entry point's signature), [] if
    they cannot be read (an entry point taking ``**kwargs``, a creator function that hides them)."""
    import inspect

    from ..quadrotor.env import ENV_ID, QuadrotorHover

    try:
        target = QuadrotorHover if env_id == ENV_ID else gym.spec(env_id).entry_point
        if isinstance(target, str):
            target = gym.envs.registration.load_env_creator(target)
        params = inspect.signature(target).parameters.values()
    except Exception:  # noqa: BLE001  (only the hint is lost)
        return []
    return [p.name for p in params
            if p.name not in ("self", "render_mode") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def try_env(env_id: str, env_config: dict[str, Any]) -> None:
    """Make (and close) the env once with ``env_config``: a kwarg it refuses is a ValueError
    naming the key, the env and the keys it takes, before any runner tries."""
    try:
        env = make_env(env_id, env_config)
    except (TypeError, ValueError) as e:
        key = re.search(r"unexpected keyword argument '([^']+)'", str(e))
        if key:
            allowed = env_kwargs(env_id)
            raise ValueError(f"env_config: {key.group(1)!r} is not a key of {env_id}"
                             + (f"; allowed: {', '.join(allowed)}" if allowed else "")) from None
        raise ValueError(f"env_config refused by {env_id}: {e}") from None
    env.close()


class RLModelConfig(ModelConfig):
    hidden: list[Annotated[int, Field(gt=0)]] = Field([64, 64], min_length=1)
    num_steps: int = Field(4, gt=0, description="T: internal steps per environment step")
    mode: Literal["reset", "sequence"] = Field(
        "reset", description="reset: fresh membranes per action; sequence: carried as RLlib state")
    max_seq_len: int = Field(20, gt=0, description="sequence mode: BPTT chunk length (env steps)")
    critic_hidden: list[Annotated[int, Field(gt=0)]] = Field([64, 64], min_length=1)
    initial_log_std: float = Field(0.0, ge=-20.0, le=2.0, description="PPO, continuous actions: initial "
                                   "log-std (the range RLlib's SAC clamps log-stds to)")
    actor: Literal["spiking", "mlp"] = Field(
        "spiking", description="TD3: the spiking actor, or an MLP of the same `hidden` sizes (ANN baseline)")
    actor_inputs: int = Field(0, ge=0, description="TD3: the actor reads only the first N observation "
                              "values (e.g. 18: the quadrotor without its action history); 0: all")

    def module_config(self, slope: float) -> dict[str, Any]:
        return {**self.network_kwargs(), "hidden": list(self.hidden), "slope": slope,
                "mode": self.mode, "max_seq_len": self.max_seq_len,
                "critic_hidden": list(self.critic_hidden), "initial_log_std": self.initial_log_std,
                "actor": self.actor, "actor_inputs": self.actor_inputs,
                # RLlib's SAC builds its twin Q networks from these default-model keys
                "fcnet_hiddens": list(self.critic_hidden), "fcnet_activation": "relu"}



class RunnersConfig(Strict):
    num_env_runners: int = Field(0, ge=0)
    num_envs_per_env_runner: int = Field(1, gt=0)
    num_learners: int = Field(0, ge=0)
    vectorize_mode: Literal["sync", "async", "vector_entry_point"] = Field(
        "sync", description="how an EnvRunner batches its envs (RLlib's gym_env_vectorize_mode): "
        "sync: gymnasium's SyncVectorEnv of single envs; vector_entry_point: the env's own batched "
        "class (snnlab/QuadrotorHover-v0: N drones in one numpy step)")
    torch_threads: int | None = Field(
        1, gt=0, description="torch threads of the process running `snnlab train` (its Learner and "
        "local EnvRunner when num_learners / num_env_runners are 0; Ray's workers in sweeps already "
        "run one); null: torch's default. 1 avoids OpenMP stalls when another process shares the "
        "cores (measured on 2 cores with one busy: TD3's batch-256 update 5 ms with 1 thread, "
        "250-600 ms with 2; PPO CartPole's learner 0.6 s vs 10 s per iteration)")
    precision: Precision = Field(
        "32-true", description="the Learner's updates: 32-true, or bf16-mixed (forward, loss and backward "
        "under torch.autocast(bfloat16); weights, optimizer and LIF dynamics fp32; EnvRunners act in "
        "fp32; measured: docs/benchmarks.md)")


class EvaluationConfig(Strict):
    interval: int = Field(0, ge=0, description="evaluate every N iterations (0: off)")
    episodes: int = Field(10, gt=0)


class StopConfig(Strict):
    iterations: int = Field(30, gt=0)
    target_return: float | None = Field(None, description="stop once the score reaches this")


class RLConfig(Strict):
    kind: Literal["rl"]
    seed: Seed = 0
    env: str = Field("CartPole-v1", description="gymnasium id, e.g. snnlab/QuadrotorHover-v0")
    env_config: dict[str, Any] = Field(default_factory=dict, description="kwargs for gym.make")
    algorithm: AlgorithmParams = Field(default_factory=lambda: REGISTRY["PPO"].params())
    model: RLModelConfig = Field(default_factory=RLModelConfig)
    slope: SlopeConfig = Field(default_factory=FixedSlopeConfig)
    runners: RunnersConfig = Field(default_factory=RunnersConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)

    _default_slope_kind = field_validator("slope", mode="before")(_fixed_if_no_kind)

    @field_validator("algorithm", mode="before")
    @classmethod
    def _default_algorithm(cls, v: Any) -> Any:
        return {"name": "PPO", **v} if isinstance(v, dict) and "name" not in v else v

    @field_validator("env")
    @classmethod
    def _known_env(cls, v: str) -> str:
        check_env_id(v)
        return v

    @field_validator("env_config")
    @classmethod
    def _finite_env_config(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_finite(v)

    @model_validator(mode="after")
    def _fits_algorithm_and_env(self):
        entry = REGISTRY[self.algorithm.name]
        if self.model.mode == "sequence" and not entry.sequence_mode:
            raise ValueError(f"model.mode 'sequence' needs PPO: {self.algorithm.name} trains on single "
                             f"transitions from a replay buffer; use mode 'reset' with {self.algorithm.name}")
        if not entry.actor_choice and (self.model.actor != "spiking" or self.model.actor_inputs):
            raise ValueError("model.actor and model.actor_inputs apply to TD3 only; "
                             f"{self.algorithm.name} always uses the spiking actor on all inputs")
        try_env(self.env, self.env_config)
        return self

    def network_shape(self) -> NetShape | None:
        """The spiking actor's shape (inputs, LIF layers, readout, T) for the energy estimate;
        None for an MLP actor. Sizes come from the env's spaces (the env is made once)."""
        if self.model.actor != "spiking":
            return None
        env = make_env(self.env, self.env_config)
        try:
            n_obs, space = obs_dim(env.observation_space), env.action_space
        finally:
            env.close()
        return NetShape(self.model.actor_inputs or n_obs, tuple(self.model.hidden),
                        REGISTRY[self.algorithm.name].actor_outputs(space), self.model.num_steps)
