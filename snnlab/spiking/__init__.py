"""The framework-free spiking core (torch only): surrogates, LIF neurons, networks."""

from .networks import NetOutput, SpikingMLP, SpikingMLPConfig
from .neurons import LIF
from .surrogate import SURROGATES, Surrogate, get_slope, set_slope, spike, surrogate_grad

__all__ = [
    "LIF",
    "NetOutput",
    "SURROGATES",
    "SpikingMLP",
    "SpikingMLPConfig",
    "Surrogate",
    "get_slope",
    "set_slope",
    "spike",
    "surrogate_grad",
]
