"""Drop-and-Pick inside Hugging Face ``transformers.Trainer``.

    dap = DropAndPick(num_samples=len(train_set), schedule=schedule, policy="dap", seed=0)
    trainer = DropAndPickTrainer(model=model, args=args, train_dataset=train_set, dap=dap)
    trainer.train()

The dataset's items are dicts in the image-classification convention (``"pixel_values"``,
``"labels"``); the trainer adds each item's index itself (the key ``dap_index``, removed before
the model sees the batch), so the dataset needs no index column.

What the subclass changes, and why:

- The Trainer sizes an epoch from the first epoch's dataloader, and on resume derives the epoch
  from ``global_step // steps_per_epoch``; both are wrong once the subset shrinks. Here every
  epoch is sized from its own dataloader (the DaP sampler's length), the run's optimiser steps
  and the LR schedule from the planner (``dap.plan()``), so a linear or cosine decay ends where
  the run ends, and a resumed run finds its epoch in the DaP state.
- The per-sample loss is cross-entropy of ``outputs.logits`` against ``labels`` unless
  ``sample_loss(outputs, labels) -> Tensor[B]`` is given; it is recorded against the batch's
  indices, and its mean (InfoBatch: weighted) is the training loss. With ``DropAndPick(score="el2n")``
  or ``"margin"`` the score is computed from the same forward's ``outputs.logits`` and ``labels``.
- The drop or pick is applied at each epoch's end, before the Trainer saves a checkpoint; the
  DaP state is saved in every checkpoint folder (``droppick_dap.pt``) and loaded by
  ``trainer.train(resume_from_checkpoint=...)``.
- Selective Backprop is refused: it back-propagates a drawn part of each batch after a pass over all
  of it without gradients, and the Trainer back-propagates the one loss ``compute_loss`` returns for
  the whole batch (use ``droppick train``, Lightning or a loop of your own).
- Under DDP the DaP sampler shards by rank itself, so Accelerate's own batch sharding is turned
  off for it; ``end_epoch`` merges all ranks' losses, and the ranks' subsets are compared after
  every epoch (``distributed.check_agreement``).
"""

from __future__ import annotations

import math
import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F

try:
    import transformers
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("droppick.integrations.transformers needs transformers: "
                      "pip install 'droppick[transformers]'") from err

from .. import distributed
from ..atomic import atomic_write_bytes
from ..engine import DropAndPick
from ..policies.selective_backprop import SelectiveBackprop
from ..sampler import DaPSampler, per_rank

# The Trainer's private hooks this subclass overrides (checked at import: a transformers release
# that renamed one would otherwise skip the override silently, e.g. resume without the DaP state).
HOOKS = ("set_initial_training_values", "_run_epoch", "_init_training_state", "_get_train_sampler",
         "_set_signature_columns_if_needed", "_prepare_inputs")
_missing = [name for name in HOOKS if not hasattr(transformers.Trainer, name)]
if _missing:
    raise ImportError(f"transformers {transformers.__version__}'s Trainer has no {', '.join(_missing)}, which "
                      "DropAndPickTrainer overrides; it was written against transformers 5.25")

INDEX_KEY = "dap_index"  # the key the trainer adds to every training item, removed before the forward
STATE_FILE = "droppick_dap.pt"  # the DaP state, in each of the Trainer's checkpoint folders


