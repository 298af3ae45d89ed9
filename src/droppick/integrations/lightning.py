"""Drop-and-Pick as a PyTorch Lightning callback.

    cb = DropAndPickCallback(num_samples=len(train_set), schedule=schedule, policy="dap", seed=0)
    # training_step returns {"loss": losses.mean(), "sample_losses": losses}; the batch starts with
    # the indices IndexedDataset puts first; train_dataloader() uses sampler=cb.sampler()
    trainer = pl.Trainer(max_epochs=schedule.epochs, callbacks=[cb], use_distributed_sampler=False)

What the callback does, and why:

- It records each batch's ``sample_losses`` against the batch's indices (with ``score="el2n"`` or
  ``"margin"`` also the ``logits`` and ``targets`` the training step returns beside them), and ends the DaP epoch
  (drop, pick or nothing) as soon as this rank's shard has been recorded: inside the last batch's
  ``on_train_batch_end``, before Lightning validates or writes a checkpoint, so a checkpoint never
  holds a half-closed epoch. (When Lightning stops an epoch early, e.g. ``limit_train_batches``,
  ``on_train_epoch_end`` closes it instead.)
- The epoch's length changes with the subset, and Lightning sizes an epoch when it loads the
  training dataloader; so the callback sets ``trainer.reload_dataloaders_every_n_epochs = 1`` (and
  says so once): ``train_dataloader()`` is called every epoch and sees the new subset.
  Returning the same DataLoader (``persistent_workers=True``) from every call keeps its workers
  alive across these reloads; its length follows the DaP sampler.
- Selective Backprop (``policy=SelectiveBackprop(...)``) selects inside the training step, so the
  step takes part: ``recorded, trained = droppick.backprop_losses(cb.dap, batch_idx, sample_losses)``,
  then ``{"loss": trained.mean(), "sample_losses": recorded}``. The callback refuses a step that
  does not call it, and takes and logs the policy's counts at each epoch's end.
- The DaP state rides in Lightning's checkpoints (``state_dict``/``load_state_dict``), so
  ``trainer.fit(..., ckpt_path=...)`` resumes exactly.
- Under ``strategy="ddp"`` the DaP sampler shards by rank itself, and ``end_epoch`` merges every
  rank's losses: every rank keeps the same subset. Lightning's own DistributedSampler would
  replace it, hence ``use_distributed_sampler=False``, which is checked.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import pytorch_lightning as pl
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("droppick.integrations.lightning needs PyTorch Lightning: pip install 'droppick[lightning]'") from err

from ..engine import DropAndPick
from ..policies.selective_backprop import SelectiveBackprop
from ..sampler import DaPSampler
from ..schedule import DaPSchedule


class DropAndPickCallback(pl.Callback):
    """Records per-sample losses, applies DaP's decisions at epoch ends, checkpoints the DaP state.

    ``num_samples``, ``schedule``, ``policy``, ``seed`` and any other keyword go to
    ``DropAndPick`` (so any policy it accepts works here); ``losses_key`` names the entry of the
    ``training_step`` output that holds the per-sample losses; ``logits_key`` and ``targets_key`` those
    holding the batch's logits and class targets, which a ``score`` other than "loss" is computed
    from (the step's own: no extra forward pass). ``cb.dap`` is the engine.

    Under ``SelectiveBackprop`` the ``training_step`` gets its losses from
    ``droppick.backprop_losses(cb.dap, batch_idx, ...)`` and returns ``"loss": trained.mean()`` and
    the recorded losses under ``losses_key``; the callback takes the policy's counts at each epoch's
    end into ``cb.spent`` (this rank's) and logs ``dap/samples_backprop`` and ``dap/step_equivalents``
    (summed over the ranks).
    """

    def __init__(self, num_samples: int, schedule: DaPSchedule, policy: Any = "dap", seed: int = 0,
                 losses_key: str = "sample_losses", log: bool = True, logits_key: str = "logits",
                 targets_key: str = "targets", **engine_kwargs):
        self.dap = DropAndPick(num_samples, schedule, policy=policy, seed=seed, **engine_kwargs)
        self.losses_key, self.log = losses_key, log
        self.logits_key, self.targets_key = logits_key, targets_key
        self.spent: list[dict] = []  # per epoch of this fit, this rank's policy counts (Selective Backprop's)
        self._expected = 0  # samples this rank's loader yields this epoch
        self._recorded = 0  # of which recorded so far
        self._counted = 0  # Selective Backprop: samples back-propagated this epoch, up to the last batch

    def sampler(self) -> DaPSampler:
        """The sampler for ``train_dataloader()``: this epoch's subset, this rank's shard."""
        return self.dap.sampler()

    # -- Lightning hooks ------------------------------------------------------------------

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        if getattr(trainer._accelerator_connector, "use_distributed_sampler", False):
            raise ValueError("DropAndPickCallback needs pl.Trainer(use_distributed_sampler=False): under DDP "
                             "Lightning would replace the DaP sampler with its own DistributedSampler, and the "
                             "ranks would train on all data instead of the DaP subset")
        if trainer.max_epochs != self.dap.schedule.epochs:
            raise ValueError(f"pl.Trainer(max_epochs={trainer.max_epochs}) but the DaP schedule has "
                             f"{self.dap.schedule.epochs} epochs: pass max_epochs=schedule.epochs")
        if trainer.reload_dataloaders_every_n_epochs != 1:
            pl.utilities.rank_zero_info("DropAndPickCallback: setting reload_dataloaders_every_n_epochs=1, "
                                        "so every epoch's loader has the current subset's length")
            trainer.reload_dataloaders_every_n_epochs = 1

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.dap.epoch != trainer.current_epoch + 1:
            raise RuntimeError(f"Lightning starts epoch {trainer.current_epoch + 1} (1-based) but the DaP engine "
                               f"is at epoch {self.dap.epoch}: was the callback's state restored from another run?")
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", sampler)
        if not (isinstance(sampler, DaPSampler) and sampler.dap is self.dap):
            raise ValueError(f"the training DataLoader's sampler is {type(sampler).__name__}, not this callback's: "
                             "build it with DataLoader(..., sampler=cb.sampler()) and pass "
                             "pl.Trainer(use_distributed_sampler=False)")
        n = len(sampler)
        drop_last, batch_size = getattr(loader, "drop_last", False), getattr(loader, "batch_size", None)
        self._expected = n - n % batch_size if drop_last and batch_size else n
        self._recorded = 0
        self._counted = getattr(self.dap.policy, "backprop", 0)  # Selective Backprop's count before the batch

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        indices, losses = self._batch_losses(outputs, batch)
        logits, targets = outputs.get(self.logits_key), outputs.get(self.targets_key)
        if self.dap.score != "loss" and (logits is None or targets is None):
            raise ValueError(f"score {self.dap.score!r} is computed from the logits and targets: training_step must "
                             f"return them beside the losses, {{'loss': ..., {self.losses_key!r}: losses, "
                             f"{self.logits_key!r}: logits, {self.targets_key!r}: targets}}")
        policy = self.dap.policy
        if isinstance(policy, SelectiveBackprop) and policy.backprop == self._counted:
            raise ValueError("the policy is SelectiveBackprop, but training_step left its counts untouched: get the "
                             "losses from droppick.backprop_losses(cb.dap, batch_idx, sample_losses) and return "
                             f"{{'loss': trained.mean(), {self.losses_key!r}: recorded}}; a plain step trains every "
                             "sample of every batch")
        self._counted = getattr(policy, "backprop", 0)
        self.dap.record(indices, losses, logits=logits, targets=targets)
        self._recorded += indices.numel()
        if self._recorded == self._expected:
            self._end_epoch(pl_module)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.dap.epoch == trainer.current_epoch + 1:  # stopped before its shard was recorded
            self._end_epoch(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"dap": self.dap.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dap.load_state_dict(state_dict["dap"])

    # -- helpers ----------------------------------------------------------------------------

    def _end_epoch(self, pl_module: "pl.LightningModule") -> None:
        trained = self.dap.subset.numel()
        # Selective Backprop (backprop_losses in training_step): this rank's samples back-propagated and
        # step-equivalents this epoch, reset for the next
        spent = getattr(self.dap.policy, "take_counts", dict)()
        self.spent.append(spent)
        self.dap.end_epoch()
        if self.log:
            # Identical on every rank (end_epoch merged the losses): the mean over ranks is the value.
            pl_module.log("dap/subset_size", float(trained), on_step=False, on_epoch=True, sync_dist=True)
            pl_module.log("dap/compute_fraction", self.dap.compute_fraction, on_step=False, on_epoch=True,
                        sync_dist=True)
            for key, value in spent.items():  # each rank's own: their sum is the run's
                pl_module.log(f"dap/{key}", float(value), on_step=False, on_epoch=True, sync_dist=True,
                              reduce_fx="sum")

    def _batch_losses(self, outputs: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(outputs, dict) or self.losses_key not in outputs:
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise ValueError(f"training_step must return a dict with {self.losses_key!r}, the per-sample losses "
                             f"(F.cross_entropy(..., reduction='none')); it returned {got}")
        losses = outputs[self.losses_key]
        if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise ValueError(f"{self.losses_key!r} must hold one loss per sample (a 1-D tensor, reduction='none'), "
                             f"got {shape}: a mean loss cannot tell DaP which samples are hard")
        indices = batch[0] if isinstance(batch, (tuple, list)) and batch else None
        if (not isinstance(indices, torch.Tensor) or indices.dim() != 1 or indices.dtype.is_floating_point
                or indices.dtype == torch.bool or indices.numel() != losses.numel()):
            raise ValueError("the batch must start with the sample indices (wrap the dataset in "
                             "droppick.IndexedDataset, whose items are (index, image, target)), one per loss")
        return indices, losses
