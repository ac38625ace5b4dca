"""Slope schedules: plain Python objects that decide the surrogate slope k.

Every schedule has the same small interface, driven once per *update period*
(an epoch in supervised training, an iteration in RL) by a thin callback:

    sched.k                  # the slope to train with now
    sched.update(score)      # report the period's score; returns the next k
    sched.state_dict() / sched.load_state_dict(d)   # exact resume

``FixedSlope`` ignores the score, ``IntervalSlope`` counts updates, and
``AdaptiveSlope`` follows the score history (PAPER.md, "Slope schedules").
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

Spacing = Literal["linear", "geometric"]


def _positive(name: str, k: float) -> float:
    k = float(k)
    if not math.isfinite(k) or k <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {k}")
    return k


def _finite_score(score: float | None) -> float | None:
    if score is None:
        return None
    score = float(score)
    if math.isnan(score):
        raise ValueError("score is NaN; a slope schedule needs a finite score")
    return score


class SlopeSchedule:
    """Base class: keeps the update counter and the current k."""

    kind = "base"

    def __init__(self) -> None:
        self.updates = 0
        self.k = self._initial_k()

    def _initial_k(self) -> float:
        raise NotImplementedError

    def _next_k(self, score: float | None) -> float:
        raise NotImplementedError

    def update(self, score: float | None = None) -> float:
        """Feed the score of the period that just ended; return the next k."""
        score = _finite_score(score)
        self.updates += 1
        try:
            self.k = float(self._next_k(score))
        except Exception:
            self.updates -= 1
            raise
        return self.k

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "updates": self.updates, "k": self.k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"cannot load a {state.get('kind')!r} schedule state into {self.kind!r}")
        self.updates = int(state["updates"])
        self.k = float(state["k"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k:g}, updates={self.updates})"


class FixedSlope(SlopeSchedule):
    """A constant slope k."""

    kind = "fixed"

    def __init__(self, k: float) -> None:
        self.k_fixed = _positive("k", k)
        super().__init__()

    def _initial_k(self) -> float:
        return self.k_fixed

    def _next_k(self, score: float | None) -> float:
        return self.k_fixed

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the update counter; k stays this schedule's own. A fixed schedule's k is its
        configuration's, so a checkpoint written at another k (a PBT member restored from its
        source's checkpoint with a perturbed k) trains with the k it was built with from the
        first step on, not with the checkpoint's for one period."""
        super().load_state_dict(state)
        self.k = self.k_fixed


