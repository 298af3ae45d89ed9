"""Epoch-valued settings: how they follow a changed ``--epochs`` (``follow_epochs``), the line that
says so, and the warning for a schedule that leaves no epoch to drop after."""

from __future__ import annotations

from typing import Optional

from ..schedule import DaPSchedule

# the policies whose subset sizes are the DaP schedule's
FOLLOWS_SCHEDULE = ("dap", "random", "epsilon", "ema", "window", "trusted", "rho")

# The schedule's keys counted in epochs: they follow --epochs when not given themselves.
EPOCH_KEYS = ("warmup", "interval", "active", "reuse_at", "lr_milestones")


def scale_epochs(epochs_list, factor: float, epochs: int) -> list[int]:
    """Epoch numbers scaled by ``factor``, kept in 1..``epochs``, sorted and without repeats."""
    return sorted({min(epochs, max(1, round(e * factor))) for e in epochs_list})


def follow_epochs(base: dict, given: dict) -> tuple[dict, list[str]]:
    """``base`` (the defaults, or a recipe) updated with the user's ``given`` values; when ``given``
    changes ``epochs`` but leaves some of ``EPOCH_KEYS`` unset, those are scaled from ``base`` by
    the ratio of the epochs, as Section 4.3.1 scales the CIFAR schedule for ImageNet.

    Returns the values and the names of the keys that were derived (empty when nothing was). A
    warm-up stays at least one epoch when the base had one (and below ``epochs``), an interval
    and an alpha at least one epoch, and picks and LR decays move to the nearest epoch in 1..E
    (Python's round: halves go to the even epoch); ``active=None`` and ``lr_milestones=None``
    (follow ``reuse_at``) stay None.
    """
    values = {**base, **given}
    epochs, base_epochs = values.get("epochs"), base.get("epochs")
    if "epochs" not in given or epochs == base_epochs or not isinstance(epochs, int) or epochs < 1:
        return values, []  # an invalid epochs value is left for the config's own message
    factor = epochs / base_epochs
    derived = [k for k in EPOCH_KEYS if k in base and k not in given and base[k] is not None]
    for key in derived:
        value = base[key]
        if key in ("reuse_at", "lr_milestones"):
            values[key] = scale_epochs(value, factor, epochs)
        elif key == "warmup":
            values[key] = min(max(round(value * factor), 1 if value else 0), epochs - 1)
        else:  # interval, active
            values[key] = max(1, round(value * factor))
    return values, derived


def no_drop_warning(schedule: DaPSchedule, num_samples: int, policy: str = "dap",
                    target_compute: Optional[float] = None) -> Optional[str]:
    """A warning when ``policy`` would train on all data every epoch because ``schedule`` drops
    nothing (e.g. ``--epochs 3`` alone: warm-up 1 and a pick after epoch 2 leave no epoch to drop
    after), else None.

    A warning, not an error: a dap run on all data is a legitimate control. It concerns the
    policies that drop on the schedule (``FOLLOWS_SCHEDULE``) and those matched to its compute when
    no ``target_compute`` is given (scaled, static); full, infobatch, rs2, seta and selective
    backprop do not follow the drops.
    """
    follows = policy in FOLLOWS_SCHEDULE or (policy in ("scaled", "static") and target_compute is None)
    if not follows or schedule.plan(num_samples).drop_epochs:
        return None
    s = schedule
    return (f"warning: this schedule drops nothing (epochs {s.epochs}, warm-up {s.warmup}, interval {s.interval}, "
            f"keep {s.keep}, active {s.active}, picks after {list(s.reuse_at)}): policy {policy} will train on all data "
            "every epoch, like policy full (100% compute). For drops, set --warmup, --interval or --keep (below 1) so "
            "that a drop falls before the next --reuse-at pick, or train more --epochs.")


def describe_schedule(values: dict, derived: list[str], base_epochs: int) -> str:
    """One line saying which epoch-valued settings followed ``epochs`` and what they became."""
    parts = ", ".join(f"{k} {values[k]}" for k in derived)
    return f"epochs {values['epochs']} (base {base_epochs}): {parts} scaled to match; set them to override"
