"""The RL world: spiking RLlib modules, the slope-schedule callback, environments.

Importing this package does not import Ray; import the submodules you need
(``snnlab.rl.envs`` is numpy + gymnasium only).
"""
