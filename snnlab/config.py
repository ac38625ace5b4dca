"""Validated experiment configs (YAML -> pydantic models) with one-line errors.

Every config file is checked against these models before anything runs: an
unknown key, a wrong type, an out-of-range value or a missing file becomes one
:class:`ConfigError` line naming the file, the key path and what is allowed.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator,
                      model_validator)

from .schedules import SlopeSchedule, make_schedule
from .spiking.surrogate import SURROGATES


class ConfigError(ValueError):
    """A config problem, already phrased as one line for the user."""


class Strict(BaseModel):
    # allow_inf_nan=False: every float field (and list of floats) refuses .nan / .inf
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: The largest seed a config accepts. Seeds reach numpy's legacy seeding (np.random.seed: RLlib's
#: update_global_seed_if_necessary, scikit-learn's random_state) and Lightning's seed_everything,
#: which accept 0 <= seed <= 2**32 - 1; RLlib's EnvRunners seed with seed + worker_index
#: (+ 1e6 for evaluation workers), so the upper half is left free for those offsets.
SEED_MAX = 2**31 - 1

#: A random seed: an integer in [0, SEED_MAX].
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


def check_finite(value: Any, where: str = "") -> Any:
    """Raise ValueError at the first non-finite float (nan, inf) anywhere in a free-form value."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'value'} must be a finite number (got {value!r})")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{where}[{i}]")
    return value


# --- spiking network ----------------------------------------------------------
class NeuronConfig(Strict):
    beta: float = Field(0.9, ge=0.0, le=1.0, description="membrane decay (constant init)")
    threshold: float = Field(1.0, gt=0.0, description="firing threshold theta (constant init)")
    learn_beta: bool = Field(False, description="learn beta per neuron (clamped to [0, 1])")
    learn_threshold: bool = Field(False, description="learn theta per neuron")
    init: Literal["constant", "uniform"] = Field(
        "constant", description="'uniform': per-neuron beta and theta drawn from U(0, 1)"
    )


class ModelConfig(Strict):
    hidden: list[Annotated[int, Field(gt=0)]] = Field([128, 128], min_length=1)
    num_steps: int = Field(8, gt=0, description="T: simulation steps per input")
    readout: Literal["spikes", "membrane"] = "spikes"
    surrogate: str = "fast_sigmoid"
    neuron: NeuronConfig = Field(default_factory=NeuronConfig)
    weight_init: Literal["threshold_scaled", "torch_default"] = "threshold_scaled"
    init_gain: float = Field(2.0, gt=0.0)
    backend: Literal["cpp", "fused", "compiled", "eager"] = Field(
        "cpp", description="cpp: a layer's T steps as one autograd node whose two time loops are "
        "hand-written C++ kernels (fastest; built in seconds at first use; CPU float32/64, "
        "elsewhere - and with a warning where no C++ compiler works - fused); fused: the same "
        "node with the loops as tensor ops; compiled: those loops built by torch.compile; "
        "eager: plain autograd through every step (the reference)")

    @field_validator("surrogate")
    @classmethod
    def _known_surrogate(cls, v: str) -> str:
        if v not in SURROGATES:
            raise ValueError(f"unknown surrogate {v!r}; allowed: {', '.join(SURROGATES)}")
        return v

    def network_kwargs(self) -> dict[str, Any]:
        n = self.neuron
        return dict(
            hidden=tuple(self.hidden),
            num_steps=self.num_steps,
            readout=self.readout,
            surrogate=self.surrogate,
            beta=n.beta,
            threshold=n.threshold,
            learn_beta=n.learn_beta,
            learn_threshold=n.learn_threshold,
            neuron_init=n.init,
            weight_init=self.weight_init,
            init_gain=self.init_gain,
            backend=self.backend,
        )


# --- slope schedules ------------------------------------------------------------
class _SlopeBase(Strict):
    def build(self) -> SlopeSchedule:
        return make_schedule(**self.model_dump())

    @model_validator(mode="after")
    def _check(self):
        self.build()  # the schedule classes own the rules (k > 0, k_min <= k_max, ...)
        return self


