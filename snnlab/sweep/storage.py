"""A local sweep folder that a SIGKILLed driver leaves resumable (``snnlab sweep --resume``).

Tune (2.60) keeps the experiment's own files - ``experiment_state-*.json``, the search
algorithm's state, each trial's ``result.json`` / ``progress.csv`` - in a staging folder
under the Ray session and copies that folder onto the sweep folder now and then, with
``pyarrow.fs.copy_files``: in parallel threads, in no fixed order, each file truncated and
then written in place. Trial processes write their checkpoints straight into the sweep
folder, and the driver deletes a trial's older checkpoints (``num_to_keep``) the moment it
registers a newer one, before a state that no longer needs them has reached the folder. A
driver killed during such a copy - likely on a loaded machine, where a copy takes long -
leaves a folder that cannot be resumed: an empty ``experiment_state`` / search state (the
resume then fails), a state whose latest checkpoint is already deleted (that trial fails
for good), or a state newer than some trial's rows (rows lost) or older (rows trained and
logged again).

While a local sweep runs, :func:`crash_safe_uploads` replaces that copy and that deletion
in the driver:

- the copy reads the state first (a complete one: written in full and unchanged while read),
  then the other files, writes each beside its destination and renames it into place
  (whole files only), the trials' files first and the state last - so the folder's state is
  never newer than its rows;
- a checkpoint the driver drops is deleted only once a state saved after that decision is
  in the folder.

:func:`trim_to_checkpoints` then makes ``--resume`` exactly-once: the rows a trial logged
after the checkpoint it resumes from are dropped, as it trains those steps again.
:func:`restart_unfinished` (``--resume --restart-unfinished``) makes the unfinished trials start
again from scratch instead (for checkpoints that miss state: TD3's hold no replay buffer).

Remote storage (``s3://`` ...) is left to Tune as it is.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import threading
import time
from pathlib import Path

_PART = ".snnlab-part"  # temp suffix: not *.json / *.pkl, so Tune never reads one back
_STATE_GLOB = "experiment_state-*.json"

_lock = threading.Lock()
_pending: list[tuple[int, object, str]] = []  # (requested at, ns; filesystem; path)


def _part(final: Path) -> Path:
    return final.with_name(f".{final.name}{_PART}")


def _stage(src: Path, final: Path, whole: bool, tries: int = 20) -> tuple[Path, int] | None:
    """Copy ``src`` to a temp file beside ``final``; return it and src's mtime (ns). With
    ``whole``: only a copy of a complete file - unchanged while copied, and valid JSON for the
    experiment state, which the driver rewrites in place while this runs (the search state it
    replaces atomically; it is a pickle despite its ``.json`` name); None if none came within
    ``tries``. (A trial's rows are only appended to: a last row cut short is dropped on
    resume, :func:`trim_to_checkpoints`.)"""
    final.parent.mkdir(parents=True, exist_ok=True)
    part = _part(final)
    for _ in range(tries if whole else 1):
        try:
            before = src.stat()
            shutil.copyfile(src, part)
            after = src.stat()
        except FileNotFoundError:
            return None
        if not whole:
            return part, after.st_mtime_ns
        if (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size):
            try:
                if src.match(_STATE_GLOB):
                    json.loads(part.read_bytes())
                return part, after.st_mtime_ns
            except ValueError:
                pass
        time.sleep(0.05)
    part.unlink(missing_ok=True)
    return None


def upload_experiment(local_path: str, fs_path: str) -> None:
    """Copy the driver's staging folder onto the local sweep folder, whole files only, the
    experiment state last; then delete the checkpoints that the state now there no longer needs."""
    src, dst = Path(local_path), Path(fs_path)
    states = sorted(src.glob(_STATE_GLOB))
    staged_states = [(s, _stage(s, dst / s.name, whole=True)) for s in states]
    files = [p for p in src.rglob("*") if p.is_file() and p not in states]
    staged: list[tuple[Path, Path]] = []
    for f in files:  # read after the state: the rows hold at least what the state knows
        got = _stage(f, dst / f.relative_to(src), whole=f.parent == src)
        if got is not None:
            staged.append((got[0], dst / f.relative_to(src)))
    staged.sort(key=lambda pf: pf[1].parent == dst)  # the trials' files, then the experiment's
    for part, final in staged:
        os.replace(part, final)
    saved_at = None
    for s, got in staged_states:
        if got is not None:
            os.replace(got[0], dst / s.name)
            if s == states[-1]:  # this run's state (a resumed run's folder holds older ones too)
                saved_at = got[1]
    if saved_at is not None:
        _delete_due(saved_at)


def _delete_due(saved_at: int) -> None:
    """Delete the checkpoints dropped before the state saved at ``saved_at`` (ns) was written:
    the driver registers checkpoints and saves its state in one thread, so that state already
    knows the newer checkpoint that replaced them."""
    from ray.train._internal.storage import _delete_fs_path

    with _lock:
        due = [p for p in _pending if p[0] < saved_at]
        _pending[:] = [p for p in _pending if p[0] >= saved_at]
    for _, fs, path in due:
        _delete_fs_path(fs=fs, fs_path=path)


@contextlib.contextmanager
def crash_safe_uploads():
    """Within: the driver's copies of its staging folder onto a local sweep folder and its
    deletions of local checkpoints go through :func:`upload_experiment` (see the module doc)."""
    import pyarrow.fs
    import ray.train._internal.checkpoint_manager as checkpoint_manager
    import ray.train._internal.storage as storage

    upload, delete = storage._upload_to_fs_path, checkpoint_manager._delete_fs_path

    def _upload(local_path, fs, fs_path, exclude=None):
        if (exclude is None and isinstance(fs, pyarrow.fs.LocalFileSystem)
                and Path(local_path).name == "driver_artifacts" and os.path.isdir(local_path)):
            return upload_experiment(local_path, fs_path)
        return upload(local_path=local_path, fs=fs, fs_path=fs_path, exclude=exclude)

    def _delete(fs, fs_path):
        if isinstance(fs, pyarrow.fs.LocalFileSystem):
            with _lock:
                _pending.append((time.time_ns(), fs, fs_path))
        else:
            delete(fs=fs, fs_path=fs_path)

    storage._upload_to_fs_path, checkpoint_manager._delete_fs_path = _upload, _delete
    try:
        yield
    finally:
        storage._upload_to_fs_path, checkpoint_manager._delete_fs_path = upload, delete
        with _lock:  # a sweep that ended normally has none left (its last state came last)
            _pending.clear()


def trim_to_checkpoints(exp_dir: str | Path) -> None:
    """Before a resume: for every trial the resume will continue (not TERMINATED), drop the rows
    of its ``result.json`` and ``progress.csv`` after the step of the checkpoint it continues
    from (all of them when it has none: it starts again), and a last row cut short."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    exp_dir = Path(exp_dir)
    states = sorted(exp_dir.glob(_STATE_GLOB))
    if not states:
        return
    for trial_json, meta_json in json.loads(states[-1].read_text())["trial_data"]:
        trial = json.loads(trial_json)
        if trial.get("status") == "TERMINATED" or not trial.get("relative_logdir"):
            continue
        latest = _TrainingRunMetadata.from_json_state(meta_json).checkpoint_manager.latest_checkpoint_result
        last = int(latest.metrics.get("training_iteration", 0)) if latest is not None else 0
        trial_dir = exp_dir / trial["relative_logdir"]
        _trim_result_json(trial_dir / "result.json", last)
        _trim_progress_csv(trial_dir / "progress.csv", last)


