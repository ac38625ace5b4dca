"""W&B modes: offline by default (real run files, `wandb sync` later), online when logged in."""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        path = os.path.expanduser("~/.netrc")
        if os.path.exists(path):
            host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
            return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
    return False


def check_wandb_mode(mode: str) -> None:
    """Fail early, in one line, when online logging is asked for without a login."""
    if mode == "offline":
        os.environ["WANDB_MODE"] = "offline"
    elif mode == "online" and not wandb_logged_in():
        raise ConfigError("--wandb online: not logged in to W&B (run `wandb login` or set "
                          "WANDB_API_KEY); use --wandb offline to log locally")



# --- one W&B run per sweep trial, written from inside the trial's own process ---------------
# Tune's driver-side WandbLoggerCallback starts two Ray actors per trial (a queue and a logger)
# and blocks the driver's result processing on them (3-6 s per trial on 2 cores), and its runs
# are written into Tune's driver staging folder, whose final sync to the results folder runs
# *before* the callback waits for the loggers to finish: a run still being written then never
# reaches the trial folder. Logging from the trial writes straight into the trial folder.

# result keys that are not metrics (Tune bookkeeping or the config itself)
_NOT_LOGGED = {"config", "done", "should_checkpoint", "trial_id", "experiment_tag", "node_ip",
               "hostname", "pid", "date", "experiment_id", "node_id"}


def _flat_numbers(d: dict, prefix: str = "") -> dict:
    import numbers

    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if prefix == "" and k in _NOT_LOGGED:
            continue
        if isinstance(v, dict):
            out.update(_flat_numbers(v, key + "/"))
        elif isinstance(v, (numbers.Number, bool)) and not isinstance(v, complex):
            out[key] = v.item() if hasattr(v, "item") else v
        elif getattr(v, "ndim", None) == 0 and getattr(v, "size", 0) == 1:  # 0-d arrays/tensors
            out[key] = v.item()
    return out


def trial_dir_from_storage(storage) -> str:
    """Where a trial writes its W&B run: the trial folder itself when the results folder is on a
    (shared) local filesystem, else the trial's working directory (uploaded as an artifact)."""
    import pyarrow.fs

    if storage is not None and isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return storage.trial_fs_path
    return os.getcwd()


def own_wandb_service() -> None:
    """Make this (a trial's) process start a W&B service of its own instead of joining one that
    another process started. W&B hands its service to child processes through ``WANDB_SERVICE``
    (``3-<pid of the starting process>-...``), and Ray's workers inherit the environment of the
    process that started Ray: had that process used W&B first, every trial would share its
    service, where a trial incarnation Tune stopped without finishing its run (a PBT exploit, a
    restart in another actor) keeps the run id "in use" and the next incarnation's ``wandb.init``
    fails. A token this process started itself is kept."""
    token = os.environ.get("WANDB_SERVICE", "")
    parts = token.split("-")
    if len(parts) > 2 and parts[1].isdigit() and int(parts[1]) != os.getpid():
        del os.environ["WANDB_SERVICE"]


class TrialRun:
    """The W&B run of one sweep trial: ``wandb.init`` in the trial process, one history row per
    reported step (``step=training_iteration``), ``finish`` at the trial's end.

    ``spec`` is the trial config's ``wandb`` entry (``mode``, ``project``, ``group``, ``name``,
    ``tags``, ``id``); the run lands in ``<dir>/wandb/offline-run-*`` (offline) or is streamed
    (online, ``resume="allow"`` so a retried trial continues its run)."""

    def __init__(self, spec: dict, config: dict, directory: str, energy=None):
        import wandb

        #: a ``snnlab.sweep.summary.TrialEnergy`` (or None): each row also gets the trial's energy
        #: estimate so far (``energy/...``), and the run's summary the final one at ``finish``
        self.energy = energy

        mode = spec["mode"]
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"
        own_wandb_service()
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=spec["project"], group=spec["group"], name=spec["name"], tags=spec["tags"],
            id=spec.get("id"), resume="allow" if mode == "online" else None, mode=mode,
            dir=directory, config=config, reinit="finish_previous", allow_val_change=True,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    def log(self, result: dict) -> None:
        row = _flat_numbers(result)
        if self.energy is not None:
            try:
                row.update(self.energy.update(result))
            except Exception as e:  # noqa: BLE001 - an estimate must never fail the trial
                import warnings

                warnings.warn(f"snnlab: no energy estimate for this W&B run ({type(e).__name__}: {e})",
                              stacklevel=2)
                self.energy = None
        self.run.log(row, step=int(result["training_iteration"]))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            final = self.energy.summary() if self.energy is not None else {}
            if final:
                self.run.summary.update(final)
            self.run.finish(exit_code=exit_code)
            self.run = None


# --- reading an offline run back (tests, benchmarks) ------------------------------------
_BLOCK = 32768
_HEADER = b":W&B\xe1\xbe\x00"  # ident, magic 0xBEE1 (little-endian), version 0


def read_offline_run(path) -> list:
    """The ``wandb_internal_pb2.Record`` messages of an offline run file (``run-*.wandb``).

    The file is W&B's LevelDB-style log (a 7-byte W&B header, then records in 32 KiB blocks,
    each chunk with a 7-byte crc/length/type header, FULL=1 FIRST=2 MIDDLE=3 LAST=4); the
    installed wandb has no Python reader for it, so this follows the format and decodes every
    record with wandb's own protobuf classes. A truncated last record is dropped."""
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    if not data.startswith(_HEADER):
        raise ValueError(f"{path}: not a W&B run file")
    records, pos, parts = [], len(_HEADER), b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if len(chunk) < length or (crc == 0 and length == 0 and kind == 0):
            break
        if zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(parts)
            records.append(rec)
            parts = b""
    return records


def offline_summary(path) -> dict:
    """The run summary of an offline run file: every ``summary`` record's updates applied in order
    (later values win; removed keys dropped), keys joined with "/", values JSON-decoded."""
    import json

    out: dict = {}
    for rec in read_offline_run(path):
        if rec.WhichOneof("record_type") == "summary":
            for i in rec.summary.update:
                out[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
            for i in rec.summary.remove:
                out.pop(i.key or "/".join(i.nested_key), None)
    return out


def offline_history(path) -> list[dict]:
    """The history rows (``run.log`` calls) of an offline run file, values JSON-decoded."""
    import json

    rows = []
    for rec in read_offline_run(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                         for i in rec.history.item})
    return rows
