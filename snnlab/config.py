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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .schedules import SlopeSchedule, make_schedule
from .spiking.surrogate import SURROGATES


class ConfigError(ValueError):
    """A config problem, already phrased as one line for the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


# --- supervised experiment ------------------------------------------------------
class DataConfig(Strict):
    name: Literal["digits", "mnist", "fashion_mnist"] = "digits"
    root: str = Field("data", description="where torchvision datasets live / are downloaded to")
    download: bool = Field(True, description="try to download torchvision datasets if missing")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    batch_size: int = Field(64, gt=0)
    num_workers: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0, description="use only the first N training samples")


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
    name: str = Field("sl_digits", min_length=1)
    wandb: Literal["offline", "online", "off"] = "offline"
    wandb_project: str = "snnlab"
    csv: bool = True
    tensorboard: bool = True

    @field_validator("wandb", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class SupervisedConfig(Strict):
    kind: Literal["supervised"] = "supervised"
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    slope: SlopeConfig = Field(default_factory=FixedSlopeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("slope", mode="before")
    @classmethod
    def _default_slope_kind(cls, v: Any) -> Any:
        return {"kind": "fixed", **v} if isinstance(v, dict) and "kind" not in v else v


ExperimentConfig = SupervisedConfig
_EXPERIMENTS: dict[str, type[Strict]] = {"supervised": SupervisedConfig}


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
        args = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        elif args:
            kind = data.get("kind") if isinstance(data, dict) else None
            match = [a for a in args if a.model_fields.get("kind") and kind in typing.get_args(a.model_fields["kind"].annotation)]
            cls = match[0] if match else args[0]
        else:
            return None
    return cls


_TAGS = {"fixed", "interval", "adaptive"}


def format_validation_error(err: ValidationError, source: str, cls: type[BaseModel], data: Any) -> str:
    parts = []
    for e in err.errors():
        loc = tuple(p for i, p in enumerate(e["loc"]) if not (p in _TAGS and i > 0 and e["loc"][i - 1] == "slope"))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(cls, loc[:-1], data)
            allowed = ", ".join(parent.model_fields) if parent else "?"
            msg = f"unknown key; allowed: {allowed}"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown kind {e['input'].get('kind')!r}; allowed: fixed, interval, adaptive"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] not in ("missing", "value_error") and "input" in e and not isinstance(e["input"], (dict, list)):
                msg += f" (got {e['input']!r})"
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
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


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
    return validate_experiment(data, str(path))

