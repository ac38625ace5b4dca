"""Behaviour-cloning data: :class:`~snnlab.quadrotor.expert.HoverExpert` rollouts on the quadrotor.

``load_or_generate(BCDatasetSpec(...), root)`` returns a :class:`BCDataset`
(``obs [N, obs_dim]`` and ``actions [N, 4]`` float32 numpy arrays, the
episode structure and the metadata), generating and caching it on first use.

Generation (deterministic from ``spec.seed``): episode ``i`` gets the i-th
child of ``numpy.random.SeedSequence(seed)``; its first 32-bit word is the
env reset seed and a ``Generator`` on it draws that episode's perturbations
(so the data do not depend on how many drones are stepped together).
Episodes run on the batched env (``gym.make_vec(ENV_ID, num_envs=...,
vectorization_mode="vector_entry_point", **env_config)``). At every step
the stored label is the clean expert action ``expert(obs)``; the env is
stepped with the *perturbed* action ``expert(obs) + N(0, action_noise^2)``,
replaced with probability ``random_action_prob`` by a uniform random action
(DAgger-style relabelling: the clone sees recovery states with the action
that recovers from them). An episode of T steps stores T + 1 rows (its
observations before every step and the final one, each with the expert's
label - the paper's "501-step rollouts"). Episodes that leave the box are
dropped (``drop_crashed``, default): ``episodes`` counts the kept ones, the
first ``episodes`` non-crashing ones in episode order; the metadata count
the attempts and crashes.

Cache: ``<root>/bc_hover_<hash>.npz``, the hash being the first 16 hex digits
of the SHA-256 of the *key*, the sorted JSON of everything that shapes the
data (dataset format version, env id and version, env_config, episodes,
perturbation settings, seed, drop_crashed, expert version and gains); the full key is
stored inside the file and checked on load. The file is an uncompressed
``.npz`` (``np.load`` reads it) whose zip entries carry a fixed timestamp,
so the same key always gives byte-identical files; it is written to a
temporary file in ``root`` and moved into place with ``os.replace``, so a
reader never sees a partial file. A corrupt file or a key mismatch raises
:class:`DatasetError` (one line: the file, the problem, the fix), or is
regenerated with ``regenerate=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .env import ENV_ID, ENV_VERSION
from .expert import EXPERT_VERSION, ExpertGains, HoverExpert

DATASET_FORMAT_VERSION = 1
DEFAULT_ROOT = "data"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ARRAYS = ("obs", "actions", "episode_lengths", "episode_returns", "episode_ids")


class DatasetError(ValueError):
    """A cached BC dataset cannot be used; the one-line message names the file and the fix."""


@dataclass(frozen=True)
class BCDatasetSpec:
    """Everything that shapes a BC dataset (and so its cache key).

    ``env_config``: kwargs of the env (``reward``, ``max_steps``,
    ``action_history``, ...). ``episodes``: kept episodes (non-crashing ones
    when ``drop_crashed``). ``action_noise``: std of the Gaussian added to
    the expert's action when stepping; ``random_action_prob``: chance per
    step of stepping with a uniform random action instead.
    """

    episodes: int = 1000
    env_config: dict = field(default_factory=dict, hash=False)
    action_noise: float = 0.0
    random_action_prob: float = 0.0
    seed: int = 0
    drop_crashed: bool = True

    def __post_init__(self) -> None:
        if int(self.episodes) != self.episodes or self.episodes < 1:
            raise ValueError(f"episodes must be an integer >= 1, got {self.episodes!r}")
        if not self.action_noise >= 0:
            raise ValueError(f"action_noise must be >= 0, got {self.action_noise!r}")
        if not 0 <= self.random_action_prob <= 1:
            raise ValueError(f"random_action_prob must be in [0, 1], got {self.random_action_prob!r}")
        if "num_envs" in self.env_config:
            raise ValueError("env_config must not contain num_envs (pass num_envs to generate)")
        json.dumps(dict(self.env_config))  # must be JSON-serialisable: it is part of the key

    def key(self) -> dict[str, Any]:
        """The cache key: a JSON-able dict of everything that shapes the data."""
        return {
            "format": DATASET_FORMAT_VERSION,
            "env_id": ENV_ID,
            "env_version": ENV_VERSION,
            "env_config": json.loads(json.dumps(dict(self.env_config), sort_keys=True)),
            "episodes": int(self.episodes),
            "action_noise": float(self.action_noise),
            "random_action_prob": float(self.random_action_prob),
            "seed": int(self.seed),
            "drop_crashed": bool(self.drop_crashed),
            "expert": {"version": EXPERT_VERSION, "gains": dataclasses.asdict(ExpertGains())},
        }

    def key_json(self) -> str:
        return json.dumps(self.key(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.key_json().encode()).hexdigest()[:16]

    def filename(self) -> str:
        return f"bc_hover_{self.digest()}.npz"


@dataclass
class BCDataset:
    """Expert observations and labels, episodes stored one after the other.

    ``obs [N, obs_dim]`` float32 (the env's full observation, base 18 values
    first), ``actions [N, 4]`` float32 (the clean expert action at each
    observation), ``episode_lengths [E]`` (rows per episode, summing to N),
    ``episode_returns [E]`` (return of each episode under the env's reward,
    with the actions actually applied), ``episode_ids [E]`` (each episode's
    index in the seed stream: its reset seed is
    ``episode_reset_seeds(seed, id, 1)[0]``), ``meta`` (the key plus counts).
    """

    obs: np.ndarray
    actions: np.ndarray
    episode_lengths: np.ndarray
    episode_returns: np.ndarray
    episode_ids: np.ndarray
    meta: dict
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.episode_lengths)[:-1])).astype(np.int64)

    def episode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(obs, actions) of episode ``i`` (views)."""
        s = int(self.episode_starts[i])
        e = s + int(self.episode_lengths[i])
        return self.obs[s:e], self.actions[s:e]

    def select_episodes(self, idx) -> "BCDataset":
        """A new dataset holding the episodes ``idx`` (in that order; arrays copied)."""
        idx = np.asarray(idx, dtype=np.int64)
        starts, lengths = self.episode_starts, self.episode_lengths
        rows = (np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in idx])
                if len(idx) else np.zeros(0, dtype=np.int64))
        return BCDataset(self.obs[rows], self.actions[rows], lengths[idx].copy(),
                         self.episode_returns[idx].copy(), self.episode_ids[idx].copy(),
                         dict(self.meta), self.path)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple["BCDataset", "BCDataset"]:
        """(train, val) by whole episodes (no episode in both), shuffled by ``seed``;
        at least one episode in each when there are two or more."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        n = self.num_episodes
        perm = np.random.default_rng(seed).permutation(n)
        n_val = int(round(val_fraction * n))
        if val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        return self.select_episodes(np.sort(perm[n_val:])), self.select_episodes(np.sort(perm[:n_val]))


# --- generation -------------------------------------------------------------------------


def episode_reset_seeds(seed: int, start: int, count: int) -> list[int]:
    """The env reset seeds of episodes ``start .. start + count - 1`` of the stream of ``seed``."""
    return _episode_streams(seed, start, count)[0]


def _episode_streams(seed: int, start: int, count: int):
    """(reset seeds, generators) of episodes start .. start + count - 1."""
    children = np.random.SeedSequence(int(seed)).spawn(start + count)[start:]
    seeds = [int(c.generate_state(1)[0]) for c in children]
    return seeds, [np.random.default_rng(c) for c in children]


def generate(spec: BCDatasetSpec, num_envs: int = 256, progress: bool = True,
             max_attempts: int | None = None) -> BCDataset:
    """Roll the expert out as ``spec`` says; independent of ``num_envs`` (the batch width).

    Raises ``RuntimeError`` when ``drop_crashed`` and fewer than
    ``spec.episodes`` of ``max_attempts`` (default ``2 * episodes + 64``)
    episodes stay in the box.
    """
    import gymnasium as gym  # (snnlab.quadrotor.env, imported above, registers ENV_ID)

    env = gym.make_vec(ENV_ID, num_envs=int(num_envs), vectorization_mode="vector_entry_point",
                       **dict(spec.env_config))
    venv = env.unwrapped
    expert = HoverExpert(venv)
    T = int(venv.step_limit)
    n = int(num_envs)
    want = int(spec.episodes)
    max_attempts = max_attempts or (2 * want + 64 if spec.drop_crashed else want)
    obs_dim = int(venv.obs_dim)
    kept_obs, kept_act, kept_len, kept_ret, kept_id = [], [], [], [], []
    attempted = crashed = 0
    bar = _progress(want, progress)
    try:
        start = 0
        while len(kept_len) < want and start < max_attempts:
            seeds, rngs = _episode_streams(spec.seed, start, n)
            # each episode's perturbations, drawn up front from its own generator
            noise = np.stack([r.standard_normal((T, 4)) for r in rngs], axis=1) * spec.action_noise
            rand_mask = np.stack([r.random(T) for r in rngs], axis=1) < spec.random_action_prob
            rand_act = np.stack([r.uniform(-1.0, 1.0, (T, 4)) for r in rngs], axis=1)
            O = np.zeros((T + 1, n, obs_dim), dtype=np.float32)
            A = np.zeros((T + 1, n, 4), dtype=np.float32)
            end_obs = np.zeros((n, obs_dim), dtype=np.float32)  # terminal observations
            obs, _ = env.reset(seed=seeds)
            alive = np.ones(n, dtype=bool)
            length = np.full(n, T + 1)
            ret = np.zeros(n)
            for t in range(T):
                label = expert(obs)
                O[t], A[t] = obs, label
                act = np.where(rand_mask[t][:, None], rand_act[t], label + noise[t])
                obs, rew, term, trunc, _ = env.step(act.astype(np.float32))
                ret += np.where(alive, rew, 0.0)
                ended = alive & term
                if ended.any():  # the terminal observation (the env resets these drones next step)
                    length[ended] = t + 2
                    end_obs[ended] = obs[ended]
                    alive &= ~term
                    if not alive.any():
                        break
            O[T], A[T] = obs, expert(obs)  # the final observation of the episodes that lasted
            crashed_now = np.flatnonzero(~alive)
            if len(crashed_now):
                O[length[crashed_now] - 1, crashed_now] = end_obs[crashed_now]
                A[length[crashed_now] - 1, crashed_now] = expert(end_obs[crashed_now])
            for i in range(n):
                if len(kept_len) >= want or start + i >= max_attempts:
                    break
                attempted += 1
                if not alive[i]:
                    crashed += 1
                    if spec.drop_crashed:
                        continue
                L = int(length[i])
                kept_obs.append(O[:L, i])
                kept_act.append(A[:L, i])
                kept_len.append(L)
                kept_ret.append(ret[i])
                kept_id.append(start + i)
                bar.update(1)
            start += n
    finally:
        bar.close()
        env.close()
    if len(kept_len) < want:
        raise RuntimeError(f"only {len(kept_len)} of {attempted} expert episodes stayed in the box; "
                           f"{want} were asked for (lower the perturbations or the episode count)")
    meta = {"key": spec.key(), "attempted": attempted, "crashed": crashed,
            "episode_steps": T, "rows": int(sum(kept_len)), "obs_dim": obs_dim}
    return BCDataset(np.concatenate(kept_obs), np.concatenate(kept_act),
                     np.asarray(kept_len, dtype=np.int64), np.asarray(kept_ret, dtype=np.float64),
                     np.asarray(kept_id, dtype=np.int64), meta)


def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, k): ...
            def close(self): ...
        return _Null()
    return tqdm(total=total, unit="ep", desc="BC expert rollouts", disable=not enabled,
                file=sys.stderr, leave=False)


# --- storage ----------------------------------------------------------------------------


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def save(ds: BCDataset, path: str | Path) -> Path:
    """Write ``ds`` to ``path`` atomically (temp file in the same folder + ``os.replace``),
    as an uncompressed ``.npz`` with fixed zip timestamps (same data -> same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = {name: getattr(ds, name) for name in _ARRAYS}
    entries["meta"] = np.array(json.dumps(ds.meta, sort_keys=True, separators=(",", ":")))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
                for name, arr in entries.items():
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                    info.external_attr = 0o644 << 16
                    info.create_system = 3
                    zf.writestr(info, _npy_bytes(arr))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    ds.path = path
    return path


def load(path: str | Path, expected_key: dict | None = None) -> BCDataset:
    """Read a dataset file; :class:`DatasetError` if it is corrupt or its key is not ``expected_key``."""
    path = Path(path)
    fix = "delete it or pass regenerate=True"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[f"{name}"] for name in _ARRAYS}
            meta = json.loads(str(z["meta"][()]))
        obs, act, lengths = arrays["obs"], arrays["actions"], arrays["episode_lengths"]
        if (obs.ndim != 2 or act.shape != (len(obs), 4) or lengths.sum() != len(obs)
                or len(arrays["episode_returns"]) != len(lengths)
                or len(arrays["episode_ids"]) != len(lengths) or not isinstance(meta, dict)
                or "key" not in meta):
            raise ValueError("inconsistent arrays")
    except FileNotFoundError:
        raise
    except Exception as e:  # BadZipFile, truncated entries, bad JSON, missing arrays ...
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"{path}: not a readable BC dataset ({type(e).__name__}: {why}); {fix}") from None
    if expected_key is not None and meta["key"] != expected_key:
        stored = meta["key"] if isinstance(meta["key"], dict) else {}
        diff = sorted(k for k in set(stored) | set(expected_key) if stored.get(k) != expected_key.get(k))
        what = ", ".join(f"{k}={json.dumps(stored.get(k))} (wanted {json.dumps(expected_key.get(k))})"
                         for k in diff)
        raise DatasetError(f"{path}: stored dataset key differs from the requested one: {what}; {fix}")
    return BCDataset(obs, act, lengths, arrays["episode_returns"], arrays["episode_ids"], meta, path)


