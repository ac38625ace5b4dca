"""The supervised world: Lightning modules, datamodules, callbacks and the train entry point.

Names are imported on first use (PEP 562), so ``snnlab.supervised.config`` - the schema that
loading a config file needs - does not import Lightning.
"""

from importlib import import_module

_EXPORTS = {
    "BCDataModule": "bc", "BehaviourCloner": "bc", "FlyEvalCallback": "bc",
    "SlopeScheduleCallback": "callbacks",
    "DataError": "data", "DigitsDataModule": "data", "TorchvisionDataModule": "data", "make_datamodule": "data",
    "SpikingClassifier": "module", "SpikingModule": "module",
    "TrainResult": "train", "train_supervised": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