class FixedSlopeConfig(_SlopeBase):
    kind: Literal["fixed"] = "fixed"
    k: float = Field(25.0, gt=0.0)


class IntervalSlopeConfig(_SlopeBase):
    kind: Literal["interval"]
    k_start: float = Field(1.0, gt=0.0)
    k_end: float = Field(100.0, gt=0.0)
    every: int = Field(1, ge=1, description="updates (epochs / iterations) per stage")
    stages: int = Field(10, ge=2)
    spacing: Literal["linear", "geometric"] = "geometric"


class AdaptiveSlopeConfig(_SlopeBase):
    kind: Literal["adaptive"]
    score_low: float = 0.0
    score_high: float = 1.0
    k_min: float = Field(1.0, gt=0.0)
    k_max: float = Field(100.0, gt=0.0)
    window: int = Field(10, ge=1)
    w_p: float = 0.5
    w_d: float = 0.5
    every: int = Field(1, ge=1)
    smoothing: float = Field(0.0, ge=0.0, lt=1.0)


SlopeConfig = Annotated[
    Union[FixedSlopeConfig, IntervalSlopeConfig, AdaptiveSlopeConfig], Field(discriminator="kind")
]


def _fixed_if_no_kind(cls, v: Any) -> Any:
    """A slope section without ``kind`` is a fixed slope."""
    return {"kind": "fixed", **v} if isinstance(v, dict) and "kind" not in v else v


# --- supervised experiment ------------------------------------------------------
class DataConfig(Strict):
    name: Literal["digits", "mnist", "fashion_mnist"] = "digits"
    root: str = Field("data", description="where torchvision datasets live / are downloaded to")
    download: bool = Field(True, description="try to download torchvision datasets if missing")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    batch_size: int = Field(64, gt=0)
    num_workers: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0, description="use only the first N training samples")


class BCEvalConfig(Strict):
    """How the behaviour clone is flown (snnlab.quadrotor.fly.fly) during training."""

    every: int = Field(1, ge=1, description="fly after every N-th epoch (epochs 0, N, 2N, ... and the "
                       "last); between flights the schedule and sweeps see the latest eval_return")
    episodes: int = Field(20, gt=0, description="episodes per flight, all at once in the batched env")
    seed: Seed = Field(0, description="reset seed of drone 0 (drone i: seed + i); the same "
                      "initial states at every flight")


class BCDataConfig(Strict):
    """Behaviour cloning of snnlab.quadrotor.expert.HoverExpert on snnlab/QuadrotorHover-v0
    (dataset: snnlab.quadrotor.bc_data, cached as <root>/bc_hover_<hash>.npz)."""

    name: Literal["bc_quadrotor"]
    root: str = Field("data", description="folder of the cached dataset files (relative: to the "
                      "working directory of `snnlab train` / `snnlab sweep`)")
    episodes: int = Field(1000, gt=0, description="expert episodes kept (non-crashing; 501 rows each)")
    action_noise: float = Field(0.0, ge=0.0, description="std of the Gaussian added to the expert's "
                                "action when stepping (labels stay clean: DAgger-style states)")
    random_action_prob: float = Field(0.0, ge=0.0, le=1.0, description="chance per step of stepping "
                                      "with a uniform random action instead")
    dataset_seed: Seed = Field(0, description="seed of the expert rollouts")
    env_config: dict[str, Any] = Field(default_factory=dict, description="QuadrotorHover kwargs "
                                       "(reward preset, max_steps, action_history, ...): data and flights")
    generate: bool = Field(True, description="generate the dataset when its file is missing")
    regenerate: bool = Field(False, description="rebuild a corrupt or mismatching dataset file "
                             "instead of stopping")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="validation share, whole episodes")
    batch_size: int = Field(1024, gt=0)
    num_workers: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0, description="use only the first episodes holding at most "
                              "N samples (at least 2 episodes)")
    eval: BCEvalConfig = Field(default_factory=BCEvalConfig)

    @field_validator("env_config")
    @classmethod
    def _valid_env_config(cls, v: dict[str, Any]) -> dict[str, Any]:
        from .quadrotor.env import QuadrotorHover

        check_finite(v)

        if "num_envs" in v:
            raise ValueError("num_envs is not an env kwarg here (the batch width is chosen by snnlab)")
        try:
            QuadrotorHover(**v)
        except TypeError as e:
            raise ValueError(f"not a QuadrotorHover kwarg: {str(e).split('argument ')[-1]}") from None
        return v


