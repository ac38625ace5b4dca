"""The supervised world: Lightning module, datamodules, callbacks and the train entry point."""

from .bc import BCDataModule, BehaviourCloner, FlyEvalCallback
from .callbacks import SlopeScheduleCallback
from .data import DataError, DigitsDataModule, TorchvisionDataModule, make_datamodule
from .module import SpikingClassifier
from .train import TrainResult, train_supervised

__all__ = [
    "BCDataModule",
    "BehaviourCloner",
    "FlyEvalCallback",
    "DataError",
    "DigitsDataModule",
    "SlopeScheduleCallback",
    "SpikingClassifier",
    "TorchvisionDataModule",
    "TrainResult",
    "make_datamodule",
    "train_supervised",
]
