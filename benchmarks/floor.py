"""The compute floor of snnlab's hot paths, and how far each path is from it (issue #20, item 1).

    .venv/bin/python benchmarks/floor.py [--repeats 200] [--paths td3,bc,ppo] [--no-profile]
                                         [--json floor.json]

For each hot path - one TD3 update of ``configs/rl_quadrotor_td3.yaml`` (batch 256), one
behaviour-cloning step of ``configs/sl_bc_quadrotor.yaml`` at batch 1024, one PPO minibatch
step of ``configs/rl_cartpole.yaml`` (minibatch 128) - it prints:

- FLOPs: matrix products counted by torch's own ``torch.utils.flop_counter.FlopCounterMode``
  (forward and backward, dense: a spike train counts as a dense matrix; a sparse spike matmul,
  ``model.spike_matmul: sparse``, is counted by hand as the dense product it replaces, so the
  FLOPs and the floor are those of the maths, whatever runs it), plus the element-wise
  work torch's counter does not see, counted by hand: the cpp LIF kernel (a custom autograd
  function; per neuron and time step 7 operations forward, 10 backward, +6 with learnable
  beta/theta, +1 for a static input, and 2 per neuron and row to reduce the beta/theta
  gradients) and Adam (12 per parameter value per step) and the Polyak average (3 per value);
- the machine's matmul throughput, measured here on one torch thread: float32 and, where the
  CPU has bf16 dot products (``avx512_bf16`` / AMX), bfloat16 (a 1024^3 product, best of 5);
- the floor = FLOPs / that throughput, the path's measured time (median and best of
  ``--repeats``) and the ratio time / float32 floor.

Paths are timed as they run in training, one torch thread:

- TD3 "in RLlib": the Algorithm's own training step (``configs/rl_quadrotor_td3.yaml``,
  warm-up shortened to 2000 env steps, no evaluation) - replay sampling, every
  ``learner_group.update`` call and its bookkeeping - per update, averaged over the policy
  delay; "module": the same maths on the learner's module without RLlib around it (target
  actor, critics, actor every 2nd update, both Adam steps, Polyak).
- BC: ``BehaviourCloner``'s loss on 1024 random rows of the config's expert dataset (generated
  into ``data/`` on first use, as ``snnlab train`` does), backward, Adam - what Lightning's
  training step runs, without Lightning.
- PPO: RLlib's PPO Learner on a 2000-row CartPole batch, 10 epochs of minibatches of 128 through
  ``learner_group.update`` (what PPO's training step calls), per minibatch; and the inner
  ``Learner._update`` on one minibatch.

Then (unless ``--no-profile``) a per-part profile of TD3 on the drone: an Algorithm iteration
(sampling, replay add, replay sample, learner updates, weight sync, RLlib's iteration
bookkeeping), the update's parts inside RLlib (target actor, target critics, critics, actor,
backward, optimizer, Polyak, loss terms and metrics, RLlib's per-call bookkeeping), the
backward's split (actor vs critics, measured on the module alone), and one evaluation round
(20 episodes; its cost depends on how long the policy flies).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

def _tree() -> Path:
    """The checkout whose snnlab is imported (its configs/ and data/ go with its code, so an A/B
    run with PYTHONPATH pointing at another checkout reads that checkout's config files)."""
    import snnlab

    return Path(snnlab.__file__).resolve().parents[1]


ROOT = _tree()
CONFIGS = ROOT / "configs"
#: extra ``--set`` overrides of the TD3 config (``--td3-set model.spike_matmul=dense``)
TD3_SET: list[str] = []
#: the clock every timing here reads: wall time, or (``--clock cpu``) this thread's CPU time - the
#: fairer measure while other processes share the cores (torch runs on this one thread)
clock = time.perf_counter

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                     "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


# --- the machine ----------------------------------------------------------------------------
def cpu_info() -> dict:
    flags, model = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return {"model": model, "cpus": os.cpu_count(), "flags": {f: f in flags for f in INTERESTING_FLAGS},
            "bf16_dot": bf16, "amx": any(f.startswith("amx") for f in flags),
            "torch": torch.__version__, "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "threads": torch.get_num_threads(), "loadavg": os.getloadavg()}


def matmul_rate(dtype: torch.dtype, n: int = 1024, rounds: int = 5) -> float:
    """GFLOP/s of an n x n x n product on the current torch threads (best of ``rounds``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    reps = max(3, int(1e9 / (2 * n ** 3)))
    best = float("inf")
    for _ in range(rounds):
        t = clock()
        for _ in range(reps):
            a @ b
        best = min(best, (clock() - t) / reps)
    return 2 * n ** 3 / best / 1e9


# --- counting -------------------------------------------------------------------------------
class HandCount:
    """Element-wise FLOPs torch's counter does not see: the cpp LIF kernel, Adam, Polyak."""

    def __init__(self) -> None:
        self.lif = 0
        self.adam = 0
        self.polyak = 0
        #: dense-equivalent FLOPs of the sparse spike matmuls (cpp.SpikeLinear, issue #20): a
        #: matmul torch's counter does not see; counted with the matmul FLOPs, as 2 M K N each
        self.spike_matmul = 0

    @property
    def total(self) -> int:
        return self.lif + self.adam + self.polyak


@contextlib.contextmanager
def counting(hand: HandCount):
    """FlopCounterMode for matmuls + :class:`HandCount` for the LIF kernel, Adam and Polyak."""
    from snnlab.spiking import cpp

    fn = cpp.CppLIFSequence
    orig_fwd, orig_bwd = fn.forward, fn.backward

    def fwd(ctx, current, mem0, beta, theta, slope, family, steps, keep_spikes=True):
        out = orig_fwd(ctx, current, mem0, beta, theta, slope, family, steps, keep_spikes)
        R, N = mem0.shape
        T = steps if steps is not None else current.shape[0]
        hand.lif += 7 * T * R * N
        return out

    def bwd(ctx, *grads):
        T, R, N = ctx.saved_tensors[0].shape
        params = any(ctx.needs_input_grad[2:4])
        hand.lif += (10 + 6 * params + int(ctx.static)) * T * R * N + (2 * R * N if params else 0)
        return orig_bwd(ctx, *grads)

    orig_adam = torch.optim.Adam.step

    def adam_step(self, *a, **k):
        hand.adam += 12 * sum(p.numel() for g in self.param_groups for p in g["params"]
                              if p.grad is not None)
        return orig_adam(self, *a, **k)

    from ray.rllib.utils import torch_utils

    orig_polyak = torch_utils.update_target_network

    def polyak(main_net, target_net, tau):
        hand.polyak += 3 * sum(p.numel() for p in main_net.parameters())
        return orig_polyak(main_net, target_net, tau)

    from snnlab.rl import td3 as td3_mod

    orig_td3_polyak = getattr(td3_mod, "polyak_update", None)
    if orig_td3_polyak is not None:  # snnlab's own foreach Polyak (issue #20)
        def td3_polyak(main, target, tau):
            hand.polyak += 3 * sum(p.numel() for p in main.parameters())
            return orig_td3_polyak(main, target, tau)

        td3_mod.polyak_update = td3_polyak
    sl = getattr(cpp, "SpikeLinear", None)
    if sl is not None:
        orig_sl_fwd, orig_sl_bwd = sl.forward, sl.backward

        def sl_fwd(ctx, x, weight, bias):
            hand.spike_matmul += 2 * x.shape[0] * x.shape[1] * weight.shape[0]
            return orig_sl_fwd(ctx, x, weight, bias)

        def sl_bwd(ctx, g):
            x, w = ctx.saved_tensors
            if ctx.needs_input_grad[1]:  # dL/dW by the kernel; dL/dx is torch's mm (counted)
                hand.spike_matmul += 2 * x.shape[0] * x.shape[1] * w.shape[0]
            return orig_sl_bwd(ctx, g)

        sl.forward, sl.backward = staticmethod(sl_fwd), staticmethod(sl_bwd)
    fn.forward, fn.backward = staticmethod(fwd), staticmethod(bwd)
    torch.optim.Adam.step = adam_step
    torch_utils.update_target_network = polyak
    from ray.rllib.core.learner import utils as learner_utils

    orig_lu = learner_utils.update_target_network
    learner_utils.update_target_network = lambda main_net, target_net, tau: polyak(main_net, target_net, tau)
    try:
        with FlopCounterMode(display=False) as fc:
            yield fc
    finally:
        fn.forward, fn.backward = orig_fwd, orig_bwd
        if sl is not None:
            sl.forward, sl.backward = orig_sl_fwd, orig_sl_bwd
        torch.optim.Adam.step = orig_adam
        torch_utils.update_target_network = orig_polyak
        learner_utils.update_target_network = orig_lu
        if orig_td3_polyak is not None:
            td3_mod.polyak_update = orig_td3_polyak


def timed(fn, repeats: int, warmup: int = 5) -> tuple[float, float]:
    """(median, best) seconds of ``fn()`` over ``repeats`` calls (by :data:`clock`)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = clock()
        fn()
        ts.append(clock() - t)
    return statistics.median(ts), min(ts)


class Timers:
    """Accumulated wall time of wrapped callables, by name (nested wrappers count in both)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, obj, attr: str, name: str) -> None:
        orig = getattr(obj, attr)

        @functools.wraps(orig)
        def wrapper(*a, **k):
            t = clock()
            try:
                return orig(*a, **k)
            finally:
                self.total[name] = self.total.get(name, 0.0) + clock() - t
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(obj, attr, wrapper)

    def reset(self) -> None:
        self.total.clear()
        self.calls.clear()


# --- TD3 ----------------------------------------------------------------------------------
def td3_algo(warmup: int = 2000, evaluation: bool = False):
    from snnlab.experiment import load_experiment
    from snnlab.rl.train import build_algorithm_config

    cfg = load_experiment(CONFIGS / "rl_quadrotor_td3.yaml", [
        f"algorithm.learning_starts={warmup}", f"algorithm.env_steps_per_iteration={warmup}",
        "logging.wandb=off", *TD3_SET] + ([] if evaluation else ["evaluation.interval=0"]))
    return build_algorithm_config(cfg).build_algo()


def _learner_and_module(algo):
    from ray.rllib.core import DEFAULT_MODULE_ID

    learner = algo.learner_group._learner
    return learner, learner.module[DEFAULT_MODULE_ID].unwrapped()


def _tensor_batch(algo, n: int = 256) -> dict:
    cols = algo.local_replay_buffer.sample_batch(n)
    return {k: torch.as_tensor(v) for k, v in cols.items()}


def td3_module_step(algo):
    """One TD3 update on the learner's module without RLlib: the learner's maths, plain torch."""
    from ray.rllib.core.columns import Columns

    learner, m = _learner_and_module(algo)
    config = learner.config
    qf_opt = torch.optim.Adam([p for p in list(m.qf.parameters()) + list(m.qf_twin.parameters())],
                              lr=config.critic_lr)
    pi_opt = torch.optim.Adam(list(m.pi.parameters()), lr=config.actor_lr)
    state = {"n": 0}
    batch = _tensor_batch(algo)
    from ray.rllib.utils.torch_utils import update_target_network

    def step():
        with torch.no_grad():
            nxt = batch[Columns.NEXT_OBS]
            q_next = m.forward_target({Columns.OBS: nxt, Columns.ACTIONS: m.smoothed_target_actions(nxt)})
            y = batch[Columns.REWARDS] + config.gamma * (1.0 - batch[Columns.TERMINATEDS].float()) * q_next
        obs, act = batch[Columns.OBS], batch[Columns.ACTIONS]
        loss = ((m.qf(obs, act) - y) ** 2).mean() + ((m.qf_twin(obs, act) - y) ** 2).mean()
        actor = state["n"] % config.policy_delay == 0
        state["n"] += 1
        if actor:
            loss = loss - m.actor_q(obs).mean()
        qf_opt.zero_grad(set_to_none=True)
        pi_opt.zero_grad(set_to_none=True)
        loss.backward()
        qf_opt.step()
        if actor:
            pi_opt.step()
            for main, target in m.get_target_network_pairs():
                update_target_network(main_net=main, target_net=target, tau=config.tau)

    return step


def td3_parts_module(algo, repeats: int) -> dict[str, float]:
    """Median ms of the update's parts on the module alone (what RLlib's timing cannot split)."""
    from ray.rllib.core.columns import Columns

    _, m = _learner_and_module(algo)
    b = _tensor_batch(algo)
    obs, act, nxt = b[Columns.OBS], b[Columns.ACTIONS], b[Columns.NEXT_OBS]

    def target_actor():
        with torch.no_grad():
            m.smoothed_target_actions(nxt)

    a_next = m.smoothed_target_actions(nxt).detach()

    def target_critics():
        with torch.no_grad():
            m.forward_target({Columns.OBS: nxt, Columns.ACTIONS: a_next})

    y = torch.randn(len(obs))

    def critics_fwd_bwd():
        for p in m.parameters():
            p.grad = None
        (((m.qf(obs, act) - y) ** 2).mean() + ((m.qf_twin(obs, act) - y) ** 2).mean()).backward()

    def actor_fwd():
        m.actor_q(obs)

    def actor_fwd_bwd():
        for p in m.parameters():
            p.grad = None
        (-m.actor_q(obs).mean()).backward()

    out = {}
    for name, fn in (("target actor fwd", target_actor), ("target critics fwd", target_critics),
                     ("critics fwd+bwd", critics_fwd_bwd), ("actor fwd (+Q1)", actor_fwd),
                     ("actor fwd+bwd (+Q1)", actor_fwd_bwd)):
        out[name] = 1e3 * timed(fn, repeats)[0]
    for p in m.parameters():
        p.grad = None
    return out


def td3_flops(algo) -> tuple[float, HandCount]:
    """FLOPs of one TD3 update inside the learner, averaged over the policy delay."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    learner, _ = _learner_and_module(algo)
    d = learner.config.policy_delay
    hand = HandCount()
    with counting(hand) as fc:
        for _ in range(d):  # d consecutive updates: one actor step, d - 1 critic-only steps
            batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(
                algo.local_replay_buffer.sample_batch(256))}, env_steps=256)
            algo.learner_group.update(batch=batch, timesteps={"num_env_steps_sampled_lifetime": 10 ** 6})
    hand.lif, hand.adam, hand.polyak = hand.lif / d, hand.adam / d, hand.polyak / d
    return (fc.get_total_flops() + hand.spike_matmul) / d, hand


def td3_in_rllib(algo, rounds: int, timers: Timers | None = None) -> tuple[float, list[float], int]:
    """Run ``rounds`` of the Algorithm's own training step; return (ms per update over all,
    ms per update per round, updates). The learner time is every learner_group.update call plus
    the replay sampling of its batches - what one update costs inside RLlib."""
    learner, _ = _learner_and_module(algo)
    t = timers or Timers()
    if "learner_group.update" not in t.calls:
        t.wrap(algo.learner_group, "update", "learner_group.update")
        t.wrap(algo.local_replay_buffer, "sample_batch", "replay sample")
    per_round, updates = [], 0
    for _ in range(rounds):
        before = (t.total.get("learner_group.update", 0.0) + t.total.get("replay sample", 0.0),
                  sum(learner._updates.values()))
        algo.training_step()
        after = (t.total.get("learner_group.update", 0.0) + t.total.get("replay sample", 0.0),
                 sum(learner._updates.values()))
        n = after[1] - before[1]
        if n:
            per_round.append(1e3 * (after[0] - before[0]) / n)
            updates += n
    return statistics.median(per_round), per_round, updates


def td3_profile(algo, rounds: int) -> dict:
    """Where an iteration's time goes: wrappers around the training step's parts and the update's."""
    from snnlab.rl import replay
    from snnlab.rl import td3 as td3_mod

    learner, m = _learner_and_module(algo)
    t = Timers()
    orig_sample = replay.synchronous_parallel_sample
    t.wrap(replay, "synchronous_parallel_sample", "sampling (env runner)")
    t.wrap(algo.local_replay_buffer, "add", "replay add")
    t.wrap(algo.local_replay_buffer, "sample_batch", "replay sample")
    t.wrap(algo.learner_group, "update", "learner_group.update")
    t.wrap(algo.env_runner_group, "sync_weights", "weight sync")
    t.wrap(m, "smoothed_target_actions", "target actor fwd")
    t.wrap(m, "forward_target", "target critics fwd")
    t.wrap(m, "forward_train", "module forward_train")
    t.wrap(m, "actor_q", "actor fwd (+Q1)")
    t.wrap(learner, "compute_loss_for_module", "losses + metrics (incl. actor fwd)")
    t.wrap(learner, "compute_gradients", "backward (zero_grad + one backward)")
    t.wrap(learner, "apply_gradients", "optimizer (apply_gradients)")
    t.wrap(learner, "after_gradient_based_update", "Polyak + after-update hook")
    n0 = sum(learner._updates.values())
    t0 = clock()
    for _ in range(rounds):
        algo.training_step()
    wall = clock() - t0
    updates = sum(learner._updates.values()) - n0
    replay.synchronous_parallel_sample = orig_sample
    tot = dict(t.total)  # before train() below: the wrappers stay in place
    # one RLlib iteration around the steps (metrics reduce, callbacks): train() vs its steps
    t_iter = Timers()
    t_iter.wrap(algo, "training_step", "training_step")
    t1 = clock()
    algo.train()
    iteration_total = clock() - t1
    iteration_bookkeeping = iteration_total - t_iter.total["training_step"]
    steps_per_iteration = t_iter.calls["training_step"]
    fwd_total = tot.get("module forward_train", 0.0)
    critics_fwd = fwd_total - tot.get("target actor fwd", 0.0) - tot.get("target critics fwd", 0.0)
    losses_only = tot.get("losses + metrics (incl. actor fwd)", 0.0) - tot.get("actor fwd (+Q1)", 0.0)
    named_inside = (fwd_total + tot.get("losses + metrics (incl. actor fwd)", 0.0)
                    + tot.get("backward (zero_grad + one backward)", 0.0)
                    + tot.get("optimizer (apply_gradients)", 0.0)
                    + tot.get("Polyak + after-update hook", 0.0))
    parts_update = {
        "replay sample": tot.get("replay sample", 0.0),
        "target actor fwd": tot.get("target actor fwd", 0.0),
        "target critics fwd": tot.get("target critics fwd", 0.0),
        "critics fwd": critics_fwd,
        "actor fwd (+Q1, every 2nd)": tot.get("actor fwd (+Q1)", 0.0),
        "loss terms + metrics logging": losses_only,
        "backward (actor + critics)": tot.get("backward (zero_grad + one backward)", 0.0),
        "optimizer (2 x Adam, grad checks)": tot.get("optimizer (apply_gradients)", 0.0),
        "Polyak (every 2nd) + after-update hook": tot.get("Polyak + after-update hook", 0.0),
        "RLlib bookkeeping in learner_group.update": tot.get("learner_group.update", 0.0) - named_inside,
    }
    parts_iter = {
        "sampling (env runner, 16 drones)": tot.get("sampling (env runner)", 0.0),
        "replay add": tot.get("replay add", 0.0),
        "replay sample": tot.get("replay sample", 0.0),
        "learner updates (learner_group.update)": tot.get("learner_group.update", 0.0),
        "weight sync": tot.get("weight sync", 0.0),
    }
    parts_iter["training step, rest"] = wall - sum(parts_iter.values())
    return {"rounds": rounds, "updates": updates, "wall_s": wall, "env_steps": None,
            "per_update_ms": {k: 1e3 * v / updates for k, v in parts_update.items()},
            "per_round_ms": {k: 1e3 * v / rounds for k, v in parts_iter.items()},
            "iteration_bookkeeping_ms_per_step": 1e3 * iteration_bookkeeping / max(steps_per_iteration, 1)}


