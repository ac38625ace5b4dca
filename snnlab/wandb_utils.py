"""W&B modes: offline by default (real run files, `wandb sync` later), online when logged in."""

from __future__ import annotations

import os

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
