import gzip
import struct

import numpy as np
import pytest

from snnlab.supervised.data import DataError, DigitsDataModule, TorchvisionDataModule


def test_digits_stratified_split_by_seed():
    dm = DigitsDataModule(seed=0, val_fraction=0.2)
    dm.setup()
    ytr = dm.train_set.tensors[1].numpy()
    yva = dm.val_set.tensors[1].numpy()
    assert len(ytr) + len(yva) == 1797 and len(yva) == 360
    # stratified: each class's share of val within one sample of its overall share
    for c in range(10):
        total = (ytr == c).sum() + (yva == c).sum()
        assert abs((yva == c).sum() - 0.2 * total) <= 1
    x = dm.train_set.tensors[0]
    assert x.shape[1] == 64 and 0.0 <= x.min() and x.max() <= 1.0
    other = DigitsDataModule(seed=1)
    other.setup()
    same = DigitsDataModule(seed=0)
    same.setup()
    assert not np.array_equal(other.val_set.tensors[1].numpy(), yva)
    assert np.array_equal(same.val_set.tensors[1].numpy(), yva)


def write_idx(raw, n=50, rows=28, cols=28, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    raw.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes(),
        "train-labels-idx1-ubyte": struct.pack(">II", 2049, n) + labels.tobytes(),
        "t10k-images-idx3-ubyte": struct.pack(">IIII", 2051, 10, rows, cols) + images[:10].tobytes(),
        "t10k-labels-idx1-ubyte": struct.pack(">II", 2049, 10) + labels[:10].tobytes(),
    }
    for name, data in files.items():
        if gz:
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(data)
        else:
            (raw / name).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_path_reads_mnist_format_files(tmp_path, name, folder):
    images, labels = write_idx(tmp_path / "data" / folder / "raw")
    dm = TorchvisionDataModule(name, root=tmp_path / "data", download=False, seed=0, val_fraction=0.2)
    dm.prepare_data()
    dm.setup()
    x = np.concatenate([dm.train_set.tensors[0].numpy(), dm.val_set.tensors[0].numpy()])
    y = np.concatenate([dm.train_set.tensors[1].numpy(), dm.val_set.tensors[1].numpy()])
    assert x.shape == (50, 784) and dm.n_features == 784
    # every written image comes back, scaled to [0, 1], with its label
    written = {tuple((img.reshape(-1) / 255.0).astype(np.float32).round(5)): int(l)
               for img, l in zip(images, labels)}
    got = {tuple(row.round(5)): int(l) for row, l in zip(x, y)}
    assert got == written


@pytest.fixture
def offline_mirrors(monkeypatch):
    import torchvision

    for cls in (torchvision.datasets.MNIST, torchvision.datasets.FashionMNIST):
        monkeypatch.setattr(cls, "mirrors", ["http://127.0.0.1:9/"])


@pytest.mark.parametrize("download", [False, True])
def test_missing_files_offline_is_one_clear_error(tmp_path, offline_mirrors, download):
    dm = TorchvisionDataModule("mnist", root=tmp_path / "data", download=download)
    with pytest.raises(DataError) as e:
        dm.prepare_data()
    msg = str(e.value)
    assert "\n" not in msg
    assert "MNIST not found in" in msg and "train-images-idx3-ubyte" in msg
    if download:
        assert "download failed" in msg


def test_cli_reports_missing_dataset_with_exit_2(tmp_path, offline_mirrors, capsys):
    from snnlab.cli import main

    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"data: {{name: fashion_mnist, root: {tmp_path / 'd'}, download: false}}\n"
                   "logging: {wandb: off}\n")
    assert main(["train", str(cfg)]) == 2
    assert "FashionMNIST not found" in capsys.readouterr().err
