"""Numeric precision of training: fp32, or bf16 mixed precision on CPUs that have bf16 dot products.

``32-true`` (the default) and ``bf16-mixed`` are Lightning's names: supervised runs pass them to
``lightning.Trainer(precision=...)`` (``trainer.precision``); RL runs (``runners.precision``) put the
Learner's update - forward, loss, backward - under ``torch.autocast("cpu", dtype=torch.bfloat16)``
(:mod:`snnlab.rl.precision`). Either way the matmuls run in bf16 and everything else in fp32: the
parameters and the optimizer state stay fp32, and :class:`~snnlab.spiking.SpikingMLP` runs its LIF
dynamics in fp32 (the currents are cast back before each LIF layer; spikes are exactly 0/1 in bf16).
EnvRunners and evaluation flights act in fp32.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

Precision = Literal["32-true", "bf16-mixed"]
PRECISIONS: tuple[str, ...] = ("32-true", "bf16-mixed")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16) and torch's
    oneDNN can use them; without them bf16 matmuls are emulated and slower than fp32."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if not ({"avx512_bf16", "amx_bf16"} & flags):
        return False
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str, where: str) -> None:
    """One line (a warning) when ``bf16-mixed`` runs on a CPU without bf16 support."""
    if precision == "bf16-mixed" and not cpu_has_bf16():
        warnings.warn(f"{where}: bf16-mixed on a CPU without bf16 dot products (avx512_bf16 / amx_bf16): "
                      "correct but emulated, usually slower than 32-true", stacklevel=2)
