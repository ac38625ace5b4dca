"""The RL world: spiking RLlib modules, one algorithm registry (PPO, SAC, TD3), the replay
buffer, RLlib callbacks, and the `snnlab train` RL loop.

Importing this package imports nothing; its submodules import Ray (RLlib) where they need it.
"""
