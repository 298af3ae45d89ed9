"""DropAndPickTrainer: transformers' Trainer on DaP's subsets (a tiny ConvNeXt on 8x8 images)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from droppick import DaPSchedule, DropAndPick, keep_count  # noqa: E402
from droppick.integrations.transformers import STATE_FILE, DropAndPickTrainer  # noqa: E402

from launch import torchrun  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = DaPSchedule(epochs=4, warmup=1, interval=1, keep=0.5, active=None, reuse_at=[3])


class Images(torch.utils.data.Dataset):
    """Dict items in the image-classification convention; class c is shifted by c."""

    def __init__(self, n: int = 60, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.images = torch.randn(n, 1, 8, 8, generator=g) + self.labels[:, None, None, None].float()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "labels": int(self.labels[i])}


def tiny_model():
    """A tiny ConvNeXt. (transformers 5.25's own Trainer cannot resume a ViT: it saves ViT checkpoints
    under legacy key names and loads them unconverted, a plain Trainer as well.)"""
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(num_channels=1, patch_size=1, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                         num_labels=3, image_size=8)
    return transformers.ConvNextForImageClassification(config)


def arguments(out, **kw):
    values = dict(output_dir=str(out), num_train_epochs=SCHEDULE.epochs, per_device_train_batch_size=8,
                  learning_rate=1e-2, lr_scheduler_type="linear", save_strategy="epoch", logging_strategy="no",
                  report_to=[], use_cpu=True, seed=0, disable_tqdm=True) | kw
    return transformers.TrainingArguments(**values)


def make_trainer(out, watch: bool = False, **kw):
    """A trainer on 60 images; with ``watch``, a Watch callback that runs before the trainer's own."""
    dap = DropAndPick(num_samples=60, schedule=SCHEDULE, policy="dap", seed=0)
    callbacks = [Watch(dap)] if watch else []
    trainer = DropAndPickTrainer(model=tiny_model(), args=arguments(out, **kw), train_dataset=Images(), dap=dap,
                                 callbacks=callbacks)
    return trainer, (callbacks[0] if watch else None)


class Watch(transformers.TrainerCallback):
    """Runs before the trainer's own epoch end: sees each epoch's subset and recorded losses, and
    the learning rate of every step."""

    def __init__(self, dap):
        self.dap, self.subsets, self.losses, self.lrs = dap, [], [], []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.subsets.append(self.dap.subset.clone())

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, args, state, control, **kwargs):
        self.losses.append(self.dap.losses.clone())


def test_trains_the_plans_epochs_keeps_the_top_k_and_sizes_the_lr_by_the_plan(tmp_path):
    trainer, watch = make_trainer(tmp_path / "out", watch=True)
    trainer.train()

    plan = SCHEDULE.plan(60)
    assert trainer.dap.done and trainer.dap.samples_per_epoch == list(plan.subset_sizes) == [60, 60, 30, 60]
    assert [s.numel() for s in watch.subsets] == list(plan.subset_sizes)
    # The drop after epoch 2 kept the hardest half of that epoch's recorded losses.
    expected = watch.losses[1].topk(keep_count(60, 0.5)).indices.sort().values
    assert torch.equal(watch.subsets[2], expected)
    assert torch.equal(watch.subsets[3], torch.arange(60))  # the pick after epoch 3
    # 8 + 8 + 4 + 8 optimiser steps, as planned; the linear decay ends at the last one.
    assert trainer.planned_updates() == [8, 8, 4, 8]
    assert trainer.state.global_step == trainer.state.max_steps == 28 == len(watch.lrs)
    assert watch.lrs == pytest.approx([1e-2 * (1 - k / 28) for k in range(28)])
    assert set(trainer.lr_scheduler.get_last_lr()) == {0.0}  # every parameter group
    for step, epoch in {8: 2, 16: 3, 20: 4, 28: 5}.items():  # each checkpoint: the DaP state after its epoch
        saved = torch.load(tmp_path / "out" / f"checkpoint-{step}" / STATE_FILE, weights_only=True)
        assert saved["dap"]["epoch"] == epoch and saved["world_size"] == 1



