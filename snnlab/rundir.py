"""Run directories shared by both worlds: ``<out_dir>/<name>/version_<n>/``."""

from __future__ import annotations

from pathlib import Path


def next_version_dir(root: Path) -> Path:
    """The first ``version_<n>`` under ``root`` that does not exist yet (never overwrite a run)."""
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    while (root / f"version_{n}").exists():
        n += 1
    return root / f"version_{n}"
