"""``droppick train``: a Drop-and-Pick training run with a run directory, resumable per epoch.

The main loop reads top to bottom: set the learning rate, train on the current subset while
recording per-sample losses, let DaP drop or pick, evaluate, write metrics, save a checkpoint.

A resumed run restarts the epoch it was interrupted in from its beginning: every random
choice of an epoch (order, augmentation, random drops) comes from generators seeded by
(seed, epoch), so the redone epoch is the same as it would have been.

Under torchrun every rank trains on its shard of the subset; ``DropAndPick.end_epoch`` merges
the ranks' losses so all select the same subset; only rank 0 writes the run directory. With
``shard_state`` each rank holds the DaP state of its own slice of the samples and writes it beside
rank 0's checkpoint (``dap_state``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import distributed
from .checkpoint import CHECKPOINT_FORMAT, check_resumable, restore_rng_states, rng_states
from .config import TrainConfig
from .epochs import no_drop_warning
from ..engine import DropAndPick
from ..policies import build_policy
from ..models import build_model
from .splits import build_run_splits, checked_num_classes
from .process import cudnn_tuning, sigterm_exits
from .profiling import Profiler
from .lock import RunLock
from .retention import Retention
from .dap_state import end_epoch, save_dap_shards, subset_metrics, with_dap_state
from .irreducible import fit_irreducible, needs_irreducible
from .scoring import evaluate_split
from .selective import batch_losses
from .rundir import RunDir
from .steps import grads_finite, optimizer_and_scaler, planned_steps, schedule_progress
from .summary import run_summary
from .testhook import kill_point as _test_kill_point
from ..seeding import seeded_global_rng
from ..suspects import uniform_guess

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def build_seeded_model(cfg: TrainConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    # Initialisation draws from the global RNG; fork it so the caller's RNG state is untouched.
    with seeded_global_rng(cfg.seed, "model-init"):
        return build_model(cfg.model, num_classes=num_classes, in_channels=in_channels)


def trusted_threshold(cfg: TrainConfig, split) -> Optional[float]:
    """The trusted rule's threshold under ``trusted_suspects="uniform"``: a uniform guess's score over the
    split's classes; None (its share instead) otherwise."""
    return uniform_guess(cfg.score, split.num_classes) if cfg.trusted_suspects == "uniform" else None