def td3_numerics(algo, updates: int = 20) -> dict:
    """How far the learner's update (this config: Adam implementation, spike matmul) lands from
    today's path (:func:`snnlab.rl.td3.reference_update`: torch's default Adam, dense Linear
    layers) after ``updates`` updates on the same batches with the same noise: the largest
    parameter difference, relative to the parameter's scale, and the last losses."""
    import copy

    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from snnlab.rl.td3 import reference_update

    learner, m = _learner_and_module(algo)
    cfg = learner.config
    learner._updates[DEFAULT_MODULE_ID] = 0
    ref = copy.deepcopy(m)
    for net in (ref.pi, ref.target_pi):
        if hasattr(net.body, "_sparse"):
            net.body._sparse = False
    critic = torch.optim.Adam(list(ref.qf.parameters()) + list(ref.qf_twin.parameters()), lr=cfg.critic_lr)
    actor = torch.optim.Adam(list(ref.pi.parameters()), lr=cfg.actor_lr)
    # the learner's Adam state so far (same parameter order), settings as torch's default Adam
    for opt, name in ((critic, "qf"), (actor, "policy")):
        state = copy.deepcopy(learner.get_optimizer(DEFAULT_MODULE_ID, name).state_dict())
        state["param_groups"] = [{**g, "foreach": None, "fused": None} for g in state["param_groups"]]
        opt.load_state_dict(state)
    cols = algo.local_replay_buffer.sample_batch(256, repeats=updates)
    torch.manual_seed(0)
    want = []
    for i in range(updates):
        b = {k: torch.as_tensor(v[256 * i: 256 * (i + 1)]) for k, v in cols.items()}
        want.append(reference_update(ref, critic, actor, b, actor_step=i % cfg.policy_delay == 0,
                                     gamma=cfg.gamma, tau=cfg.tau, target_noise=cfg.target_noise,
                                     target_noise_clip=cfg.target_noise_clip))
    torch.manual_seed(0)
    res = algo.learner_group.update(
        batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(cols)}, env_steps=256 * updates),
        minibatch_size=256, num_epochs=1, shuffle_batch_per_epoch=False,
        timesteps={"num_env_steps_sampled_lifetime": 10 ** 6})
    got, exp = m.state_dict(), ref.state_dict()
    rel = {k: float((got[k] - exp[k]).abs().max() / exp[k].abs().max().clamp_min(1e-12)) for k in exp}
    worst = max(rel, key=rel.get)

    def peek(key):
        v = res[0][DEFAULT_MODULE_ID][key]
        v = v.peek() if hasattr(v, "peek") else v
        return float(v.detach() if torch.is_tensor(v) else v)

    last_actor = max(i for i in range(updates) if i % cfg.policy_delay == 0)
    return {"updates": updates, "bit_identical": all(torch.equal(got[k], exp[k]) for k in exp),
            "max_rel_param_diff": rel[worst], "worst_param": worst,
            "qf_loss": (peek("qf_loss"), want[-1]["qf_loss"]),
            "policy_loss": (peek("policy_loss"), want[last_actor]["policy_loss"])}