def _data_task(v: Any) -> str:
    """``data.name: bc_quadrotor`` is behaviour cloning; any other name (or none) a classification dataset."""
    name = v.get("name") if isinstance(v, dict) else getattr(v, "name", None)
    return "behaviour_cloning" if name == "bc_quadrotor" else "classification"


AnyDataConfig = Annotated[Union[Annotated[DataConfig, Tag("classification")],
                                Annotated[BCDataConfig, Tag("behaviour_cloning")]], Discriminator(_data_task)]

#: metrics a supervised run may feed its slope schedule and report as a sweep's score (higher is better)
SCORES = {"classification": ("val_acc", "train_acc"),
          "behaviour_cloning": ("eval_return", "eval_full_fraction")}


class OptimConfig(Strict):
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)


class TrainerConfig(Strict):
    max_epochs: int = Field(20, gt=0)
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    devices: int = Field(1, gt=0)
    deterministic: bool = True
    log_every_n_steps: int = Field(10, gt=0)
    progress_bar: bool = True


class LoggingConfig(Strict):
    out_dir: str = Field("runs/train", description="run directory root (checkpoints, logs)")
    name: str = Field("run", min_length=1, description="run name (default: the config file's stem)")
    wandb: Literal["offline", "online", "off"] = "offline"
    wandb_project: str = "snnlab"
    csv: bool = True
    tensorboard: bool = True

    @field_validator("wandb", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class DiagnosticsConfig(Strict):
    """Gradient diagnostics during training (off by default): grad/layer{i}/magnitude and /cosine."""

    every: int = Field(0, ge=0, description="every N training steps (supervised) or iterations "
                       "(RL); 0: off")
    k_ref: float = Field(100.0, gt=0.0, description="reference slope for the gradient cosine")
    probe_batch: int = Field(64, gt=0, description="RL: standard-normal probe observations")


class SupervisedConfig(Strict):
    kind: Literal["supervised"] = "supervised"
    seed: Seed = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    slope: SlopeConfig = Field(default_factory=FixedSlopeConfig)
    data: AnyDataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    score: str | None = Field(None, description="the metric fed to the slope schedule, monitored by "
                              "the best checkpoint and reported as a sweep's score; default: val_acc "
                              "(classification), eval_return (data.name: bc_quadrotor)")

    _default_slope_kind = field_validator("slope", mode="before")(_fixed_if_no_kind)

    @property
    def task(self) -> str:
        return "behaviour_cloning" if self.data.name == "bc_quadrotor" else "classification"

    @property
    def score_key(self) -> str:
        return self.score or SCORES[self.task][0]

    @model_validator(mode="after")
    def _score_fits_task(self):
        if self.score is not None and self.score not in SCORES[self.task]:
            raise ValueError(f"score: {self.score!r} is not a {self.task} metric; allowed: "
                             f"{', '.join(SCORES[self.task])}")
        return self


def check_env_id(env_id: str) -> None:
    """Raise ValueError unless gymnasium knows ``env_id`` (``"module:Id"`` imports the module first)."""
    import importlib

    import gymnasium as gym

    from . import quadrotor  # noqa: F401  (registers snnlab/QuadrotorHover-v0)

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


# --- reinforcement learning (RLlib) ----------------------------------------------
class RLModelConfig(ModelConfig):
    hidden: list[Annotated[int, Field(gt=0)]] = Field([64, 64], min_length=1)
    num_steps: int = Field(4, gt=0, description="T: internal steps per environment step")
    mode: Literal["reset", "sequence"] = Field(
        "reset", description="reset: fresh membranes per action; sequence: carried as RLlib state")
    max_seq_len: int = Field(20, gt=0, description="sequence mode: BPTT chunk length (env steps)")
    critic_hidden: list[Annotated[int, Field(gt=0)]] = Field([64, 64], min_length=1)
    initial_log_std: float = Field(0.0, description="PPO, continuous actions: initial log-std")
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


class SACParams(Strict):
    name: Literal["SAC"]
    actor_lr: float = Field(3e-4, gt=0.0)
    critic_lr: float = Field(3e-4, gt=0.0)
    alpha_lr: float = Field(3e-4, gt=0.0)
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    tau: float = Field(0.005, gt=0.0, le=1.0)
    initial_alpha: float = Field(1.0, gt=0.0)
    train_batch_size: int = Field(256, gt=0, description="transitions per gradient step")
    replay_capacity: int = Field(100_000, gt=0)
    replay_buffer: Literal["flat", "episode"] = Field(
        "flat", description="flat: snnlab's FlatEpisodeReplayBuffer (fast, 1-step); episode: RLlib's "
        "EpisodeReplayBuffer with SAC's training step unchanged")
    prioritized_replay: bool = Field(False, description="RLlib's PrioritizedEpisodeReplayBuffer "
                                     "(slower per update; needs replay_buffer: episode)")
    learning_starts: int = Field(1000, ge=0, description="env steps sampled before learning")
    rollout_fragment_length: int = Field(1, gt=0, description="env steps sampled per update round")
    training_intensity: float | None = Field(
        None, gt=0.0, description="trained / sampled steps; default: train_batch_size / rollout_fragment_length")
    env_steps_per_iteration: int = Field(1000, gt=0, description="min env steps per iteration")

    @model_validator(mode="after")
    def _prioritized_needs_episode_buffer(self):
        if self.prioritized_replay and "replay_buffer" in self.model_fields_set and self.replay_buffer == "flat":
            raise ValueError("prioritized_replay needs replay_buffer: episode (RLlib's prioritized "
                             "buffer); the flat buffer samples uniformly")
        return self  # prioritized_replay alone selects RLlib's prioritized buffer (train.py)


class TD3Params(Strict):
    """TD3 (snnlab.rl.td3); defaults are the paper's (PAPER.md, "The paper's own RL and BC setups")."""

    name: Literal["TD3"]
    actor_lr: float = Field(1e-3, gt=0.0)
    critic_lr: float = Field(1e-3, gt=0.0)
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    tau: float = Field(0.005, gt=0.0, le=1.0, description="Polyak rate of the target networks")
    train_batch_size: int = Field(256, gt=0, description="transitions per gradient step")
    replay_capacity: int = Field(1_000_000, gt=0)
    replay_buffer: Literal["flat", "episode"] = Field(
        "flat", description="flat: snnlab's FlatEpisodeReplayBuffer (fast); episode: RLlib's "
        "EpisodeReplayBuffer with DQN's training step unchanged")
    learning_starts: int = Field(10_000, ge=0, description="env steps of uniform random actions "
                                 "before learning starts (the random warm-up)")
    exploration_noise: float = Field(0.1, ge=0.0, description="std of the Gaussian action noise "
                                     "on the EnvRunners (actions in [-1, 1]); none in evaluation")
    target_noise: float = Field(0.2, ge=0.0, description="target-policy smoothing noise std")
    target_noise_clip: float = Field(0.5, ge=0.0, description="clip of the smoothing noise")
    policy_delay: int = Field(2, ge=1, description="one actor + target update per this many critic updates")
    updates_per_env_step: float = Field(1.0, gt=0.0, description="gradient updates per env step sampled")
    rollout_fragment_length: int = Field(1, gt=0, description="env steps per env between update rounds")
    env_steps_per_iteration: int = Field(1000, gt=0, description="min env steps per iteration")
    grad_clip: float | None = Field(None, gt=0.0, description="clip each network's global grad norm")


AlgorithmParams = Annotated[Union[PPOParams, SACParams, TD3Params], Field(discriminator="name")]


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
    algorithm: AlgorithmParams = Field(default_factory=PPOParams)
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
    def _mode_fits_algorithm(self):
        if self.algorithm.name in ("SAC", "TD3") and self.model.mode == "sequence":
            raise ValueError(f"model.mode 'sequence' needs PPO: {self.algorithm.name} trains on single "
                             f"transitions from a replay buffer; use mode 'reset' with {self.algorithm.name}")
        if self.algorithm.name != "TD3" and (self.model.actor != "spiking" or self.model.actor_inputs):
            raise ValueError("model.actor and model.actor_inputs apply to TD3 only; "
                             f"{self.algorithm.name} always uses the spiking actor on all inputs")
        return self


ExperimentConfig = Union[SupervisedConfig, RLConfig]
_EXPERIMENTS: dict[str, type[Strict]] = {"supervised": SupervisedConfig, "rl": RLConfig}


# --- gradient analysis (snnlab analyze gradients) -------------------------------------
class GradientAnalysisConfig(Strict):
    """The paper's gradient protocol (PAPER.md, "Gradient analysis"); defaults reproduce it."""

    n_in: int = Field(63, gt=0)
    n_out: int = Field(64, gt=0)
    hidden: list[Annotated[int, Field(gt=0)]] = Field([64, 64, 64, 64], min_length=1)
    num_steps: int = Field(2, gt=0)
    slopes: list[Annotated[float, Field(gt=0)]] = Field([1.0, 10.0, 25.0, 50.0, 100.0], min_length=1)
    k_ref: float = Field(100.0, gt=0)
    samples: int = Field(256, gt=0, description="samples per network, one at a time")
    networks: int = Field(5, gt=0, description="independently initialised networks")
    seed: Seed = 0
    neuron_init: Literal["constant", "uniform"] = "uniform"
    weight_init: Literal["threshold_scaled", "torch_default"] = "torch_default"
    surrogate: str = "fast_sigmoid"

    _known_surrogate = ModelConfig._known_surrogate

    @model_validator(mode="after")
    def _ref_in_slopes(self):
        if self.k_ref not in self.slopes:
            raise ValueError(f"k_ref ({self.k_ref:g}) must be one of slopes {self.slopes}")
        return self


def load_gradient_analysis(path: str | Path | None, overrides: list[str] | None = None) -> GradientAnalysisConfig:
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [], source=str(path or "--set"))
    try:
        return GradientAnalysisConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path or "--set"), GradientAnalysisConfig, data)) from None