class Capturing(DropAndPickTrainer):
    """Keeps each trained sample's EL2N, computed here from the step's own logits and labels."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        indices = self._indices  # compute_loss takes them
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if model.training and indices is not None:
            probs = outputs.logits.detach().float().softmax(dim=1)
            errors = (probs - torch.nn.functional.one_hot(inputs["labels"], probs.shape[1])).norm(dim=1)
            self.el2n.setdefault(self.dap.epoch, {}).update(zip(indices.tolist(), errors.tolist()))
        return (loss, outputs) if return_outputs else loss


def test_score_el2n_comes_from_the_steps_own_logits_and_ranks_the_drop(tmp_path):
    dap = DropAndPick(num_samples=60, schedule=SCHEDULE, policy="dap", seed=0, score="el2n")
    watch = Watch(dap)
    trainer = Capturing(model=tiny_model(), args=arguments(tmp_path / "out", save_strategy="no"), train_dataset=Images(),
                        dap=dap, callbacks=[watch])
    trainer.el2n = {}
    trainer.train()
    for epoch, values in trainer.el2n.items():  # what the engine recorded is the EL2N of those logits
        recorded = watch.losses[epoch - 1]
        assert sorted(values) == watch.subsets[epoch - 1].tolist()
        assert recorded[list(values)].tolist() == pytest.approx(list(values.values()), abs=1e-5)
    expected = watch.losses[1].topk(keep_count(60, 0.5)).indices.sort().values  # the drop after epoch 2
    assert torch.equal(watch.subsets[2], expected) and dap.done

@pytest.mark.parametrize("step,saving", [(16, {}), (10, {"save_strategy": "steps", "save_steps": 10})],
                         ids=["after-the-drop", "mid-epoch"])
def test_resume_from_a_checkpoint_continues_with_the_same_subsets_and_weights(tmp_path, step, saving):
    straight, _ = make_trainer(tmp_path / "straight", **saving)
    straight.train()
    # A fresh process's view: a new model and engine, resumed after the drop (epoch 2, step 16), or
    # at step 10, two batches into epoch 2 (its recorded losses are in the saved DaP state).
    shutil.copytree(tmp_path / "straight" / f"checkpoint-{step}", tmp_path / "resumed" / f"checkpoint-{step}")
    resumed, watch = make_trainer(tmp_path / "resumed", watch=True, **saving)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / f"checkpoint-{step}"))

    assert [s.numel() for s in watch.subsets] == ([30, 60] if step == 16 else [60, 30, 60])
    assert resumed.state.global_step == 28
    assert resumed.dap.samples_per_epoch == straight.dap.samples_per_epoch
    assert torch.equal(resumed.dap.subset, straight.dap.subset)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_gradient_accumulation_plans_groups_of_batches(tmp_path):
    trainer, _ = make_trainer(tmp_path, gradient_accumulation_steps=3, save_strategy="no")
    trainer.train()
    assert trainer.planned_updates() == [3, 3, 2, 3]  # 8, 8, 4, 8 batches in groups of 3, a last short group
    assert trainer.state.global_step == trainer.state.max_steps == 11
    assert set(trainer.lr_scheduler.get_last_lr()) == {0.0} and trainer.dap.samples_per_epoch == [60, 60, 30, 60]


def test_a_custom_sample_loss_is_recorded_and_trained(tmp_path):
    calls = []

    def smoothed(outputs, labels):
        calls.append(labels.shape)
        return torch.nn.functional.cross_entropy(outputs.logits, labels, reduction="none", label_smoothing=0.1)

    train = Images()
    dap = DropAndPick(num_samples=60, schedule=SCHEDULE, policy="dap", seed=0)
    trainer = DropAndPickTrainer(model=tiny_model(), args=arguments(tmp_path, save_strategy="no"), train_dataset=train,
                                 dap=dap, sample_loss=smoothed)
    trainer.train()
    assert len(calls) == 28 and all(len(shape) == 1 for shape in calls)
    assert dap.samples_per_epoch == [60, 60, 30, 60]


def test_refusals_name_the_fix(tmp_path):
    train = Images()
    dap = DropAndPick(num_samples=60, schedule=SCHEDULE, policy="dap", seed=0)
    with pytest.raises(ValueError, match=r"num_train_epochs is 3 but the DaP plan trains 4 epochs: set "
                                         r"TrainingArguments\(num_train_epochs=4\)"):
        DropAndPickTrainer(model=tiny_model(), args=arguments(tmp_path, num_train_epochs=3), train_dataset=train, dap=dap)
    with pytest.raises(ValueError, match=r"max_steps=5 would cut the DaP schedule short: leave it unset"):
        DropAndPickTrainer(model=tiny_model(), args=arguments(tmp_path, max_steps=5), train_dataset=train, dap=dap)
    with pytest.raises(ValueError, match=r"train_dataset has 50 samples but the DaP engine was made for 60"):
        DropAndPickTrainer(model=tiny_model(), args=arguments(tmp_path), train_dataset=Images(50), dap=dap)

    infobatch = DropAndPick(num_samples=60, schedule=SCHEDULE, policy="infobatch", seed=0)
    with pytest.raises(ValueError, match=r"InfoBatch's subset sizes depend on the losses .* use a scheduled policy here"):
        DropAndPickTrainer(model=tiny_model(), args=arguments(tmp_path), train_dataset=train, dap=infobatch)
    seta = DropAndPick(num_samples=60, schedule=SCHEDULE, policy="seta", seed=0)
    with pytest.raises(ValueError, match=r"SeTa's subset sizes depend on the losses .* use a scheduled policy here"):
        DropAndPickTrainer(model=tiny_model(), args=arguments(tmp_path), train_dataset=train, dap=seta)

    tensors = torch.utils.data.TensorDataset(train.images, train.labels)
    trainer = DropAndPickTrainer(model=tiny_model(), args=arguments(tmp_path), train_dataset=tensors, dap=dap)
    with pytest.raises(TypeError, match=r"must return dicts such as \{'pixel_values': \.\.\., 'labels': \.\.\.\}; "
                                        r"item \d+ is a tuple"):
        trainer.train()

    plain = transformers.Trainer(model=tiny_model(), args=arguments(tmp_path / "plain"), train_dataset=train)
    plain.train()  # a checkpoint without DaP state
    with pytest.raises(ValueError, match=rf"holds no DaP state \({STATE_FILE}\): it was not saved by DropAndPickTrainer"):
        make_trainer(tmp_path / "x")[0].train(resume_from_checkpoint=str(tmp_path / "plain" / "checkpoint-8"))


def test_selective_backprop_is_refused_with_where_it_runs(tmp_path):
    """The Trainer back-propagates the one loss compute_loss returns for the whole batch: no part of it."""
    dap = DropAndPick(num_samples=60, schedule=DaPSchedule(epochs=4, warmup=1, interval=1, keep=1.0),
                      policy="selective_backprop", seed=0)
    with pytest.raises(ValueError, match=r"Selective Backprop back-propagates a part of each batch.* Use it with "
                                         r"droppick train, Lightning \(droppick.backprop_losses in training_step\) "
                                         r"or a loop of your own"):
        DropAndPickTrainer(model=tiny_model(), args=arguments(tmp_path), train_dataset=Images(), dap=dap)


def test_readme_block_runs_as_written(tmp_path, monkeypatch):
    from test_library_api import readme_block

    monkeypatch.chdir(tmp_path)
    ns = {"train_set": Images(), "model": tiny_model(), "TrainingArguments": transformers.TrainingArguments}
    exec(readme_block("DropAndPickTrainer("), ns)
    trainer, dap = ns["trainer"], ns["dap"]
    assert dap.done and dap.samples_per_epoch == list(dap.plan().subset_sizes)
    assert trainer.state.global_step == sum(trainer.planned_updates())
    assert (tmp_path / "runs" / "hf-dap").is_dir()


def test_the_example_under_torchrun_two_processes_holds_one_subset(tmp_path):
    proc = torchrun([str(ROOT / "examples" / "transformers_dap.py"), "--out", str(tmp_path / "out"),
                     "--samples", "300", "--epochs", "4"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each rank's own file (their printed lines share one pipe and can interleave).
    ranks = [json.loads((tmp_path / "out" / f"dap-rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # the same final subset
    plan = DaPSchedule(epochs=4, warmup=2, interval=1, keep=0.8, active=None, reuse_at=[2]).plan(300)
    assert ranks[0]["samples_per_epoch"] == ranks[1]["samples_per_epoch"] == list(plan.subset_sizes)
    saved = sorted((tmp_path / "out").glob(f"checkpoint-*/{STATE_FILE}"), key=lambda p: int(p.parent.name[11:]))
    assert len(saved) == 2 and torch.load(saved[-1], weights_only=True)["dap"]["epoch"] == 5
