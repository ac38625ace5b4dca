"""Load and validate an experiment file of either kind (``kind: supervised | rl``).

The layer above both training worlds' schemas (:mod:`snnlab.supervised.config`,
:mod:`snnlab.rl.config`); each is imported only when a file of its kind is loaded, so a
supervised config never imports RLlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

from pydantic import ValidationError

from .config import ConfigError, apply_overrides, format_validation_error, read_yaml

if TYPE_CHECKING:
    from .rl.config import RLConfig
    from .supervised.config import SupervisedConfig

ExperimentConfig = Union["SupervisedConfig", "RLConfig"]
KINDS = ("supervised", "rl")


def experiment_class(kind: str):
    """The schema of a ``kind:``; ValueError for an unknown kind."""
    if kind == "supervised":
        from .supervised.config import SupervisedConfig

        return SupervisedConfig
    if kind == "rl":
        from .rl.config import RLConfig

        return RLConfig
    raise ValueError(f"unknown experiment kind {kind!r}; allowed: {', '.join(KINDS)}")


def validate_experiment(data: dict, source: str) -> ExperimentConfig:
    try:
        cls = experiment_class(data.get("kind", "supervised"))
    except ValueError as e:
        raise ConfigError(f"{source}: kind: {e}") from None
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, cls, data)) from None


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    data = apply_overrides(read_yaml(path), overrides or [], source=str(path))
    if isinstance(data.get("logging", {}), dict):
        data.setdefault("logging", {}).setdefault("name", Path(path).stem)
    return validate_experiment(data, str(path))