class Trainer:
    """The model, optimiser and DaP state of one run, and the steps that move them."""

    def __init__(self, cfg: TrainConfig, device: torch.device, pin_memory: bool = False):
        self.device = device
        self.rank, self.world = distributed.rank_and_world()
        self.train_split, self.val_split, self.test_split = build_run_splits(cfg, pin_memory=pin_memory, device=device)
        n = len(self.train_split)
        policy = build_policy(cfg.policy, labels=self.train_split.labels, target_compute=cfg.target_compute,
                              infobatch_ratio=cfg.infobatch_ratio, infobatch_delta=cfg.infobatch_delta,
                              epsilon=cfg.epsilon, ema_beta=cfg.ema_beta, window_skip=cfg.window_skip,
                              trusted_share=cfg.trusted_share, trusted_threshold=trusted_threshold(cfg, self.train_split),
                              seta=cfg.seta_settings,
                              selective_backprop=cfg.selective_backprop_settings)
        self.dap = DropAndPick(n, cfg.schedule, policy=policy, seed=cfg.seed, exclude_nonfinite=cfg.exclude_nonfinite,
                               score=cfg.score, shard_state=cfg.shard_state,
                               chunks=getattr(self.train_split, "chunks", None))  # litdata:, wds: a chunk-aware order
        self.given_cfg = cfg
        if cfg.policy == "scaled":  # its plan is shorter: the learning rate's milestones follow
            cfg = cfg.scaled(self.dap.plan().epochs)
        self.cfg = cfg
        num_classes = checked_num_classes(cfg, self.train_split, self.test_split)
        self.model = build_seeded_model(cfg, self.train_split.in_channels, num_classes).to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = DistributedDataParallel(self.model) if self.world > 1 else self.model
        # --compile: static shapes. Only full batches use the compiled module; an epoch's last
        # partial batch runs eagerly, so a shrinking subset never triggers a recompilation.
        self.compiled = torch.compile(self.net, dynamic=False, mode=cfg.compile_mode) if cfg.compile else None
        self.profiler = Profiler(cfg.profile, device)  # --profile; a no-op otherwise
        self.optimizer, self.scaler = optimizer_and_scaler(cfg, self.model, device)
        self.steps = planned_steps(cfg, self.dap, self.world)
        self.lr_origin = (1, 0.0)  # see schedule_progress; moved by a resume in another world size
        self.world_size_changes: list[dict] = []  # {"epoch", "from", "to"}: resumes in another world size
        # for `droppick inspect`: which samples stayed longest (not with shard_state: see dap_state)
        self.retention = None if cfg.shard_state else Retention(n)

    def lr_at(self, epoch: int, step_in_epoch: int) -> float:
        return self.cfg.lr_at(epoch, schedule_progress(self.steps, self.lr_origin, epoch, step_in_epoch))

    def _to_device(self, images: torch.Tensor, targets: torch.Tensor):
        fmt = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        return (images.to(self.device, non_blocking=True, memory_format=fmt),
                targets.to(self.device, non_blocking=True))

    def _forward(self, module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        amp = self.cfg.amp != "none"
        with torch.autocast(self.device.type, dtype=_AMP_DTYPES.get(self.cfg.amp), enabled=amp):
            return module(images)

    def train_epoch(self, progress: bool) -> float:
        """One pass over this rank's shard of the subset; returns the mean training loss."""
        cfg, dap, prof = self.cfg, self.dap, self.profiler
        self.net.train()
        step = first_step = sum(self.steps[: dap.epoch - 1])
        prof.start()
        order = dap.sampler(self.rank, self.world).indices()
        prof.lap("dap sampler")
        total = torch.zeros((), device=self.device)  # summed on the device: no sync per step
        counted = torch.zeros((), device=self.device)  # samples in batches with a finite loss
        batches = self.train_split.batches(order, cfg.batch_size, cfg.seed, dap.epoch)
        # disable=None shows the bar only on a terminal, so logs stay one line per epoch.
        bar = tqdm(batches, total=self.steps[dap.epoch - 1], desc=f"epoch {dap.epoch}", leave=False,
                   disable=None if progress and self.rank == 0 else True)
        with distributed.uneven_batches(self.net, cfg.skip_unreadable):  # a rank may skip a whole batch
            for indices, images, targets in bar:
                loss = self._train_step(indices, images, targets, self.lr_at(dap.epoch, step - first_step), step - first_step)
                finite = torch.isfinite(loss)  # the mean below leaves out non-finite batches
                total += torch.where(finite, loss, 0.0) * len(indices)
                counted += finite * len(indices)
                step += 1
                _test_kill_point(f"epoch:{dap.epoch}:batch:{step - first_step}")
                prof.lap("optimizer")
        loss_sum, count = distributed.all_reduce_sum([float(total), float(counted)])
        prof.lap("loss sync")
        return loss_sum / max(count, 1)

    def _train_step(self, indices: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, lr: float,
                    batch: int) -> torch.Tensor:
        """One optimiser step on a batch, recording its per-sample losses; returns the (detached) batch loss."""
        cfg, dap, prof = self.cfg, self.dap, self.profiler
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images, targets = self._to_device(images, targets)
        prof.lap("data")
        full_batch = len(indices) == cfg.batch_size
        with cudnn_tuning(full_batch):
            net = self.compiled if self.compiled is not None and full_batch else self.net
            losses = batch_losses(self, net, indices, images, targets, batch)  # all recorded; these back-propagate
            prof.lap("forward")
            weights = dap.batch_weights(indices)
            loss = losses.mean() if weights is None else (losses * weights.to(self.device)).mean()
            prof.lap("dap record")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            prof.lap("backward")
        # --exclude-nonfinite: skip a step whose gradients a NaN/inf loss reached. DDP's averaging
        # spreads it to every rank, so all ranks skip alike (an fp16 GradScaler skips such steps itself).
        skip = cfg.exclude_nonfinite and not self.scaler.is_enabled() and not grads_finite(self.model)
        if not skip:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def train_and_decide(self, progress: bool) -> dict:
        """Train one epoch, let DaP decide the next subset, and return the epoch's metrics row
        (what evaluation adds comes after: ``test_top1``, ``test_top5``, ``eval_seconds``)."""
        dap, split = self.dap, self.train_split
        epoch = dap.epoch
        lr = self.lr_at(epoch, 0)
        tick = time.perf_counter()
        train_loss = self.train_epoch(progress)
        # all ranks': samples_decoded, samples_skipped (+ a chunked format's reads); Selective Backprop's
        # back-propagated samples and step-equivalents
        counts = {k: int(v) for k, v in distributed.all_reduce_named(self.train_split.take_counts()).items()}
        spent = distributed.all_reduce_named(getattr(dap.policy, "take_counts", dict)())
        unreadable = self.train_split.take_unreadable()  # --skip-unreadable: not trained, never again
        if unreadable:
            dap.skip(torch.tensor(unreadable))
        # the class mix shows what a rule keeps of each class (a rare one, a noisy one)
        clean = getattr(split, "clean_labels", None)  # --label-noise: how many wrong labels the subset trained
        trained = subset_metrics(dap, split.labels, split.num_classes, None if clean is None else split.labels != clean)
        event = end_epoch(dap, self.retention, self.profiler)
        if not dap.done:  # ImageFolder: the workers start on the next epoch while we evaluate
            self.train_split.prefetch(dap.sampler(self.rank, self.world).indices(), self.cfg.batch_size,
                                      self.cfg.seed, dap.epoch)
        self.profiler.lap("retention")
        return {"epoch": epoch, "lr": lr, "subset_size": trained["subset_size"],
                "subset_class_counts": trained["subset_class_counts"],
                "samples_seen": dap.samples_per_epoch[-1], "event": event, "train_loss": train_loss,
                "epoch_seconds": time.perf_counter() - tick, "compute_fraction": dap.compute_fraction,
                "subset_sha256": trained["subset_sha256"], **counts, **spent,
                **{k: v for k, v in trained.items() if k == "subset_wrong_labels"}}

    def checkpoint(self, epoch: int, wall_seconds: float, dap: Optional[dict] = None) -> dict:
        """What ``RunDir.save_checkpoint`` writes after ``epoch``: the run's config (as given, before
        ``scaled`` shortened it) and every state the next epoch depends on (``dap``: what stands in
        for the DaP state, with shard_state the names of the ranks' shard files)."""
        return {"format": CHECKPOINT_FORMAT, "config": self.given_cfg.to_dict(), "epoch": epoch,
                "wall_seconds": wall_seconds, **self.state_dict(dap)}

    def evaluate(self, split=None) -> tuple[float, float, float]:
        """Top-1, top-5 and balanced top-1 accuracy (%) on the whole test split (or ``split``: the
        validation split); see ``scoring.evaluate_split``."""
        return evaluate_split(self, self.test_split if split is None else split)

    def state_dict(self, dap: Optional[dict] = None) -> dict:
        """Everything the next epoch depends on (``dap``: what stands in for the DaP state). The
        learning rate has no state of its own: it is a pure function of the epoch and the planned
        steps (``cfg.lr_at``), saved to check that a resumed run plans the same steps. The global RNG
        states are saved although droppick never draws from them (see ``checkpoint.rng_states``)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "dap": self.dap.state_dict() if dap is None else dap,
                "retention": None if self.retention is None else self.retention.state_dict(), "world_size": self.world,
                "world_size_changes": list(self.world_size_changes),
                "lr_schedule": {"kind": self.cfg.lr_schedule, "planned_steps": list(self.steps),
                                "origin": list(self.lr_origin)},
                "rng": rng_states()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint, also one written by another number of processes.

        The DaP state is global (every rank holds the whole subset and loss vector; with shard_state
        ``with_dap_state`` has read the shards of the new slice), so after a change of world size the
        next epoch trains exactly the subset decided before the stop, sharded over the new ranks,
        and the plan and measured compute stay exact. What cannot be the same is the per-rank
        batches, hence the weights and later subsets: ``world_size_changes`` records the change, and
        the LR schedule continues (see ``schedule_progress``).
        """
        saved_world = state["world_size"]
        self.dap.load_state_dict(state["dap"])  # before the model: it refuses a dataset of another size
        saved_steps = state["lr_schedule"]["planned_steps"]
        if saved_steps != planned_steps(self.cfg, self.dap, saved_world):
            raise ValueError(f"the checkpoint planned {saved_steps} optimiser steps per epoch, this run "
                             f"{planned_steps(self.cfg, self.dap, saved_world)} for the same {saved_world} processes: "
                             "was batch_size changed in config.json?")
        origin = tuple(state["lr_schedule"].get("origin", (1, 0.0)))  # checkpoints before world changes: (1, 0.0)
        self.world_size_changes = list(state.get("world_size_changes", []))
        if saved_world == self.world or self.dap.done:  # a finished run trains nothing: no change to record
            self.lr_origin = (int(origin[0]), float(origin[1]))
        else:
            epoch = self.dap.epoch
            self.lr_origin = (epoch, schedule_progress(saved_steps, origin, epoch, 0))
            self.world_size_changes.append({"epoch": epoch, "from": saved_world, "to": self.world})
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.retention is not None:
            self.retention.load_state_dict(state["retention"])
        restore_rng_states(state["rng"])


def train(cfg: Optional[TrainConfig], out: str | Path, resume: bool = False, progress: bool = False,
          stop_after: Optional[int] = None, auto_resume: bool = False) -> Optional[dict]:
    """Run (or resume) training into run directory ``out``; returns the summary.

    With ``resume=True``, ``cfg`` is ignored (pass None): the run continues with its saved config.
    With ``auto_resume=True`` the same call starts the run, or continues it after a restart (a
    preempted job requeued, ``torchrun --max-restarts``): see ``RunDir.resumes``; a finished
    run's summary is returned as it is.
    ``stop_after``: end this process after that epoch's checkpoint (the run stays resumable, and
    no summary is written yet): long runs can be split across sessions.
    Returns None on ranks other than 0 and when stopped early.
    """
    run = RunDir(out)
    if resume and auto_resume:
        raise ValueError("resume and auto_resume exclude each other: auto_resume already resumes a started run")
    if resume:
        if not run.config_path.exists():
            raise FileNotFoundError(f"cannot resume: {run.config_path} does not exist")
        cfg = TrainConfig.load(run.config_path)
    elif auto_resume:
        # Every rank decides alone, before joining the process group: nothing is written until all have joined.
        resume = run.resumes(cfg)
    else:
        run.check_new()  # nothing droppick did not create is ever overwritten
    device = distributed.setup_from_env(cfg.device)
    if auto_resume and resume and run.summary_path.exists():
        if not distributed.is_main_process():
            return None
        print(f"{run.path} holds this run, finished: nothing to train (summary: {run.summary_path})", file=sys.stderr)
        return json.loads(run.summary_path.read_text())
    cudnn_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    lock = RunLock(run.path)
    try:
        if distributed.is_main_process():  # the only rank that writes the directory
            run.path.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        with sigterm_exits():
            return _run(cfg, run, resume, device, progress, stop_after)
    finally:
        lock.release()
        torch.backends.cudnn.benchmark = cudnn_benchmark  # the caller's setting, as it was


def _run(cfg: TrainConfig, run: RunDir, resume: bool, device: torch.device, progress: bool,
         stop_after: Optional[int]) -> Optional[dict]:
    main = distributed.is_main_process()
    t = Trainer(cfg, device, pin_memory=device.type == "cuda")
    dap = t.dap

    wall_before = 0.0
    path, checkpoint = (run.latest_checkpoint_and_path() if resume else None) or (None, None)
    if checkpoint is not None:
        check_resumable(checkpoint, cfg)
        t.load_state_dict(with_dap_state(run, checkpoint, t.rank, t.world))  # shard_state: this rank's shards
        wall_before = checkpoint["wall_seconds"]
        if main:
            print(f"resuming {run.path} at epoch {dap.epoch} from {path.name}", file=sys.stderr)
        if main and checkpoint["world_size"] != t.world and not dap.done:
            print(f"the world size changed: this run was trained by {checkpoint['world_size']} processes and continues "
                  f"with {t.world}. Epoch {dap.epoch} trains the subset decided before the stop, sharded over {t.world}; "
                  f"the plan and the compute are unchanged, but the per-rank batches differ, so the weights and later "
                  f"subsets differ from an uninterrupted {checkpoint['world_size']}-process run's", file=sys.stderr)
    if main:
        run.path.mkdir(parents=True, exist_ok=True)
        cfg.save(run.config_path)
    history = run.truncate_metrics(before_epoch=dap.epoch) if main else []
    if main and progress:
        tqdm.write(t.cfg.describe_plan(dap.plan()))
    warning = main and dap.epoch == 1 and no_drop_warning(cfg.schedule, len(t.train_split), cfg.policy,
                                                          cfg.target_compute)
    if warning:  # before training, by one process, not again at each resume
        print(warning, file=sys.stderr)
    if main and dap.epoch == 1 and cfg.label_noise:
        run.write_label_noise(t.train_split.flipped.tolist(), [] if t.val_split is None else t.val_split.flipped.tolist())
    board = None
    if main and cfg.tensorboard:
        from ..integrations.tensorboard import EpochWriter

        board = EpochWriter(run.path / "tensorboard", first_epoch=dap.epoch)

    started = time.perf_counter()
    holdout = fit_irreducible(t) if needs_irreducible(dap) else {}  # --policy rho, before epoch 1 (not on resume)
    if main and progress and holdout:
        tqdm.write(f"rho: irreducible losses from {holdout['holdout_samples']} validation samples trained and "
                   f"{holdout['holdout_forward']} training samples scored ({holdout['holdout_seconds']:.1f} s)")
    while not dap.done:
        row = t.train_and_decide(progress) | holdout  # the holdout's counts go to epoch 1's row
        holdout = {}
        epoch, train_loss, event = row["epoch"], row["train_loss"], row["event"]
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is {train_loss}")
        tick = time.perf_counter()
        top1 = top5 = balanced = val_top1 = None  # --eval-every K: evaluated every K epochs and always after the last
        if epoch % cfg.eval_every == 0 or dap.done:
            top1, top5, balanced = t.evaluate()
            if t.val_split is not None:
                val_top1 = t.evaluate(t.val_split)[0]
        t.profiler.lap("eval")
        row.update(test_top1=top1, test_top5=top5, test_balanced_top1=balanced, eval_seconds=time.perf_counter() - tick)
        if t.val_split is not None:  # (absent without --val-samples: the rows of earlier runs stay as they were)
            row["val_top1"] = val_top1
        history.append(row)
        shards = save_dap_shards(run, dap, epoch) if cfg.shard_state else None  # every rank writes its own
        if main:
            if dap.last_nonfinite.numel():  # only with exclude_nonfinite: otherwise end_epoch raised
                run.append_nonfinite(epoch, dap.last_nonfinite.tolist())
                print(f"epoch {epoch}: excluded {dap.last_nonfinite.numel()} samples with a non-finite loss "
                      f"(listed in {run.nonfinite_path})", file=sys.stderr)
            if dap.last_skipped.numel():
                skipped = dap.last_skipped.tolist()
                run.append_unreadable(epoch, skipped, [t.train_split.path_of(i) for i in skipped])
                print(f"epoch {epoch}: left out {len(skipped)} unreadable images (listed in {run.unreadable_path})",
                      file=sys.stderr)
            run.append_metrics(row)
            if board is not None:
                board.write(row)
            run.save_checkpoint(t.checkpoint(epoch, wall_before + time.perf_counter() - started, shards), epoch)
            _test_kill_point(f"after_checkpoint:{epoch}")
            t.profiler.lap("checkpoint")
            if t.profiler.enabled:
                tqdm.write(t.profiler.report(f"epoch {epoch}", samples=dap.samples_per_epoch[-1]))
            if progress:
                tested = f"test top-1 {top1:6.2f}%" if top1 is not None else "(not evaluated)"
                tqdm.write(f"epoch {epoch:3d}  subset {row['subset_size']:7d}  loss {train_loss:.4f}  "
                           f"{tested}  {event or ''}")
        distributed.barrier()  # no rank runs ahead of the checkpoint it may resume from
        if stop_after is not None and epoch >= stop_after and not dap.done:
            break
    if board is not None:
        board.close()
    if not dap.done:
        return None

    if not main:
        return None
    summary = run_summary(t, history, run, wall_before + time.perf_counter() - started, device)
    run.write_summary(summary)
    if t.profiler.enabled:
        tqdm.write(t.profiler.report("run (this process)", run=True, samples=dap.samples_seen))
    return summary
