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


def leaves(tree, skip=()) -> dict:
    """Every leaf of a nested result dict by its key path, with its type name (a tensor as its
    item); paths containing one of ``skip`` (clocks, throughputs) left out."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif not any(t in prefix for t in skip):
            out[prefix] = (type(value).__name__, value.item() if hasattr(value, "dim") else value)
    walk("", tree)
    return out
