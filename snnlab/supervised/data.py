"""LightningDataModules for spiking classification.

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, ships with
  scikit-learn, so it works offline). The embedded default.
- ``mnist`` / ``fashion_mnist``: torchvision's datasets. They are downloaded
  when online; offline and without the files, setup fails with one clear
  error that says where to put them.

Every dataset is flattened to a vector in [0, 1] (the network's input
current) and split into train/val by a stratified split seeded by the run's
seed.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset


class DataError(RuntimeError):
    """A dataset cannot be loaded; the message says how to fix it."""


class _SplitDataModule(L.LightningDataModule):
    n_features: int
    n_classes: int

    def __init__(self, seed: int = 0, val_fraction: float = 0.2, batch_size: int = 64,
                 num_workers: int = 0, limit: int | None = None) -> None:
        super().__init__()
        self.seed, self.val_fraction = seed, val_fraction
        self.shuffle_seed = seed  # the training order's; a restored PBT member continues with another
        self.batch_size, self.num_workers, self.limit = batch_size, num_workers, limit
        self.train_set = self.val_set = None

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (features [N, F] float32 in [0, 1], labels [N] int64)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = self._load()
        if self.limit is not None:
            x, y = x[: self.limit], y[: self.limit]
        xtr, xva, ytr, yva = train_test_split(
            x, y, test_size=self.val_fraction, random_state=self.seed, stratify=y
        )
        self.train_set = TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr))
        self.val_set = TensorDataset(torch.from_numpy(xva), torch.from_numpy(yva))

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.shuffle_seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          generator=g, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=max(self.batch_size, 256),
                          num_workers=self.num_workers)


class DigitsDataModule(_SplitDataModule):
    """scikit-learn's digits: 64 features (8x8, scaled to [0, 1]), 10 classes."""

    n_features, n_classes = 64, 10

    def _load(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


class TorchvisionDataModule(_SplitDataModule):
    """MNIST or FashionMNIST via torchvision: 784 features in [0, 1], 10 classes."""

    n_features, n_classes = 784, 10
    _names = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

    def __init__(self, name: str, root: str | Path = "data", download: bool = True, **kw) -> None:
        super().__init__(**kw)
        if name not in self._names:
            raise ValueError(f"unknown torchvision dataset {name!r}; allowed: {', '.join(self._names)}")
        self.name, self.root, self.download = name, Path(root), download

    def _dataset(self, download: bool):
        import torchvision

        cls = getattr(torchvision.datasets, self._names[self.name])
        return cls(str(self.root), train=True, download=download)

    def prepare_data(self) -> None:
        self._get()

    def _get(self):
        try:
            return self._dataset(download=False)
        except RuntimeError:
            pass
        raw = self.root / self._names[self.name] / "raw"
        how = (f"{self._names[self.name]} not found in {raw}: run once with internet access "
               f"(data.download: true) or copy train-images-idx3-ubyte and "
               f"train-labels-idx1-ubyte (optionally .gz) into that folder")
        if not self.download:
            raise DataError(how)
        try:
            return self._dataset(download=True)
        except Exception as e:  # URLError, socket errors, checksum failures...
            raise DataError(f"{how} (download failed: {type(e).__name__})") from None

    def _load(self):
        ds = self._get()
        x = ds.data.reshape(len(ds.data), -1).numpy().astype(np.float32) / 255.0
        return x, ds.targets.numpy().astype(np.int64)


def make_datamodule(cfg, seed: int) -> _SplitDataModule:
    """Build the datamodule described by a :class:`snnlab.supervised.config.DataConfig`."""
    kw = dict(seed=seed, val_fraction=cfg.val_fraction, batch_size=cfg.batch_size,
              num_workers=cfg.num_workers, limit=cfg.limit)
    if cfg.name == "digits":
        return DigitsDataModule(**kw)
    return TorchvisionDataModule(cfg.name, root=cfg.root, download=cfg.download, **kw)
