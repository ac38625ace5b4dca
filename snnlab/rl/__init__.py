"""The RL world: spiking RLlib modules, the slope-schedule callback, environments.

Importing this package registers ``snnlab/QuadrotorHover-v0`` with gymnasium
(``snnlab.rl.envs`` is numpy + gymnasium only) but does not import Ray;
import the other submodules (``modules``, ``callbacks``, ``curriculum``,
``train``) when you need them.
"""

from . import envs  # noqa: F401  (registers snnlab/QuadrotorHover-v0)