class IntervalSlope(SlopeSchedule):
    """k moves from ``k_start`` to ``k_end`` in ``stages`` equal steps, one every ``every`` updates.

    Stage ``s = min(updates // every, stages - 1)`` has progress
    ``f = s / (stages - 1)`` and slope ``k_start + f (k_end - k_start)``
    (linear spacing) or ``k_start (k_end / k_start) ** f`` (geometric).
    """

    kind = "interval"

    def __init__(
        self,
        k_start: float = 1.0,
        k_end: float = 100.0,
        every: int = 1,
        stages: int = 10,
        spacing: Spacing = "geometric",
    ) -> None:
        self.k_start = _positive("k_start", k_start)
        self.k_end = _positive("k_end", k_end)
        if int(every) < 1:
            raise ValueError(f"every must be an integer >= 1, got {every}")
        if int(stages) < 2:
            raise ValueError(f"stages must be an integer >= 2, got {stages}")
        if spacing not in ("linear", "geometric"):
            raise ValueError(f"spacing must be 'linear' or 'geometric', got {spacing!r}")
        self.every, self.stages, self.spacing = int(every), int(stages), spacing
        super().__init__()

    def value_at(self, updates: int) -> float:
        stage = min(updates // self.every, self.stages - 1)
        f = stage / (self.stages - 1)
        if self.spacing == "linear":
            return self.k_start + f * (self.k_end - self.k_start)
        return self.k_start * (self.k_end / self.k_start) ** f

    def _initial_k(self) -> float:
        return self.value_at(0)

    def _next_k(self, score: float | None) -> float:
        return self.value_at(self.updates)


class AdaptiveSlope(SlopeSchedule):
    """The paper's adaptive slope, driven by the score history.

    Each update: the score is normalised to ``r_raw = clip((score - score_low)
    / (score_high - score_low), 0, 1)``, low-passed
    ``r_t = smoothing * r_{t-1} + (1 - smoothing) * r_raw`` (``smoothing=0``
    disables it; the first r is the raw value), and differenced
    ``r'_t = r_t - r_{t-1}`` (0 for the first score). Every ``every`` updates
    the slope becomes::

        m   = (1 / window) * sum_{i=0..window-1} (w_p * r_{t-i} + w_d * r'_{t-i})
        k_t = clamp(k_min + m * (k_max - k_min), k_min, k_max)

    Before ``window`` scores exist the missing terms count as 0 (the sum is
    still divided by ``window``), so k starts shallow and rises with
    performance. Before the first score, k is ``k_min``.
    """

    kind = "adaptive"

    def __init__(
        self,
        score_low: float = 0.0,
        score_high: float = 1.0,
        k_min: float = 1.0,
        k_max: float = 100.0,
        window: int = 10,
        w_p: float = 0.5,
        w_d: float = 0.5,
        every: int = 1,
        smoothing: float = 0.0,
    ) -> None:
        self.k_min = _positive("k_min", k_min)
        self.k_max = _positive("k_max", k_max)
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({k_min}) must not exceed k_max ({k_max})")
        if not (math.isfinite(score_low) and math.isfinite(score_high)) or score_high <= score_low:
            raise ValueError(
                f"score_high ({score_high}) must be a finite number above score_low ({score_low})"
            )
        if int(window) < 1:
            raise ValueError(f"window must be an integer >= 1, got {window}")
        if int(every) < 1:
            raise ValueError(f"every must be an integer >= 1, got {every}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.score_low, self.score_high = float(score_low), float(score_high)
        self.window, self.every = int(window), int(every)
        self.w_p, self.w_d, self.smoothing = float(w_p), float(w_d), float(smoothing)
        self.r: deque[float] = deque(maxlen=self.window)
        self.dr: deque[float] = deque(maxlen=self.window)
        super().__init__()

    def _initial_k(self) -> float:
        return self.k_min

    def _next_k(self, score: float | None) -> float:
        if score is None:
            raise ValueError("the adaptive slope schedule needs a score at every update")
        raw = min(max((score - self.score_low) / (self.score_high - self.score_low), 0.0), 1.0)
        prev = self.r[-1] if self.r else None
        r = raw if prev is None else self.smoothing * prev + (1.0 - self.smoothing) * raw
        self.r.append(r)
        self.dr.append(0.0 if prev is None else r - prev)
        if self.updates % self.every:
            return self.k
        m = sum(self.w_p * a + self.w_d * b for a, b in zip(self.r, self.dr)) / self.window
        return min(max(self.k_min + m * (self.k_max - self.k_min), self.k_min), self.k_max)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "r": list(self.r), "dr": list(self.dr)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.r = deque(state["r"], maxlen=self.window)
        self.dr = deque(state["dr"], maxlen=self.window)


SCHEDULES: dict[str, type[SlopeSchedule]] = {
    cls.kind: cls for cls in (FixedSlope, IntervalSlope, AdaptiveSlope)
}


def make_schedule(kind: str, **params: Any) -> SlopeSchedule:
    """Build a schedule by kind name (``fixed``, ``interval``, ``adaptive``)."""
    try:
        cls = SCHEDULES[kind]
    except KeyError:
        raise ValueError(f"unknown slope schedule {kind!r}; allowed: {', '.join(SCHEDULES)}") from None
    return cls(**params)
