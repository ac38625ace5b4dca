"""snnlab: surrogate-gradient slopes in spiking neural networks, from a laptop to a Ray cluster."""

__version__ = "0.1.0"
