"""Ray Tune sweeps of slope settings x seeds: spec, trainables, runner, summary."""

from .spec import Sweep, SweepSpec, load_sweep, trial_name

__all__ = ["Sweep", "SweepSpec", "load_sweep", "trial_name"]
