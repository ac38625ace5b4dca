"""snnlab's SynOps per inference against NeuroBench's synaptic_operations (issue 21, item 5).

The drone actors of the study (TD3: 146 -> LIF 256 -> LIF 128 -> 4, T=4; behaviour cloning: 18 ->
LIF 256 -> LIF 128 -> 4), on observations of flights of snnlab's hover expert, counted both ways
on the same forward (``snnlab.energy_check.crosscheck``). Needs NeuroBench:
``pip install --no-deps neurobench==2.3.0``.

    python benchmarks/energy_crosscheck.py [--steps 100] [--drones 8] [--k 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from snnlab.energy_check import crosscheck
from snnlab.quadrotor.expert import HoverExpert
from snnlab.quadrotor.vector_env import QuadrotorHoverVector
from snnlab.spiking import SpikingMLP, SpikingMLPConfig

ACTORS = {  # name: (env_config, n_in) - the shapes of configs/rl_quadrotor_td3.yaml, sl_bc_quadrotor.yaml
    "TD3 actor (146 inputs)": ({"reward": "l2f", "action_history": 32}, 146),
    "BC actor (18 inputs)": ({}, 18),
}


def expert_observations(env_config: dict, drones: int, steps: int, seed: int = 0) -> torch.Tensor:
    """Observations of ``drones`` expert flights, ``steps`` steps each (autoreset drones included)."""
    env = QuadrotorHoverVector(num_envs=drones, **env_config)
    expert = HoverExpert(env)
    obs, _ = env.reset(seed=seed)
    seen = []
    for _ in range(steps):
        seen.append(obs.copy())
        obs, *_ = env.step(np.asarray(expert(obs), dtype=np.float32))
    env.close()
    return torch.as_tensor(np.concatenate(seen), dtype=torch.float32)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--drones", type=int, default=8)
    p.add_argument("--k", type=float, default=2.0, help="surrogate slope (no effect on the forward)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name, (env_config, n_in) in ACTORS.items():
        torch.manual_seed(a.seed)
        net = SpikingMLP(SpikingMLPConfig(n_in=n_in, n_out=4, hidden=(256, 128), num_steps=4, slope=a.k,
                                          neuron_init="uniform", learn_beta=True, learn_threshold=True))
        x = expert_observations(env_config, a.drones, a.steps, a.seed)
        assert x.shape[1] == n_in, x.shape
        c = crosscheck(net, x)
        print(f"\n## {name}: {c.samples} observations of expert flights, fresh initialisation (seed {a.seed})\n")
        print("| part | snnlab | NeuroBench | why |")
        print("|---|---|---|---|")
        for r in c.rows():
            print(f"| {r['part']} | {r['snnlab']:,.1f} {r['snnlab_kind']}s | {r['neurobench']:,.1f} "
                  f"{r['neurobench_kind']}s | {r['why']} |")
        m = c.neurobench_metric
        print(f"\nsnnlab.energy: SynOps {c.snnlab_synops:,.1f}, MACs {c.snnlab_macs:,.0f} per inference; "
              f"NeuroBench SynapticOperations: Effective_ACs {m['Effective_ACs']:,.1f}, "
              f"Effective_MACs {m['Effective_MACs']:,.1f}, Dense {m['Dense']:,.0f}")


if __name__ == "__main__":
    main()