# --- loading and error formatting ------------------------------------------------
def _model_at(cls: type[BaseModel], loc: tuple, data: Any) -> type[BaseModel] | None:
    """Follow ``loc`` through nested models (and tagged unions) to the model it points into."""
    for part in loc:
        if isinstance(data, dict):
            data = data.get(part)
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        args = [typing.get_args(a)[0] if typing.get_origin(a) is Annotated else a for a in typing.get_args(ann)]
        args = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        elif args:
            match = [a for a in args for tag in ("kind", "name") if a.model_fields.get(tag)
                     and isinstance(data, dict) and data.get(tag, "digits" if part == "data" else None)
                     in typing.get_args(a.model_fields[tag].annotation)]
            cls = match[0] if match else args[0]
        else:
            return None
    return cls


_TAGS = {"fixed", "interval", "adaptive", "PPO", "SAC", "TD3", "classification", "behaviour_cloning"}

#: error types after which the message also states the key's allowed range
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number",
                 "int_from_float", "int_parsing", "int_type", "float_parsing", "float_type"}


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def allowed_range(cls: type[BaseModel], loc: tuple, data: Any) -> str | None:
    """What a numeric key accepts, e.g. ``an integer with 0 <= seed <= 2147483647`` or ``a finite
    number > 0``, read from the field's constraints; None if ``loc`` is not a numeric field."""
    names = [i for i, p in enumerate(loc) if isinstance(p, str)]
    if not names:
        return None
    i = names[-1]
    parent = _model_at(cls, loc[:i], data)
    field = parent.model_fields.get(loc[i]) if parent else None
    if field is None:
        return None
    ann, meta = field.annotation, list(field.metadata)
    for _ in loc[i + 1:]:  # list items: the item type's own constraints
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) is not list or not args:
            return None
        ann, meta = args[0], []
    if typing.get_origin(ann) is Annotated:
        ann, *extra = typing.get_args(ann)
        meta += [m for x in extra for m in (getattr(x, "metadata", None) or [x])]
    kinds = {a for a in (typing.get_args(ann) or (ann,)) if a is not type(None)}
    if kinds == {int}:
        what = "an integer"
    elif kinds and kinds <= {int, float}:
        what = "a finite number"
    else:
        return None
    lo = hi = None
    for m in meta:
        for attr, op in (("gt", "<"), ("ge", "<=")):
            if getattr(m, attr, None) is not None:
                lo = f"{_num(getattr(m, attr))} {op} "
        for attr, op in (("lt", "<"), ("le", "<=")):
            if getattr(m, attr, None) is not None:
                hi = f" {op} {_num(getattr(m, attr))}"
    if lo is None and hi is None:
        return what
    name = str(loc[i]) + "".join(f"[{j}]" for j in loc[i + 1:])
    if lo is not None and hi is not None:
        return f"{what} with {lo}{name}{hi}"
    if lo is not None:  # "0 < k" reads better as "k > 0"
        bound, op = lo.split()
        return f"{what} {'>' if op == '<' else '>='} {bound}"
    return f"{what}{hi}"


