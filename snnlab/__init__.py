"""snnlab: surrogate-gradient slopes in spiking neural networks, from a laptop to a Ray cluster."""

__version__ = "0.1.0"

from . import quadrotor as _quadrotor  # noqa: E402,F401  (registers snnlab/QuadrotorHover-v0; numpy + gymnasium)
