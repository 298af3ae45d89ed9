"""Every setting of a ``droppick train`` run, in one typed place.

A ``TrainConfig`` is what the run directory's ``config.json`` holds, so a resumed run gets
exactly the settings it started with.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..atomic import atomic_write_text
from ..models import check_model_name
from ..data.chunked import is_litdata
from ..data.hf import is_hf
from ..data.webdataset import is_wds
from ..data.noise import NOISE_KINDS
from ..policies import BETA, EPSILON, POLICIES, SETTINGS, SHARE, SKIP
from ..policies.noise import TRUSTED_SUSPECTS
from ..policies.selective_backprop import (INTERRUPT as SB_INTERRUPT, KEEP as SB_KEEP, START as SB_START,
                                           SelectiveBackprop, refuse_other_scores)
from ..policies.seta import DELTA as SETA_DELTA, GROUPS as SETA_GROUPS, RATIO as SETA_RATIO, WINDOW as SETA_WINDOW, SeTa
from ..budget import budget_rule
from ..schedule import DaPSchedule, require_int
from ..scores import BUILT_IN as SCORES
from ..sharded_rules import REFUSED
from .epochs import FOLLOWS_SCHEDULE, scale_epochs

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder")
AMP_MODES = ("none", "bf16", "fp16")
LR_SCHEDULES = ("step", "cosine")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# the policies DropAndPick(..., shard_state=True) runs (sharded_rules.check_shardable; a test keeps the two alike)
SHARD_STATE_POLICIES = tuple(p for p in FOLLOWS_SCHEDULE if p not in REFUSED) + ("full", "scaled", "static",
                                                                                  "selective_backprop")
RHO_EPOCHS = 5  # droppick's default: tune it on a (noisy) validation split
DECODE_MODES = ("workers", "device")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class TrainConfig:
    # data
    dataset: str = "fashion-mnist"
    """or cifar10, cifar100, imagefolder (a train/ + val/ tree), hf:PATH (data/hf.py), litdata:DIR (data/chunked.py),
    wds:DIR (data/webdataset.py)"""
    data_dir: Optional[str] = None
    """None: the standard locations (see data.find_fashion_mnist)"""
    image_column: Optional[str] = None
    """hf:PATH: the image column; None: the one of type datasets.Image"""
    label_column: Optional[str] = None
    """hf:PATH: the label column; None: the one of type datasets.ClassLabel"""
    train_samples: Optional[int] = None
    """seeded class-stratified slice of the train split; None = all"""
    test_samples: Optional[int] = None
    """same for the test split"""
    val_samples: Optional[int] = None
    """hold out this many training samples (seeded, class-stratified) as a validation split, evaluated beside
    the test split (val_top1): for tuning without the test set"""
    cv_folds: Optional[int] = None
    """hold out fold cv_fold of a seeded, class-stratified cv_folds-fold partition of the training split as the
    validation split instead of val_samples (K runs, one per fold, give every sample an out-of-sample prediction:
    what cleanlab's label-error detection asks for)"""
    cv_fold: int = 0
    """the fold cv_folds holds out, 0..cv_folds-1"""
    per_class: Optional[int] = None
    """keep this many train samples per class (CIFAR10-5000: 500)"""
    label_noise: float = 0.0
    """the share of training labels made wrong, seeded (in-memory datasets; the test split stays clean, a
    --val-samples split is as noisy as the rest); the flipped indices go to RUN/label_noise.json"""
    noise_kind: str = "symmetric"
    """label_noise's kind: "symmetric" (another class drawn uniformly) or "pairs" (each class's one fixed
    confusable partner, e.g. shirt and T-shirt)"""
    imbalance: Optional[float] = None
    """a seeded long tail of the training split (after the slices): the largest class keeps the smallest class's
    count m, the others m x imbalance^(-rank/(K-1)) in a seeded class order, so the largest is imbalance times
    the smallest (None = as the data is)"""
    image_size: int = 224
    """imagefolder: random-resized-crop size in pixels"""
    eval_resize: int = 256
    """imagefolder: evaluation resize before the centre crop of image_size"""
    num_workers: int = 0
    """DataLoader worker processes (imagefolder only; in-memory data needs none)"""
    skip_unreadable: bool = False
    """imagefolder: leave unreadable training images out (listed in unreadable.jsonl) instead of stopping at the
    first one"""
    decode: str = "workers"
    """imagefolder: "workers" decode and augment with Pillow in the DataLoader workers; "device": the workers
    read bytes, the training device decodes (nvJPEG on a GPU) and augments"""
    chunk_window: int = 8
    """litdata:DIR and wds:DIR: the chunks (tar shards) whose samples an epoch shuffles together; each chunk is read
    once an epoch, and wds: holds a window's bytes in memory"""
    # model and optimiser (SGD with momentum, as in the paper's CIFAR recipes)
    model: str = "small_cnn"
    """a name of the model registry (`droppick models`), or timm:NAME"""
    batch_size: int = 128
    """samples per step"""
    lr: float = 0.05
    """initial learning rate"""
    momentum: float = 0.9
    """SGD momentum"""
    nesterov: bool = False
    """Nesterov momentum"""
    weight_decay: float = 5e-4
    """L2 coefficient"""
    lr_schedule: str = "step"
    """"step": /10 after each milestone; "cosine": per step, sized by the planner"""
    lr_milestones: Optional[list[int]] = None
    """LR /10 after these epochs; None = reuse_at (Section 3.3)"""
    augment_padding: int = 4
    """pixels of zero padding for the random crop"""
    augment_flip: bool = True
    """random horizontal flip"""
    # Drop-and-Pick (the paper's Table 1)
    policy: str = "dap"
    """which samples the run trains on: dap (the paper), random, full, scaled, static, infobatch, rs2, epsilon,
    ema, window, trusted, rho, seta, selective_backprop (the policies guide)"""
    score: str = "loss"
    """what ranks the samples: "loss" (the paper's), "el2n" (||softmax - one-hot||) or "margin" (a small margin
    of the true class's probability over the largest other one is hard), from the step's own logits"""
    epochs: int = 30
    """E"""
    warmup: int = 4
    """W, epochs"""
    interval: int = 1
    """I, epochs"""
    keep: float = 0.9
    """p, fraction of the current subset"""
    active: Optional[int] = None
    """alpha, epochs; None = no limit"""
    reuse_at: list[int] = field(default_factory=lambda: [15, 25])
    """R, epochs"""
    min_keep: float = 0.0
    """f, beyond the paper: a drop never leaves fewer than f * N samples (0 = no floor)"""
    # matched-compute baselines (Table 2f) and InfoBatch
    target_compute: Optional[float] = None
    """the budget, a fraction of E*N: rs2/scaled/static match it (None = the DaP plan's) and infobatch calibrates its
    ratio to it (None = its fixed infobatch_ratio, as in its paper); for dap/random/epsilon/ema the command line's
    --target-compute writes the budget rule's keep and min_keep for it, and it stays here as the record"""
    infobatch_ratio: float = 0.5
    """r: share of below-mean-loss samples pruned each epoch"""
    infobatch_delta: float = 0.875
    """prune during the first delta*E epochs, all data after"""
    # beyond the paper (policies/epsilon.py and policies/ema.py)
    epsilon: float = EPSILON
    """policy "epsilon": the share of a drop's kept samples drawn at random from the rest of the subset"""
    ema_beta: float = BETA
    """policy "ema": the weight of a sample's past average in the moving average of its losses (what it is
    ranked by)"""
    window_skip: float = SKIP
    """policy "window": the share of a drop's subset, its highest losses, skipped before the kept ones (noisy labels
    sit in that tail)"""
    trusted_share: float = SHARE
    """policy "trusted": the share of all samples, the highest mean losses so far (the suspected wrong labels),
    ranked last at every drop"""
    trusted_suspects: str = "share"
    """policy "trusted": which samples are suspects: "share" (the top trusted_share), or "uniform" (every sample
    whose mean score is worse than a uniform guess's, droppick.suspects.uniform_guess: no share to tune)"""
    rho_epochs: int = RHO_EPOCHS
    """policy "rho": the epochs its irreducible-loss model trains on the validation split (val_samples, which rho
    needs) before epoch 1, with the run's model, optimiser settings and a cosine learning rate; that holdout
    training and a forward pass over the training split are reported as extra compute (train.irreducible)"""
    seta_ratio: float = SETA_RATIO
    """policy "seta": the share of all samples its random step leaves out each epoch (with target_compute:
    recalibrated every epoch to spend it)"""
    seta_groups: int = SETA_GROUPS
    """policy "seta": the loss clusters of its sliding window"""
    seta_window: float = SETA_WINDOW
    """policy "seta": the share of the clusters its window holds"""
    seta_delta: float = SETA_DELTA
    """policy "seta": past seta_delta * epochs only the random step selects (annealing)"""
    sb_keep: float = SB_KEEP
    """policy "selective_backprop": the share of a batch back-propagated, drawn by loss after a forward pass over all
    of it without gradients"""
    sb_start: int = SB_START
    """policy "selective_backprop": the first epoch that selects inside batches"""
    sb_end: Optional[int] = None
    """policy "selective_backprop": the last epoch that selects (None: the last of the run)"""
    sb_interrupt: int = SB_INTERRUPT
    """policy "selective_backprop": every sb_interrupt-th batch trains whole (0: none), as Composer interleaves"""
    exclude_nonfinite: bool = False
    """a NaN/inf loss stops the run, unless this: such samples leave the subset for good (listed in
    nonfinite.jsonl) and an optimiser step whose gradients are not finite is skipped"""
    shard_state: bool = False
    """each rank holds the DaP state (losses, subset, the rule's per-sample state) of its own slice of the samples
    only, and checkpoints it as a file of its own: memory per rank that shrinks as ranks are added (the
    distributed guide); the subsets equal an unsharded run's. Not with rs2, infobatch, seta or rho"""
    # run
    seed: int = 0
    """seeds the model's initialisation, the data order, the slices and every policy's draws"""
    device: str = "auto"
    """"auto" = cuda when available, else cpu"""
    amp: str = "none"
    """mixed precision: "bf16", or "fp16" with a GradScaler; losses are recorded in fp32"""
    channels_last: bool = False
    """NHWC memory format: faster convolutions on tensor-core GPUs"""
    compile: bool = False
    """torch.compile the training forward (static shapes; a last partial batch runs eagerly)"""
    compile_mode: str = "default"
    """torch.compile's mode; "reduce-overhead" replays CUDA graphs, for small models whose kernel launches cost
    more than their arithmetic"""
    profile: bool = False
    """print where each epoch's time goes (data, forward, backward, optimizer, DaP)"""
    tensorboard: bool = False
    """also write the per-epoch metrics as a TensorBoard event file (RUN/tensorboard)"""
    eval_batch_size: int = 1000
    """samples per evaluation step"""
    eval_every: int = 1
    """evaluate after every K-th epoch (and always after the last): evaluation is not free"""
    recipe: Optional[str] = None
    """the recipe this config came from, for the record"""

    def __post_init__(self):
        """Refuse a setting that cannot train, naming the setting and what it accepts; the checks
        run in the order a cause comes before its symptoms (the schedule before the LR milestones
        that follow its picks, so ``epochs=0`` is refused as such)."""
        _check_types(self)
        if self.dataset not in DATASETS and not self.streamed:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, hf:PATH (a Hugging Face dataset on disk), "
                             f"litdata:DIR or wds:DIR (chunked formats on disk); got {self.dataset!r}")
        for name, allowed in (("policy", POLICIES), ("score", SCORES), ("amp", AMP_MODES), ("noise_kind", NOISE_KINDS),
                              ("lr_schedule", LR_SCHEDULES), ("compile_mode", COMPILE_MODES), ("decode", DECODE_MODES),
                              ("trusted_suspects", TRUSTED_SUSPECTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        check_model_name(self.model)
        refuse_other_scores(self.policy, self.score)
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (N a GPU index); got {self.device!r}")
        if self.data_dir is not None and not self.data_dir.strip():
            raise ValueError("data_dir must name a folder; leave it unset (null) to search the standard locations")
        _ = self.schedule  # building it validates the DaP hyper-parameters (epochs first) with their own messages
        for name in ("batch_size", "eval_batch_size", "eval_every", "image_size", "eval_resize", "chunk_window"):
            require_int(name, getattr(self, name), 1)
        require_int("num_workers", self.num_workers, 0)
        require_int("rho_epochs", self.rho_epochs, 1)
        require_int("augment_padding", self.augment_padding, 0)
        for name in ("train_samples", "test_samples", "per_class", "val_samples"):
            if getattr(self, name) is not None:
                require_int(name, getattr(self, name), 1)
        if self.cv_folds is not None and (self.val_samples is not None or not 0 <= self.cv_fold < self.cv_folds
                                          or self.cv_folds < 2):
            raise ValueError(f"cv_folds (>= 2) holds out fold cv_fold (0..cv_folds-1) instead of val_samples: got "
                             f"cv_folds={self.cv_folds}, cv_fold={self.cv_fold}, val_samples={self.val_samples}")
        if self.policy == "rho" and self.val_samples is None and self.cv_folds is None:
            raise ValueError("policy rho ranks by each sample's loss less the loss of a model trained on a validation "
                             "split: hold one out with --val-samples V (val_samples; or cv_folds)")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"label_noise must lie in [0, 1) (the share of training labels made wrong), "
                             f"got {self.label_noise!r}")
        if self.label_noise and self.streamed:
            raise ValueError(f"label_noise changes labels held in memory; {self.dataset} reads its labels from files "
                             "during training: write the noisy labels into the data instead")
        if self.imbalance is not None and not 1 <= self.imbalance < math.inf:
            raise ValueError(f"imbalance must be a number >= 1 (the largest class's size over the smallest's), "
                             f"got {self.imbalance!r}")
        for name, ok, interval in (("lr", 0 < self.lr < math.inf, "(0, inf)"),  # NaN fails every comparison
                                   ("momentum", 0 <= self.momentum < 1, "[0, 1)"),
                                   ("weight_decay", 0 <= self.weight_decay < math.inf, "[0, inf)")):
            if not ok:
                raise ValueError(f"{name} must be a finite number in {interval}, got {getattr(self, name)!r}")
        for name in ("infobatch_ratio", "infobatch_delta", "target_compute"):
            value = getattr(self, name)
            low_ok = value is None or (0 <= value if name == "infobatch_ratio" else 0 < value)
            if not low_ok or (value is not None and value > (0.95 if name == "infobatch_ratio" else 1)):
                raise ValueError(f"{name} must lie in {'[0, 0.95]' if name == 'infobatch_ratio' else '(0, 1]'}, got {value}")
        if (self.image_column or self.label_column) and not is_hf(self.dataset):
            raise ValueError(f"image_column and label_column name the columns of --dataset hf:PATH; {self.dataset} "
                             "has none: remove them")
        if self.skip_unreadable and not self.streamed:
            raise ValueError(f"skip_unreadable applies to --dataset imagefolder, hf:PATH, litdata:DIR or wds:DIR (images "
                             "read during training); "
                             f"{self.dataset} is loaded whole before training, where a bad file stops the run")
        if self.decode != "workers" and not self.streamed:
            raise ValueError(f"decode applies to --dataset imagefolder, hf:PATH, litdata:DIR or wds:DIR (images decoded "
                             "during training); "
                             f"{self.dataset} is decoded once before training and already kept on the training device")
        if self.image_size > self.eval_resize:
            raise ValueError(f"image_size ({self.image_size}) must not exceed eval_resize ({self.eval_resize}): "
                             "evaluation centre-crops image_size out of the resized image")
        milestones = self.milestones  # reuse_at, already checked by the schedule, unless lr_milestones is set
        if list(milestones) != sorted(set(milestones)) or any(not 1 <= m <= self.epochs for m in milestones):
            raise ValueError(f"lr_milestones must be increasing epochs in 1..{self.epochs}, got {milestones}: "
                             "when changing epochs, set --lr-milestones to match (or leave it unset to follow --reuse-at)")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1] (the share of a drop's kept samples drawn at random), "
                             f"got {self.epsilon}")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ValueError(f"ema_beta must lie in [0, 1) (the weight of a sample's past average), got {self.ema_beta}")
        if self.shard_state and self.policy not in SHARD_STATE_POLICIES:
            why = REFUSED.get(self.policy, "its decision reads the losses of all N samples, which no rank holds")
            raise ValueError(f"shard_state (--shard-state) cannot run policy {self.policy!r}: {why}. With shard_state "
                             f"use one of {', '.join(SHARD_STATE_POLICIES)}; or train {self.policy} without it")
        self._refuse_ignored_settings()
        if self.policy == "seta":  # each refuses its own settings by name, before any data is loaded
            SeTa(**self.seta_settings)
        if self.policy == "selective_backprop":
            SelectiveBackprop(**self.selective_backprop_settings)

    def _refuse_ignored_settings(self) -> None:
        """A setting given (other than its default) that this run would ignore (``ignored_settings``)."""
        defaults = _defaults()
        ignored = ignored_settings(self.to_dict())
        for policy, names in SETTINGS.items():
            given = [name for name in names if name in ignored and getattr(self, name) != defaults[name]]
            if given and policy != self.policy:
                raise ValueError(f"{', '.join(f'{n}={getattr(self, n)!r}' for n in given)}: a setting of policy {policy}, "
                                 f"which this run (policy {self.policy}) would ignore: set policy to {policy}, or leave "
                                 f"{' and '.join(given)} at the default ({', '.join(repr(defaults[n]) for n in given)})")
        if "trusted_share" in ignored and self.trusted_share != defaults["trusted_share"]:  # its own policy's, unread
            raise ValueError(f"trusted_share={self.trusted_share!r} with trusted_suspects 'uniform': the uniform reading "
                             "counts its suspects itself (every sample scoring worse than a uniform guess) and ignores "
                             "the share: leave trusted_share at its default, or set trusted_suspects to 'share'")

    def for_policy(self, policy: str) -> "TrainConfig":
        """This config as a run of ``policy``: the other policies' settings back at their defaults (what
        ``droppick compare`` trains per policy: one base's epsilon is the epsilon run's only)."""
        values = self.to_dict() | {"policy": policy}
        defaults = _defaults()
        return TrainConfig.from_dict(values | {name: defaults[name] for name in ignored_settings(values)})

    @property
    def selective_backprop_settings(self) -> dict:
        return {"keep": self.sb_keep, "start": self.sb_start, "end": self.sb_end, "interrupt": self.sb_interrupt}

    @property
    def seta_settings(self) -> dict:
        return {"ratio": self.seta_ratio, "groups": self.seta_groups, "window": self.seta_window, "delta": self.seta_delta}

    @property
    def streamed(self) -> bool:
        """Whether the data is read image by image during training (imagefolder, hf:PATH, litdata:DIR, wds:DIR),
        not held in memory."""
        return self.dataset == "imagefolder" or any(is_(self.dataset) for is_ in (is_hf, is_litdata, is_wds))

    @property
    def schedule(self) -> DaPSchedule:
        return DaPSchedule(self.epochs, self.warmup, self.interval, self.keep, self.active, self.reuse_at,
                           self.min_keep)

    def with_budget(self, compute: float, num_samples: int, fixed_warmup: bool = False,
                    fixed_policy: bool = False) -> "TrainConfig":
        """This run on the budget rule for ``compute`` (``budget_rule``: its schedule's warm-up, at most
        this one unless ``fixed_warmup``, floor and keep; its drops, this run's policy if ``fixed_policy``),
        recording the budget."""
        rule = budget_rule(compute, num_samples, self.epochs, self.warmup, self.interval, self.reuse_at, self.active,
                           fixed_warmup)
        s = rule.schedule
        return dataclasses.replace(self, warmup=s.warmup, keep=s.keep, min_keep=s.min_keep, target_compute=compute,
                                   **({} if fixed_policy else rule.policy_args))

    @property
    def milestones(self) -> list[int]:
        return list(self.reuse_at if self.lr_milestones is None else self.lr_milestones)

    def lr_at(self, epoch: int, progress: float = 0.0) -> float:
        """Learning rate in ``epoch`` (1-based); ``progress`` in [0, 1) is the fraction of the run's
        planned optimiser steps done, which only the cosine schedule uses.

        "step": divided by 10 after each milestone, so epoch m + 1 is the first decayed one.
        "cosine": half a cosine from lr to 0 over the planned steps (not epochs), so an epoch
        shrunk by a drop takes a proportionally smaller share of the schedule.
        """
        if self.lr_schedule == "cosine":
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))
        return self.lr * 0.1 ** sum(m < epoch for m in self.milestones)

    def scaled(self, epochs: int) -> "TrainConfig":
        """This run shortened to ``epochs`` with LR milestones, warm-up and picks scaled alike: the
        learning rate of the paper's "All data 63% epochs" baseline (Table 2f, ``policies.Scaled``)."""
        factor = epochs / self.epochs
        return dataclasses.replace(self, epochs=epochs, warmup=min(round(self.warmup * factor), epochs - 1),
                                   reuse_at=scale_epochs(self.reuse_at, factor, epochs),
                                   lr_milestones=scale_epochs(self.milestones, factor, epochs))

    def describe_plan(self, plan) -> str:
        """The schedule a run trains with and its planned compute, printed before the first epoch."""
        s = self.schedule
        return (f"{self.policy}: {plan.epochs} epochs on {plan.num_samples} samples; warm-up {s.warmup}, interval "
                f"{s.interval}, keep {s.keep}, {f'floor {s.min_keep}, ' if s.min_keep else ''}active {s.active}, "
                f"picks after {list(s.reuse_at)}, LR /10 after "
                f"{self.milestones}: planned compute {100 * plan.compute_fraction:.1f}%")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = sorted(set(d) - set(cls.keys()))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {', '.join(cls.keys())}")
        return cls(**d)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """The config in ``path``; a file that is not a JSON object of valid settings is a ValueError
        naming it (droppick writes it whole and atomically, so such a file was edited or damaged)."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise ValueError(f"{path} is not valid JSON ({e}): it was edited or damaged since droppick wrote it; "
                             "repair it (every checkpoint of the run holds a copy under 'config'), "
                             "or start a new run") from e
        if not isinstance(values, dict):
            raise ValueError(f"{path} holds a JSON {type(values).__name__}, not the object of settings droppick "
                             "wrote: it was edited or damaged; repair it, or start a new run")
        try:
            return cls.from_dict(values)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e


# Keys a resumed run may change: where the data lives and how it is read or reported, not what is trained.
RESUME_MAY_CHANGE = ("data_dir", "num_workers", "eval_batch_size", "eval_every", "profile", "tensorboard")


def training_differences(saved: dict, now: dict) -> list[str]:
    """The keys of ``now`` whose values in ``saved`` differ, but for those a resume may change and the
    settings ``now`` ignores (``ignored_settings``): the settings under which ``saved``'s run would not
    train as ``now`` says."""
    ignored = ignored_settings(now)
    return [key for key in now if key not in RESUME_MAY_CHANGE and key not in ignored and saved.get(key) != now[key]]


def ignored_settings(values: dict) -> set[str]:
    """The settings a run of ``values`` (TrainConfig's fields) never reads: the other policies'
    (``policies.SETTINGS``), and trusted_share beside trusted_suspects "uniform", which counts its
    suspects itself."""
    ignored = {name for policy, names in SETTINGS.items() if policy != values.get("policy") for name in names}
    if values.get("trusted_suspects") == "uniform":
        ignored.add("trusted_share")
    return ignored


def _defaults() -> dict:
    """Each field's default (those with a factory: ``dataclasses.MISSING``; no policy setting has one)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}

def _check_types(cfg: TrainConfig) -> None:
    """Every field has the type its annotation says (ints are accepted where floats belong), so a
    mistyped --set value is refused here, before any data is loaded."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if value is None:
            if optional:
                continue
            raise ValueError(f"{f.name} must not be null")
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        if typing.get_origin(base) is list:
            ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            expected = "a list of integers, e.g. [150, 225]"
        elif base is float:
            ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif base is int:
            ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif base is bool:
            ok, expected = isinstance(value, bool), "true or false"
        else:
            ok, expected = isinstance(value, base), "a string" if base is str else base.__name__
        if not ok:
            raise ValueError(f"{f.name} must be {expected}, got {value!r} ({type(value).__name__})")