def unfinished_trials(exp_dir: str | Path) -> list[str]:
    """The folders (relative to ``exp_dir``) of the trials that the latest saved state holds as
    unfinished - neither TERMINATED nor ERROR, as Tune's resume sorts them."""
    exp_dir = Path(exp_dir)
    states = sorted(exp_dir.glob(_STATE_GLOB))
    if not states:
        return []
    return [t["relative_logdir"] for t in (json.loads(tj) for tj, _ in
            json.loads(states[-1].read_text())["trial_data"]) if _unfinished(t)]


def _unfinished(trial: dict) -> bool:
    return trial.get("status") not in ("TERMINATED", "ERROR") and bool(trial.get("relative_logdir"))


def restart_unfinished(exp_dir: str | Path) -> list[str]:
    """Before a resume (``--resume --restart-unfinished``): make the trials that the latest saved
    state holds as unfinished start again from scratch - in that state each becomes a trial that
    never ran (status PENDING, fresh run metadata: no checkpoint, no results, no errors; the
    checkpoint settings kept), and its folder (rows, checkpoints, W&B and TensorBoard files) is
    deleted. Tune's resume then starts it from step 1 under its own trial id and folder name.
    Finished and errored trials are left as they are. Returns the folders restarted.

    Why: a trial whose checkpoint does not hold all of its state cannot be continued exactly from
    it - TD3's checkpoints hold no replay buffer, so a resumed trial would go on learning from an
    empty buffer. Restarted, it gives what an uninterrupted run gives (same seed). (Tune's own
    ``ResumeConfig(unfinished=RESTART)`` gives the trial a new id and a new folder, ``<name>_<4
    hex>``, beside the old one; this keeps the one folder per trial that summaries and exports
    name.)"""
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    exp_dir = Path(exp_dir)
    states = sorted(exp_dir.glob(_STATE_GLOB))
    if not states:
        return []
    state = json.loads(states[-1].read_text())
    restarted, data = [], []
    for trial_json, meta_json in state["trial_data"]:
        trial = json.loads(trial_json)
        if _unfinished(trial):
            old = _TrainingRunMetadata.from_json_state(meta_json)
            fresh = _TrainingRunMetadata()
            fresh.checkpoint_manager = _CheckpointManager(
                checkpoint_config=old.checkpoint_manager.checkpoint_config)
            trial["status"] = "PENDING"
            trial_json, meta_json = json.dumps(trial, indent=2), fresh.get_json_state()
            restarted.append(trial["relative_logdir"])
        data.append([trial_json, meta_json])
    if restarted:
        state["trial_data"] = data
        _replace_text(states[-1], json.dumps(state))
        for rel in restarted:
            shutil.rmtree(exp_dir / rel, ignore_errors=True)
    return restarted


def _replace_text(path: Path, text: str) -> None:
    part = _part(path)
    part.write_text(text)
    os.replace(part, path)


def _trim_result_json(path: Path, last: int) -> None:
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["training_iteration"]) <= last:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a row cut short by the kill
    _replace_text(path, "".join(f"{line}\n" for line in keep))


def _trim_progress_csv(path: Path, last: int) -> None:
    if not path.exists():
        return
    text = path.read_text()
    if not text.endswith("\n"):  # a row cut short by the kill
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "training_iteration" not in rows[0]:
        return
    col = rows[0].index("training_iteration")
    keep = [rows[0]]
    for row in rows[1:]:
        try:
            if len(row) == len(rows[0]) and int(float(row[col])) <= last:
                keep.append(row)
        except ValueError:
            pass
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(keep)
    _replace_text(path, out.getvalue())