def td3_evaluation(algo) -> dict:
    t = clock()
    res = algo.evaluate()
    wall = clock() - t
    er = res.get("env_runners", res)
    return {"wall_s": wall, "episode_len_mean": er.get("episode_len_mean", float("nan")),
            "episodes": er.get("num_episodes", float("nan"))}


# --- BC ---------------------------------------------------------------------------------------
def bc_step(batch_size: int = 1024):
    from snnlab.experiment import load_experiment
    from snnlab.quadrotor.bc_data import dataset_path, load_or_generate
    from snnlab.supervised.bc import BehaviourCloner, dataset_spec

    cfg = load_experiment(CONFIGS / "sl_bc_quadrotor.yaml")
    torch.manual_seed(cfg.seed)
    module = BehaviourCloner(n_in=18, network=cfg.model.network_kwargs(), lr=cfg.optim.lr,
                             slope=cfg.slope.k)
    opt = module.configure_optimizers()
    ds = load_or_generate(dataset_spec(cfg.data), ROOT / cfg.data.root, progress=False)
    idx = np.random.default_rng(0).integers(len(ds.obs), size=batch_size)
    obs = torch.as_tensor(ds.obs[idx], dtype=torch.float32)
    target = torch.as_tensor(ds.actions[idx], dtype=torch.float32)
    source = f"{batch_size} random rows of {dataset_path(dataset_spec(cfg.data), ROOT / cfg.data.root).name}"

    def step():
        opt.zero_grad(set_to_none=True)
        loss = module.batch_loss((obs, target))
        loss.backward()
        opt.step()

    return step, source


