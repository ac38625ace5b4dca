import math

import pytest

from snnlab.schedules import AdaptiveSlope, FixedSlope, IntervalSlope, make_schedule


def run(s, scores):
    return [s.update(x) for x in scores]


def test_fixed():
    s = FixedSlope(10)
    assert s.k == 10
    assert run(s, [0.1, None, 0.9]) == [10, 10, 10]


def test_interval_geometric_by_hand():
    s = IntervalSlope(k_start=1, k_end=100, every=2, stages=3, spacing="geometric")
    assert s.k == 1
    assert run(s, [None] * 6) == pytest.approx([1, 10, 10, 100, 100, 100])


def test_interval_linear_by_hand_and_clamped_at_end():
    s = IntervalSlope(k_start=1, k_end=100, every=1, stages=4, spacing="linear")
    assert run(s, [None] * 6) == pytest.approx([34, 67, 100, 100, 100, 100])


def test_interval_can_go_steep_to_shallow():
    s = IntervalSlope(k_start=100, k_end=1, every=1, stages=3)
    assert run(s, [None] * 2) == pytest.approx([10, 1])


def test_adaptive_by_hand():
    s = AdaptiveSlope(score_low=0, score_high=100, k_min=1, k_max=100, window=3, w_p=0.5, w_d=0.5)
    assert s.k == 1  # no score yet: shallow
    # r = 0.5, 0.8, 0.8, 1.0 (120 clipped), 0.2; r' = 0, .3, 0, .2, -.8; missing terms count as 0
    got = run(s, [50, 80, 80, 120, 20])
    assert got == pytest.approx([9.25, 27.4, 40.6, 52.15, 24.1])


def test_adaptive_clamps_to_k_range():
    s = AdaptiveSlope(score_low=0, score_high=100, k_min=2, k_max=50, window=1, w_p=0, w_d=1)
    assert run(s, [0, 100, 0]) == pytest.approx([2, 50, 2])
    s = AdaptiveSlope(score_low=0, score_high=1, k_min=1, k_max=100, window=2, w_p=5, w_d=0)
    assert run(s, [1, 1]) == pytest.approx([100, 100])


def test_adaptive_smoothing_and_update_period():
    s = AdaptiveSlope(score_low=0, score_high=1, k_min=1, k_max=101, window=1, w_p=1, w_d=0,
                      smoothing=0.5, every=2)
    # r: 1.0, then 0.5*1 + 0.5*0 = 0.5; k recomputed only at updates 2, 4
    assert run(s, [1.0, 0.0]) == pytest.approx([1, 51])
    assert run(s, [0.0, 0.0]) == pytest.approx([51, 1 + 100 * 0.125])


def test_adaptive_first_steps_before_window_is_full():
    s = AdaptiveSlope(score_low=0, score_high=1, k_min=0.5, k_max=10.5, window=10, w_p=1, w_d=0)
    # constant r = 1: m grows 0.1 per update until the window is full
    assert run(s, [1.0] * 12) == pytest.approx([0.5 + i for i in range(1, 11)] + [10.5, 10.5])


@pytest.mark.parametrize("sched", [
    lambda: FixedSlope(3),
    lambda: IntervalSlope(1, 100, every=2, stages=5),
    lambda: AdaptiveSlope(0, 200, window=4, smoothing=0.3),
])
def test_resume_mid_schedule_gives_the_same_sequence(sched):
    scores = [10, 50, 30, 90, 120, 180, 60, 200, 190, 150]
    full = run(sched(), scores)
    first = sched()
    head = run(first, scores[:4])
    state = first.state_dict()
    resumed = sched()
    resumed.load_state_dict(state)
    assert resumed.k == head[-1]
    assert head + run(resumed, scores[4:]) == full


@pytest.mark.parametrize("make,match", [
    (lambda: FixedSlope(0), "k must be"),
    (lambda: FixedSlope(-2), "k must be"),
    (lambda: IntervalSlope(k_start=0), "k_start"),
    (lambda: IntervalSlope(every=0), "every"),
    (lambda: IntervalSlope(stages=1), "stages"),
    (lambda: IntervalSlope(spacing="cubic"), "spacing"),
    (lambda: AdaptiveSlope(k_min=50, k_max=10), "k_min"),
    (lambda: AdaptiveSlope(window=0), "window"),
    (lambda: AdaptiveSlope(score_low=1, score_high=1), "score_high"),
    (lambda: AdaptiveSlope(smoothing=1.0), "smoothing"),
    (lambda: make_schedule("cosine"), "allowed: fixed, interval, adaptive"),
])
def test_invalid_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_nan_score_rejected_and_state_untouched():
    s = AdaptiveSlope(0, 1)
    s.update(0.5)
    before = s.state_dict()
    with pytest.raises(ValueError, match="NaN"):
        s.update(math.nan)
    assert s.state_dict() == before
    with pytest.raises(ValueError, match="needs a score"):
        s.update(None)
    assert s.state_dict() == before


def test_loading_a_different_kind_fails():
    with pytest.raises(ValueError, match="cannot load"):
        FixedSlope(2).load_state_dict(IntervalSlope().state_dict())
