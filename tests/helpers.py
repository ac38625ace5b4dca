import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def run_python(code: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) in a fresh interpreter that imports this checkout, with ``env`` added."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full, timeout=timeout)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TINY_SL_SWEEP = f"""kind: sweep
name: tiny
base: {CONFIGS / 'sl_digits.yaml'}
set: {{trainer.max_epochs: 3, data.limit: 300, model.hidden: [16]}}
settings:
  - {{kind: fixed, k: 2}}
  - {{kind: interval, k_start: 1, k_end: 100, every: 1, stages: 3}}
seeds: [0, 1]
threshold: 0.5
smoothing: 2
"""
