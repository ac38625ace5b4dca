"""The config schema's shared parts (YAML -> pydantic models) and its one-line errors.

Every config file is checked against pydantic models before anything runs: an unknown key, a
wrong type, an out-of-range value or a missing file becomes one :class:`ConfigError` line
naming the file, the key path and what is allowed. This module holds what every kind of file
shares - the strict base model, seeds, the spiking network, slope schedules, logging,
diagnostics, the gradient-analysis protocol, YAML reading, ``--set`` overrides and the error
formatting - and imports no training world. The experiment schemas live with their worlds
(:mod:`snnlab.supervised.config`, :mod:`snnlab.rl.config`: an RL algorithm's section is
defined in its own file, see :mod:`snnlab.rl.registry`); :mod:`snnlab.experiment` loads
either kind.
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
    spike_matmul: Literal["dense", "sparse"] = Field(
        "dense", description="the Linear layers fed by a LIF layer's spikes: dense (torch's "
        "matmul) or sparse (with the cpp backend: add the weight columns of the inputs that "
        "fired - 2x faster than the dense product alone at 20% firing, no measurable gain inside "
        "the TD3 learner yet; the same sums in another order, so equal to float32 rounding, not "
        "bit for bit)")

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
            spike_matmul=self.spike_matmul,
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


#: keys whose value is a tagged union (slope kinds, RL algorithms, data tasks): in pydantic's error
#: locations the member's tag follows them (``algorithm.TD3.actor_lr``) and is left out of the path
_UNION_KEYS = ("slope", "algorithm", "data")

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
                    if not (isinstance(p, str) and i > 0 and e["loc"][i - 1] in _UNION_KEYS))
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


ABSENT = "(absent)"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as ``{dotted.path: leaf}`` (list items by index: ``settings.6.k``);
    an empty mapping or list is a leaf."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(data, (list, tuple)) and data:
        out = {}
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: data}


def first_difference(a: Any, b: Any) -> tuple[str, Any, Any] | None:
    """The first dotted key (in ``a``'s order, then ``b``'s) whose value differs between two nested
    documents, with both values (:data:`ABSENT` where one lacks it); None when they are equal."""
    fa, fb = flatten(a), flatten(b)
    for key in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(key, ABSENT), fb.get(key, ABSENT)
        if va != vb and not (isinstance(va, float) and isinstance(vb, float) and va != va and vb != vb):
            return key, va, vb
    return None


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


