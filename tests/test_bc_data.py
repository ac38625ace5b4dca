"""The behaviour-cloning dataset: determinism, cache key, corrupt files, atomic writes, relabelling."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from snnlab.quadrotor.expert import HoverExpert
from snnlab.quadrotor.env import QuadrotorHover
from snnlab.quadrotor import bc_data
from snnlab.quadrotor.bc_data import BCDatasetSpec, DatasetError, generate, load_or_generate

SMALL = {"max_steps": 100}


def spec(**kw):
    base = dict(episodes=4, env_config=dict(SMALL), action_noise=0.3, random_action_prob=0.05, seed=3)
    base.update(kw)
    return BCDatasetSpec(**base)


def files(root):
    return sorted(p.name for p in Path(root).iterdir())


def test_generates_caches_and_is_byte_identical(tmp_path, capsys):
    s = spec()
    a = load_or_generate(s, tmp_path / "a", progress=False)
    assert "not found; generating" in capsys.readouterr().err
    b = load_or_generate(s, tmp_path / "b", num_envs=3, progress=False)  # another batch width
    capsys.readouterr()
    pa, pb = tmp_path / "a" / s.filename(), tmp_path / "b" / s.filename()
    assert pa.read_bytes() == pb.read_bytes()
    assert files(tmp_path / "a") == [s.filename()]  # no temp files left behind
    # size and layout: 4 kept episodes of 100 steps, 101 rows each
    assert a.obs.shape == (404, 18) and a.actions.shape == (404, 4)
    assert a.obs.dtype == np.float32 and a.actions.dtype == np.float32
    assert a.episode_lengths.tolist() == [101] * 4 and a.num_episodes == 4
    assert a.meta["key"] == s.key() and a.meta["attempted"] == 4 + a.meta["crashed"]
    # loading the cached file gives the same data, silently
    c = load_or_generate(s, tmp_path / "a", progress=False)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(c.obs, a.obs)
    np.testing.assert_array_equal(c.actions, b.actions)
    assert c.meta == a.meta


def test_key_changes_the_file():
    s = spec()
    names = {s.filename(), spec(seed=4).filename(), spec(env_config={**SMALL, "reward": "paper"}).filename(),
             spec(action_noise=0.2).filename(), spec(episodes=5).filename(),
             spec(random_action_prob=0.0).filename(), spec(drop_crashed=False).filename()}
    assert len(names) == 7
    # env_config order does not matter
    assert (BCDatasetSpec(env_config={"reward": "paper", "max_steps": 100}).filename()
            == BCDatasetSpec(env_config={"max_steps": 100, "reward": "paper"}).filename())
    key = s.key()
    assert key["env_version"] == bc_data.ENV_VERSION and key["expert"] and key["format"]


def test_labels_are_the_clean_expert_action_at_perturbed_states(tmp_path):
    s = spec(action_noise=0.3, random_action_prob=0.1)
    ds = generate(s, num_envs=4, progress=False)
    expert = HoverExpert(QuadrotorHover(**SMALL))
    np.testing.assert_allclose(ds.actions, expert(ds.obs), rtol=0, atol=1e-6)
    # the states were driven by the perturbed actions: they differ from a clean rollout
    clean = generate(spec(action_noise=0.0, random_action_prob=0.0), num_envs=4, progress=False)
    common = sorted(set(clean.episode_ids.tolist()) & set(ds.episode_ids.tolist()))
    assert common
    i, j = clean.episode_ids.tolist().index(common[0]), ds.episode_ids.tolist().index(common[0])
    o_clean, o_noisy = clean.episode(i)[0], ds.episode(j)[0]
    assert o_clean[0].tolist() == o_noisy[0].tolist()  # same reset seed
    assert not np.allclose(o_clean, o_noisy, atol=1e-3)
    # with no perturbation the stored labels are exactly the actions that were applied:
    # replaying them in a single env reproduces the stored observations
    env = QuadrotorHover(**SMALL)
    o, a = clean.episode(1)
    seed = bc_data.episode_reset_seeds(clean.meta["key"]["seed"], int(clean.episode_ids[1]), 1)[0]
    obs, _ = env.reset(seed=seed)
    np.testing.assert_allclose(obs, o[0], atol=1e-6)
    for t in range(100):
        obs, *_ = env.step(a[t])
    np.testing.assert_allclose(obs, o[100], atol=1e-4)


def test_full_observation_is_stored_with_action_history(tmp_path):
    ds = generate(spec(env_config={**SMALL, "action_history": 2}, episodes=2), num_envs=2, progress=False)
    assert ds.obs.shape == (202, 26)
    assert np.all(ds.obs[0, 18:] == 0)  # history is zero after a reset
    np.testing.assert_allclose(ds.actions, HoverExpert(QuadrotorHover())(ds.obs[:, :18]), atol=1e-6)


def test_crashed_episodes_are_dropped_and_counted():
    # random actions half the time: most episodes crash; only the non-crashing ones are kept
    s = spec(episodes=2, env_config={"max_steps": 60}, action_noise=0.0, random_action_prob=0.5)
    ds = generate(s, num_envs=8, progress=False)
    assert ds.num_episodes == 2 and ds.episode_lengths.tolist() == [61, 61]
    assert ds.meta["crashed"] > 0 and ds.meta["attempted"] == 2 + ds.meta["crashed"]
    kept = generate(BCDatasetSpec(**{**s.__dict__, "drop_crashed": False, "episodes": 6}),
                    num_envs=8, progress=False)
    assert (kept.episode_lengths < 61).any()  # crashed episodes end with their terminal observation
    assert len(kept) == kept.episode_lengths.sum()
    last = kept.episode_starts + kept.episode_lengths - 1
    short = kept.episode_lengths < 61
    assert (np.abs(kept.obs[last[short], :3]) > 0.6).any(axis=1).all()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_gives_one_line_error_or_is_regenerated(tmp_path, damage, capsys):
    s = spec(episodes=2)
    ds = load_or_generate(s, tmp_path, progress=False)
    path = tmp_path / s.filename()
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"not a zip file" * 10,
                      "empty": b""}[damage])
    with pytest.raises(DatasetError) as e:
        load_or_generate(s, tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "regenerate=True" in msg
    capsys.readouterr()
    again = load_or_generate(s, tmp_path, progress=False, regenerate=True)
    assert "regenerating" in capsys.readouterr().err
    assert path.read_bytes() == raw
    np.testing.assert_array_equal(again.obs, ds.obs)


def test_key_mismatch_gives_one_line_error(tmp_path):
    s, other = spec(episodes=2), spec(episodes=2, env_config={**SMALL, "reward": "paper"})
    load_or_generate(other, tmp_path, progress=False)
    os.replace(tmp_path / other.filename(), tmp_path / s.filename())  # a file under the wrong name
    with pytest.raises(DatasetError) as e:
        load_or_generate(s, tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and s.filename() in msg and "env_config" in msg and "paper" in msg
    assert isinstance(e.value, ValueError)
    ds = load_or_generate(s, tmp_path, progress=False, regenerate=True)
    assert ds.meta["key"] == s.key()


def test_a_failing_generator_leaves_nothing(tmp_path):
    def boom(spec, **kw):
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        load_or_generate(spec(), tmp_path, generator=boom)
    assert files(tmp_path) == []


def test_a_failing_write_leaves_no_partial_file(tmp_path, monkeypatch):
    ds = generate(spec(episodes=1), num_envs=1, progress=False)
    target = tmp_path / "x.npz"

    def broken(a):
        raise OSError("disk full")

    monkeypatch.setattr(bc_data, "_npy_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        bc_data.save(ds, target)
    assert files(tmp_path) == []


def test_split_is_by_episode():
    ds = generate(spec(episodes=5, random_action_prob=0.0), num_envs=5, progress=False)
    tr, va = ds.split(0.4, seed=0)
    assert tr.num_episodes == 3 and va.num_episodes == 2
    assert len(tr) + len(va) == len(ds)
    rows = {tuple(r) for r in ds.obs[:, :6].tolist()}
    assert {tuple(r) for r in tr.obs[:, :6].tolist()} | {tuple(r) for r in va.obs[:, :6].tolist()} == rows
    assert not {tuple(r) for r in tr.obs[:, :6].tolist()} & {tuple(r) for r in va.obs[:, :6].tolist()}


def test_stored_file_is_a_plain_npz_with_the_key(tmp_path):
    s = spec(episodes=1)
    load_or_generate(s, tmp_path, progress=False)
    with np.load(tmp_path / s.filename(), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"][()]))
        assert z["obs"].shape == (101, 18)
    assert meta["key"] == s.key()
