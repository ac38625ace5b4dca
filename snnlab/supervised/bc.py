"""Behaviour cloning on the drone: the paper's supervised experiment, in Lightning.

- :class:`BehaviourCloner` (LightningModule): ``tanh`` of the shared
  :class:`~snnlab.spiking.SpikingMLP`'s readout (reset mode: fresh membranes,
  ``num_steps`` internal steps per observation - the TD3 actor's form)
  regressed onto the expert's action with MSE; logs ``train_loss`` /
  ``val_loss`` (MSE), ``slope`` and ``{train,val}_spike_rate/layer{i}``.
- :class:`BCDataModule`: the cached expert dataset
  (:func:`snnlab.quadrotor.bc_data.load_or_generate`), split into train and
  validation by whole episodes (:meth:`BCDataset.split`, seeded by the run's seed).
- :class:`FlyEvalCallback`: after validation every ``every`` epochs (and the
  last), flies the clone in the batched env (:func:`snnlab.quadrotor.fly.fly`) and
  logs ``eval_return``, ``eval_full_fraction`` (episodes flown to the end),
  ``eval_length`` and ``eval_spike_rate/layer{i}`` - before
  ``on_train_epoch_end``, so :class:`SlopeScheduleCallback` and the sweep's
  ``score`` can use ``eval_return``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from ..quadrotor.bc_data import BCDataset, BCDatasetSpec, DatasetError, dataset_path, load_or_generate
from ..quadrotor.env import N_ACTIONS
from .module import SpikingModule


class BehaviourCloner(SpikingModule):
    """a = tanh(SpikingMLP(obs)), trained with MSE against the expert's action."""

    def __init__(self, n_in: int, network: dict[str, Any], n_out: int = N_ACTIONS,
                 lr: float = 1e-3, weight_decay: float = 0.0, slope: float = 25.0) -> None:
        super().__init__(n_in=n_in, n_out=n_out, network=network, slope=slope)
        self.save_hyperparameters()

    def readout(self, out: torch.Tensor) -> torch.Tensor:
        return torch.tanh(out)

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target)


def dataset_spec(cfg) -> BCDatasetSpec:
    """The :class:`BCDatasetSpec` of a :class:`snnlab.supervised.config.BCDataConfig`."""
    return BCDatasetSpec(episodes=cfg.episodes, env_config=dict(cfg.env_config),
                         action_noise=cfg.action_noise, random_action_prob=cfg.random_action_prob,
                         seed=cfg.dataset_seed)


def _cli_fix(e: DatasetError) -> DatasetError:
    """The same one-line error, with the fix phrased for config users."""
    return DatasetError(str(e).replace("pass regenerate=True",
                                       "set data.regenerate: true (--set data.regenerate=true)"))


def load_dataset(cfg, progress: bool = True) -> BCDataset:
    """Load (or generate, saying so on stderr) the dataset a BC data config names."""
    spec = dataset_spec(cfg)
    path = dataset_path(spec, cfg.root)
    if not path.exists() and not cfg.generate:
        raise DatasetError(f"{path}: BC dataset not found; set data.generate: true to generate it "
                           f"({cfg.episodes} expert episodes)")
    try:
        return load_or_generate(spec, cfg.root, regenerate=cfg.regenerate, progress=progress)
    except DatasetError as e:
        raise _cli_fix(e) from None


def limit_episodes(ds: BCDataset, limit: int | None) -> BCDataset:
    """The first episodes holding at most ``limit`` rows (at least two episodes)."""
    if limit is None:
        return ds
    n = int(np.searchsorted(np.cumsum(ds.episode_lengths), limit, side="right"))
    return ds.select_episodes(np.arange(min(max(n, 2), ds.num_episodes)))


class BCDataModule(L.LightningDataModule):
    """Expert (obs, action) pairs; train / val split by whole episodes."""

    def __init__(self, cfg, seed: int = 0, progress: bool = True) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.shuffle_seed = seed  # the training order's; a restored PBT member continues with another
        self.dataset = limit_episodes(load_dataset(cfg, progress), cfg.limit)
        self.n_features = int(self.dataset.obs.shape[1])
        self.n_outputs = N_ACTIONS
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = self.dataset.split(self.cfg.val_fraction, seed=self.seed)
        self.num_train_episodes, self.num_val_episodes = train.num_episodes, val.num_episodes
        self.train_set = TensorDataset(torch.from_numpy(train.obs), torch.from_numpy(train.actions))
        self.val_set = TensorDataset(torch.from_numpy(val.obs), torch.from_numpy(val.actions))

    def _loader(self, ds: TensorDataset, batch_size: int, shuffle: bool) -> DataLoader:
        # whole batches by one fancy index each (TensorDataset takes index lists), not row by row
        sampler = (RandomSampler(ds, generator=torch.Generator().manual_seed(self.shuffle_seed)) if shuffle
                   else SequentialSampler(ds))
        return DataLoader(ds, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None,
                          num_workers=self.cfg.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, max(self.cfg.batch_size, 4096), shuffle=False)


class FlyEvalCallback(L.Callback):
    """Fly the clone every ``every`` epochs (epochs 0, every, 2 every, ... and the last) and log
    ``eval_return``, ``eval_full_fraction``, ``eval_length`` and ``eval_spike_rate/layer{i}``.

    It runs in ``on_validation_epoch_end`` (not during the sanity check), so the metrics exist
    before ``on_train_epoch_end`` (the slope schedule) and the best-checkpoint check. Lightning
    keeps the latest value of a metric in ``trainer.callback_metrics``, so between flights the
    schedule and sweeps see the latest flight's numbers. ``history`` holds every flight.
    """

    def __init__(self, env_config: dict | None = None, every: int = 1, episodes: int = 20,
                 seed: int = 0) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.env_config, self.every, self.episodes, self.seed = dict(env_config or {}), every, episodes, seed
        self.history: list[dict[str, float]] = []

    def due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch
        return epoch % self.every == 0 or epoch + 1 >= (trainer.max_epochs or 0)

    def flight(self, pl_module: L.LightningModule) -> dict[str, float]:
        from ..quadrotor.fly import fly, torch_policy

        net = pl_module.net
        rates: list[np.ndarray] = []
        policy = torch_policy(pl_module, device=pl_module.device,
                              on_forward=lambda: rates.append(np.array([float(r) for r in net.last_rates])))
        stats = fly(policy, self.env_config, episodes=self.episodes, seed=self.seed)
        out = {"eval_return": stats.return_mean, "eval_return_std": stats.return_std,
               "eval_full_fraction": stats.full_fraction, "eval_length": stats.length_mean}
        for i, r in enumerate(np.mean(rates, axis=0)):
            out[f"eval_spike_rate/layer{i}"] = float(r)
        return out

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.due(trainer):
            return
        metrics = self.flight(pl_module)
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        for k, v in metrics.items():
            pl_module.log(k, v, on_step=False, on_epoch=True, prog_bar=k in ("eval_return",
                                                                               "eval_full_fraction"))


__all__ = ["BCDataModule", "BehaviourCloner", "FlyEvalCallback", "dataset_spec", "limit_episodes",
           "load_dataset"]