def bc_flops(step) -> tuple[float, HandCount]:
    hand = HandCount()
    with counting(hand) as fc:
        step()
    return fc.get_total_flops() + hand.spike_matmul, hand


# --- PPO --------------------------------------------------------------------------------------
def ppo_algo():
    from snnlab.experiment import load_experiment
    from snnlab.rl.train import build_algorithm_config

    cfg = load_experiment(CONFIGS / "rl_cartpole.yaml", ["logging.wandb=off"])
    return cfg, build_algorithm_config(cfg).build_algo()


def ppo_batch(algo, n: int):
    """A PPO train batch of ``n`` CartPole-like rows with every column PPO's loss reads."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    g = np.random.default_rng(0)
    obs = (g.normal(size=(n, 4)) * np.array([0.5, 0.5, 0.05, 0.5])).astype(np.float32)
    _, m = _learner_and_module(algo)
    with torch.no_grad():
        logits = m.forward_exploration({Columns.OBS: torch.as_tensor(obs)})[Columns.ACTION_DIST_INPUTS]
    actions = g.integers(2, size=n)
    logp = torch.log_softmax(logits, -1)[torch.arange(n), torch.as_tensor(actions)].numpy()
    cols = {Columns.OBS: obs, Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp.astype(np.float32),
            Columns.ACTION_DIST_INPUTS: logits.numpy(),
            Postprocessing.ADVANTAGES: g.normal(size=n).astype(np.float32),
            Postprocessing.VALUE_TARGETS: g.normal(size=n).astype(np.float32) * 10,
            Columns.VF_PREDS: g.normal(size=n).astype(np.float32)}
    return MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(cols)}, env_steps=n), cols


def ppo_measure(algo, cfg, repeats: int) -> dict:
    from ray.rllib.core import DEFAULT_MODULE_ID

    learner, _ = _learner_and_module(algo)
    a = cfg.algorithm
    big, _ = ppo_batch(algo, a.train_batch_size)
    t = Timers()
    t.wrap(learner, "_update", "_update")
    kw = dict(minibatch_size=a.minibatch_size, num_epochs=a.num_epochs, shuffle_batch_per_epoch=True,
              timesteps={"num_env_steps_sampled_lifetime": 10 ** 5})
    algo.learner_group.update(batch=big, **kw)  # warm-up
    t.reset()
    walls = []
    for _ in range(max(2, repeats // 50)):
        t0 = clock()
        algo.learner_group.update(batch=big, **kw)
        walls.append(clock() - t0)
    calls = t.calls["_update"]
    per_mb_rllib = 1e3 * sum(walls) / calls
    _, cols = ppo_batch(algo, a.minibatch_size)
    tb = {DEFAULT_MODULE_ID: {k: torch.as_tensor(v) for k, v in cols.items()}}
    med, best = timed(lambda: learner._update(tb), repeats)
    hand = HandCount()
    with counting(hand) as fc:
        learner._update(tb)
    return {"per_minibatch_in_update_ms": per_mb_rllib, "minibatches": calls // len(walls),
            "inner_update_ms": (1e3 * med, 1e3 * best), "flops": fc.get_total_flops() + hand.spike_matmul,
            "hand": hand}


# --- report -----------------------------------------------------------------------------------
def row(name, flops, hand, med_ms, best_ms, rates):
    total = flops + hand.total
    floor32 = total / (rates["fp32"] * 1e9) * 1e3
    floor16 = total / (rates["bf16"] * 1e9) * 1e3 if rates.get("bf16") else float("nan")
    return {"path": name, "matmul_mflop": flops / 1e6, "hand_mflop": hand.total / 1e6,
            "lif_mflop": hand.lif / 1e6, "floor_fp32_ms": floor32, "floor_bf16_ms": floor16,
            "median_ms": med_ms, "best_ms": best_ms, "ratio_fp32": med_ms / floor32,
            "ratio_best_fp32": best_ms / floor32}


def print_table(rows, rates):
    bf = f"{rates['bf16']:.0f}" if rates.get("bf16") else "n/a"
    print(f"\nmatmul throughput, 1 thread: fp32 {rates['fp32']:.1f} GFLOP/s, bf16 {bf} GFLOP/s\n")
    print("| path | matmul MFLOP (FlopCounterMode) | element-wise MFLOP (by hand; LIF) | floor fp32 | "
          "floor bf16 | time (median) | time (best) | median / fp32 floor |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['matmul_mflop']:.1f} | {r['hand_mflop']:.2f} ({r['lif_mflop']:.2f}) | "
              f"{r['floor_fp32_ms']:.2f} ms | {r['floor_bf16_ms']:.2f} ms | {r['median_ms']:.2f} ms | "
              f"{r['best_ms']:.2f} ms | {r['ratio_fp32']:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200, help="timed calls per plain path")
    ap.add_argument("--rounds", type=int, default=25, help="TD3 training-step rounds (40 updates each)")
    ap.add_argument("--paths", default="td3,bc,ppo")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--numerics", action="store_true",
                    help="TD3: compare 20 learner updates with today's path (reference_update)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this thread's CPU time (time.thread_time), for a machine under load")
    ap.add_argument("--td3-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of configs/rl_quadrotor_td3.yaml (repeatable)")
    args = ap.parse_args()
    TD3_SET.extend(args.td3_set)
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    info = cpu_info()
    print(f"CPU: {info['model']} ({info['cpus']} logical), torch {info['torch']} "
          f"(capability {info['torch_capability']}), 1 torch thread, load {info['loadavg'][0]:.2f}, "
          f"{args.clock} clock")
    print("flags: " + ", ".join(f"{f}={'yes' if v else 'no'}" for f, v in info["flags"].items()))
    print(f"bf16 dot products: {'yes' if info['bf16_dot'] else 'no'} (oneDNN bf16: "
          f"{'yes' if info['mkldnn_bf16'] else 'no'}); AMX: {'yes' if info['amx'] else 'no'}")
    rates = {"fp32": matmul_rate(torch.float32)}
    if info["bf16_dot"] and info["mkldnn_bf16"]:
        rates["bf16"] = matmul_rate(torch.bfloat16)
    paths = args.paths.split(",")
    rows, extra = [], {}
    ray_up = False
    if "td3" in paths or "ppo" in paths:
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_up = True
    if "td3" in paths:
        algo = td3_algo()
        try:
            algo.train()  # the warm-up: 2000 random env steps, then updates begin
            flops, hand = td3_flops(algo)
            med, per_round, n = td3_in_rllib(algo, args.rounds)
            rows.append(row("TD3 update in RLlib (drone, batch 256)", flops, hand, med, min(per_round), rates))
            step = td3_module_step(algo)
            ms = [1e3 * x for x in timed(lambda: (step(), step()), args.repeats // 2)]
            rows.append(row("TD3 update, module only (same maths)", flops, hand, ms[0] / 2, ms[1] / 2, rates))
            extra["td3_updates_timed"] = n
            if not args.no_profile:
                extra["td3_parts_module_ms"] = td3_parts_module(algo, args.repeats)
                extra["td3_profile"] = td3_profile(algo, args.rounds)
            if args.numerics:
                extra["td3_numerics"] = td3_numerics(algo)
        finally:
            algo.stop()
        if not args.no_profile:
            algo = td3_algo(evaluation=True)
            try:
                extra["td3_evaluation"] = td3_evaluation(algo)
            finally:
                algo.stop()
    if "bc" in paths:
        step, source = bc_step()
        flops, hand = bc_flops(step)
        med, best = timed(step, args.repeats)
        rows.append(row("BC step (batch 1024)", flops, hand, 1e3 * med, 1e3 * best, rates))
        extra["bc_data"] = source
    if "ppo" in paths:
        cfg, algo = ppo_algo()
        try:
            p = ppo_measure(algo, cfg, args.repeats)
        finally:
            algo.stop()
        rows.append(row("PPO minibatch step (128), Learner._update", p["flops"], p["hand"],
                        *p["inner_update_ms"], rates))
        rows.append(row(f"PPO minibatch step in learner_group.update ({p['minibatches']} per call)",
                        p["flops"], p["hand"], p["per_minibatch_in_update_ms"],
                        p["per_minibatch_in_update_ms"], rates))
    if ray_up:
        import ray

        ray.shutdown()
    print_table(rows, rates)
    if "bc_data" in extra:
        print(f"\nBC batch: {extra['bc_data']}")
    if "td3_parts_module_ms" in extra:
        print("\nTD3 parts on the module alone (median ms):")
        for k, v in extra["td3_parts_module_ms"].items():
            print(f"  {k:28s} {v:7.3f}")
    if "td3_profile" in extra:
        p = extra["td3_profile"]
        print(f"\nTD3 inside RLlib, {p['rounds']} training-step rounds, {p['updates']} updates, "
              f"{p['wall_s']:.2f} s; per update (ms):")
        for k, v in p["per_update_ms"].items():
            print(f"  {k:44s} {v:7.3f}")
        print(f"  {'sum':44s} {sum(p['per_update_ms'].values()):7.3f}")
        print("per training-step round (160 env steps, ms):")
        for k, v in p["per_round_ms"].items():
            print(f"  {k:44s} {v:8.2f}")
        print(f"  {'RLlib iteration bookkeeping (per round)':44s} {p['iteration_bookkeeping_ms_per_step']:8.2f}")
    if "td3_numerics" in extra:
        n = extra["td3_numerics"]
        print(f"\nTD3 numerics, {n['updates']} updates vs today's path (reference_update): "
              + ("bit-identical" if n["bit_identical"] else
                 f"largest parameter difference {n['max_rel_param_diff']:.2e} of the parameter's "
                 f"scale ({n['worst_param']})")
              + f"; last qf_loss {n['qf_loss'][0]:.7g} vs {n['qf_loss'][1]:.7g}, policy_loss "
              f"{n['policy_loss'][0]:.7g} vs {n['policy_loss'][1]:.7g}")
    if "td3_evaluation" in extra:
        e = extra["td3_evaluation"]
        print(f"\nevaluation (20 episodes, untrained policy): {e['wall_s']:.2f} s, "
              f"mean episode length {e['episode_len_mean']:.1f}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rates": rates, "rows": rows, **{
            k: v for k, v in extra.items()}}, indent=2, default=str))


if __name__ == "__main__":
    main()
