"""The supervised experiment's schema (``kind: supervised``): data (a classification set, or
behaviour cloning of the quadrotor's hover expert), optimiser, Lightning Trainer, score."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ..config import (DiagnosticsConfig, FixedSlopeConfig, LoggingConfig, ModelConfig, Seed, SlopeConfig, Strict,
                      _fixed_if_no_kind, check_finite)
from ..energy import NetShape
from ..precision import Precision

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
        from ..quadrotor.env import QuadrotorHover

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

#: (inputs, classes) of the classification data sets (digits: 8 x 8; the torchvision sets: 28 x 28)
DATA_SIZES = {"digits": (64, 10), "mnist": (784, 10), "fashion_mnist": (784, 10)}

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
    precision: Precision = Field("32-true", description="Lightning's precision: 32-true, or bf16-mixed "
                                 "(bf16 matmuls under torch.autocast, LIF dynamics and weights in fp32; "
                                 "measured: docs/benchmarks.md)")



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

    def network_shape(self) -> NetShape:
        """The SpikingMLP's shape (inputs, LIF layers, readout, T) for the energy estimate: the
        data set's input and class counts, or the quadrotor's observation and action sizes."""
        if self.task == "behaviour_cloning":
            from ..quadrotor.env import N_ACTIONS, QuadrotorHover

            n_in, n_out = QuadrotorHover(**self.data.env_config).obs_dim, N_ACTIONS
        else:
            n_in, n_out = DATA_SIZES[self.data.name]
        return NetShape(n_in, tuple(self.model.hidden), n_out, self.model.num_steps)

    @model_validator(mode="after")
    def _score_fits_task(self):
        if self.score is not None and self.score not in SCORES[self.task]:
            raise ValueError(f"score: {self.score!r} is not a {self.task} metric; allowed: "
                             f"{', '.join(SCORES[self.task])}")
        return self