def format_validation_error(err: ValidationError, source: str, cls: type[BaseModel], data: Any) -> str:
    parts = []
    for e in err.errors():
        loc = tuple(p for i, p in enumerate(e["loc"])
                    if not (p in _TAGS and i > 0 and e["loc"][i - 1] in ("slope", "algorithm", "data")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(cls, loc[:-1], data)
            allowed = ", ".join(parent.model_fields) if parent else "?"
            msg = f"unknown key; allowed: {allowed}"
        elif e["type"] == "union_tag_invalid":
            tag = e["ctx"]["discriminator"].strip("'")
            allowed = e["ctx"]["expected_tags"].replace("'", "")
            msg = f"unknown {tag} {e['input'].get(tag)!r}; allowed: {allowed}"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            allowed = allowed_range(cls, loc, data) if e["type"] in _RANGE_ERRORS else None
            if e["type"] not in ("missing", "value_error") and "input" in e and not isinstance(e["input"], (dict, list)):
                msg += f" (got {e['input']!r}; allowed: {allowed})" if allowed else f" (got {e['input']!r})"
            elif allowed:
                msg += f" (allowed: {allowed})"
        parts.append(f"{path}: {msg}")
    return f"{source}: " + "; ".join(parts)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{source}: {key}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = _parse_value(value)
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:  # an empty file, or one of comments only, would silently mean "all defaults"
        raise ConfigError(f"{path}: the file is empty (nothing but comments or blank lines); "
                          f"write the keys it should set")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def validate_document(data: dict, path: str | Path, kind: str, cls: type[BaseModel]):
    """Validate a ``kind: <kind>`` file's mapping against ``cls``; one-line ConfigError otherwise."""
    if data.get("kind") != kind:
        raise ConfigError(f"{path}: kind: a {kind} file needs `kind: {kind}` (got {data.get('kind')!r})")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path), cls, data)) from None


def validate_experiment(data: dict, source: str) -> ExperimentConfig:
    kind = data.get("kind", "supervised")
    cls = _EXPERIMENTS.get(kind)
    if cls is None:
        raise ConfigError(f"{source}: kind: unknown experiment kind {kind!r}; allowed: {', '.join(_EXPERIMENTS)}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, cls, data)) from None


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    data = apply_overrides(read_yaml(path), overrides or [], source=str(path))
    if isinstance(data.get("logging", {}), dict):
        data.setdefault("logging", {}).setdefault("name", Path(path).stem)
    return validate_experiment(data, str(path))