def dataset_path(spec: BCDatasetSpec, root: str | Path | None = None) -> Path:
    return Path(DEFAULT_ROOT if root is None else root) / spec.filename()


def load_or_generate(spec: BCDatasetSpec, root: str | Path | None = None, regenerate: bool = False,
                     num_envs: int = 256, progress: bool = True,
                     generator: Callable[..., BCDataset] | None = None) -> BCDataset:
    """The dataset of ``spec`` from ``<root>/bc_hover_<hash>.npz``, generated (and cached) if missing.

    ``root`` defaults to ``data`` (relative to the working directory). A corrupt file or
    one with another key raises :class:`DatasetError` unless ``regenerate`` (then it is
    rebuilt). ``generator`` replaces :func:`generate` (tests).
    """
    path = dataset_path(spec, root)
    key = spec.key()
    if path.exists():
        try:
            return load(path, key)
        except DatasetError as e:
            if not regenerate:
                raise
            print(f"bc_data: {e} - regenerating", file=sys.stderr)
    else:
        print(f"bc_data: {path} not found; generating {spec.episodes} expert episodes", file=sys.stderr)
    ds = (generator or generate)(spec, num_envs=num_envs, progress=progress)
    save(ds, path)
    return ds


__all__ = ["BCDataset", "BCDatasetSpec", "DatasetError", "episode_reset_seeds",
           "DATASET_FORMAT_VERSION", "generate", "load", "load_or_generate", "save", "dataset_path"]