class _WithIndex(torch.utils.data.Dataset):
    """The user's dataset, each dict item with its index added under ``INDEX_KEY``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        if not isinstance(item, dict):
            raise TypeError(f"DropAndPickTrainer's train_dataset must return dicts such as {{'pixel_values': ..., "
                            f"'labels': ...}}; item {index} is a {type(item).__name__}")
        return {**item, INDEX_KEY: index}


def cross_entropy(outputs, labels: torch.Tensor) -> torch.Tensor:
    """The default per-sample loss: cross-entropy of ``outputs.logits`` (in float32) against ``labels``."""
    return F.cross_entropy(outputs.logits.float(), labels, reduction="none")


class _EpochEnd(transformers.TrainerCallback):
    """Closes each DaP epoch where the Trainer ends its epoch, before it may save; writes the DaP
    state into each checkpoint folder the Trainer saves."""

    def __init__(self, dap: DropAndPick):
        self.dap = dap

    def on_epoch_end(self, args, state, control, **kwargs):
        self.dap.end_epoch()
        distributed.check_agreement(self.dap.subset, self.dap.epoch - 1)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = os.path.join(args.output_dir, f"{transformers.trainer_utils.PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            saved = {"dap": self.dap.state_dict(), "world_size": args.world_size}
            atomic_write_bytes(os.path.join(folder, STATE_FILE), lambda f: torch.save(saved, f))


class DropAndPickTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` that trains the DaP schedule's epochs on DaP's subsets.

    ``dap``: the engine (its ``num_samples`` must be ``len(train_dataset)``); ``sample_loss``: the
    per-sample loss of other heads, ``callable(outputs, labels) -> Tensor[B]``. ``num_train_epochs``
    must equal the plan's epochs. Every other argument is the Trainer's.
    """

    def __init__(self, *args, dap: DropAndPick, sample_loss: Optional[Callable] = None, **kwargs):
        super().__init__(*args, **kwargs)
        epochs = dap.plan().epochs
        if self.args.num_train_epochs != epochs:
            raise ValueError(f"num_train_epochs is {self.args.num_train_epochs} but the DaP plan trains {epochs} "
                             f"epochs: set TrainingArguments(num_train_epochs={epochs})")
        if self.args.max_steps > 0:
            raise ValueError(f"max_steps={self.args.max_steps} would cut the DaP schedule short: leave it unset (-1); "
                             "the run's length is the plan's epochs")
        if dap.policy.name in ("infobatch", "seta"):
            named = {"infobatch": "InfoBatch", "seta": "SeTa"}[dap.policy.name]
            raise ValueError(f"{named}'s subset sizes depend on the losses (its plan is an upper bound), so the "
                             "Trainer's steps and LR schedule cannot be sized from the plan: use a scheduled policy "
                             f"here, or {named} with droppick train or in your own loop")
        if isinstance(dap.policy, SelectiveBackprop):
            raise ValueError("Selective Backprop back-propagates a part of each batch, drawn after a forward pass over "
                             "all of it without gradients; DropAndPickTrainer's compute_loss runs one forward pass over "
                             "the whole batch, which the Trainer back-propagates whole. Use it with droppick train, "
                             "Lightning (droppick.backprop_losses in training_step) or a loop of your own")
        if self.train_dataset is None or len(self.train_dataset) != dap.num_samples:
            found = None if self.train_dataset is None else len(self.train_dataset)
            raise ValueError(f"train_dataset has {found} samples but the DaP engine was made for {dap.num_samples}: "
                             "build DropAndPick(num_samples=len(train_dataset), ...)")
        self.dap, self.sample_loss = dap, sample_loss or cross_entropy
        self.train_dataset = _WithIndex(self.train_dataset)
        self.loss_is_scaled_for_ga = False  # our loss is a batch mean: the Trainer divides it for accumulation
        self._indices: Optional[torch.Tensor] = None  # the indices of the batch being trained (CPU)
        self.add_callback(_EpochEnd(dap))

    # -- sizes: every epoch from its own subset, the run from the plan ------------------------------

    def planned_updates(self) -> list[int]:
        """Optimiser steps of every epoch, from the plan: each rank's shard in batches, then in
        groups of ``gradient_accumulation_steps`` (a last short group still steps)."""
        batch, accumulate = self._train_batch_size, self.args.gradient_accumulation_steps  # what the loader batches
        rounding = math.floor if self.args.dataloader_drop_last else math.ceil
        batches = [rounding(per_rank(n, self.args.world_size) / batch) for n in self.dap.plan().subset_sizes]
        return [max(math.ceil(b / accumulate), 1) for b in batches]

    def set_initial_training_values(self, args, dataloader):
        values = list(super().set_initial_training_values(args, dataloader))
        values[-1] = sum(self.planned_updates())  # max_steps: the Trainer's stop and its LR schedule's length
        return tuple(values)

    def _run_epoch(self, **kwargs):
        batches = len(kwargs["train_dataloader"])  # this epoch's subset, sharded and batched
        kwargs.update(steps_in_epoch=batches,
                      num_update_steps_per_epoch=max(math.ceil(batches / self.args.gradient_accumulation_steps), 1))
        return super()._run_epoch(**kwargs)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint,
                             trial):
        epochs_trained, steps_in_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        if resume_from_checkpoint is None or self.state.global_step == 0:
            return epochs_trained, steps_in_epoch
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"{resume_from_checkpoint} holds no DaP state ({STATE_FILE}): it was not saved by "
                             "DropAndPickTrainer, so the subsets it trained are unknown; start a new run")
        saved = torch.load(path, weights_only=True)
        if saved["world_size"] != self.args.world_size:
            raise ValueError(f"{resume_from_checkpoint} was saved by {saved['world_size']} processes and is resumed by "
                             f"{self.args.world_size}: the steps per epoch, hence where the Trainer resumes, depend on "
                             f"it; resume with {saved['world_size']} processes")
        self.dap.load_state_dict(saved["dap"])
        epochs_trained = self.dap.epoch - 1
        done = self.state.global_step - sum(self.planned_updates()[:epochs_trained])
        return epochs_trained, 0 if self.args.ignore_data_skip else done * self.args.gradient_accumulation_steps

    # -- data: the DaP sampler, the index beside the batch -------------------------------------------

    def _get_train_sampler(self, train_dataset=None) -> DaPSampler:
        return self.dap.sampler()

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        # Accelerate shards the batches of a sampler it takes for rank-unaware; the DaP sampler
        # already gives this rank its shard, so its wrapper passes batches through.
        shard = getattr(loader, "batch_sampler", None)
        if getattr(getattr(shard, "batch_sampler", None), "sampler", None) is not None:
            if isinstance(shard.batch_sampler.sampler, DaPSampler):
                shard.num_processes, shard.process_index = 1, 0
        return loader

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if INDEX_KEY not in self._signature_columns:  # kept through remove_unused_columns' collator
            self._signature_columns.append(INDEX_KEY)

    def _prepare_inputs(self, inputs):
        # Taken off before the batch moves to the device: record() wants the loader's CPU indices.
        self._indices = inputs.pop(INDEX_KEY, None)
        return super()._prepare_inputs(inputs)

    # -- the loss -------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)  # the caller's dict stays whole (prediction_step reads its labels)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        losses = self.sample_loss(outputs, labels)
        indices, self._indices = self._indices, None
        if model.training and indices is not None:
            self.dap.record(indices, losses.detach(), logits=getattr(outputs, "logits", None), targets=labels)
            weights = self.dap.batch_weights(indices)
            if weights is not None:  # InfoBatch: the kept low-loss samples are up-weighted
                losses = losses * weights.to(losses.device)
        loss = losses.mean()
        return (loss, outputs) if return_outputs else loss
