"""DropAndPickCallback in a real pl.Trainer: the subsets against an independent top-k of the
module's own losses, DDP ranks agreeing, resume from Lightning's checkpoint, and the refusals."""

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("pytorch_lightning")

from droppick import DaPSchedule, IndexedDataset, SelectiveBackprop, backprop_losses, keep_count  # noqa: E402
from droppick.policies.selective_backprop import FORWARD_COST  # noqa: E402
from droppick.integrations.lightning import DropAndPickCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = DaPSchedule(epochs=6, warmup=1, interval=1, keep=0.7, active=None, reuse_at=[4])  # drops 2, 3, 5; pick 4
N = 200


def dataset(n: int = N) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen))


class Model(pl.LightningModule):
    """Keeps what it returned: each epoch's {index: loss}, the callback never sees this copy."""

    def __init__(self, cb, train_set, step_output=None, indexed=True):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.cb, self.train_set = cb, train_set
        self.step_output, self.indexed = step_output, indexed
        self.losses: dict[int, dict[int, float]] = {}

    def training_step(self, batch, batch_idx):
        indices, x, y = batch if self.indexed else (None, *batch)
        losses = F.cross_entropy(self.net(x), y, reduction="none")
        if indices is not None:
            self.losses.setdefault(self.current_epoch + 1, {}).update(zip(indices.tolist(), losses.detach().tolist()))
        if self.step_output:
            return self.step_output(losses)
        return {"loss": losses.mean(), "sample_losses": losses}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        data = IndexedDataset(self.train_set) if self.indexed else self.train_set
        return DataLoader(data, batch_size=32, sampler=self.cb.sampler())


def trainer(tmp_path, cb, max_epochs=SCHEDULE.epochs, extra=(), **kw):
    kw.setdefault("use_distributed_sampler", False)
    kw.setdefault("logger", False)
    return pl.Trainer(max_epochs=max_epochs, callbacks=[cb, *extra], accelerator="cpu", devices=1,
                      enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(tmp_path), **kw)


def expected_next(subset: list[int], losses: dict[int, float], event) -> list[int]:
    """Algorithm 1 from the module's own losses: top-k by loss (ties to the lower index) at a
    drop, all samples at a pick."""
    if event == "pick":
        return list(range(N))
    if event == "drop":
        k = keep_count(len(subset), SCHEDULE.keep)
        return sorted(sorted(subset, key=lambda i: (-losses[i], i))[:k])
    return subset


class Recorder(pl.loggers.Logger):
    """Keeps every metrics dict Lightning logs, in order (what a real logger would be sent)."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append(dict(metrics))


def test_callback_subsets_are_the_top_k_of_the_modules_losses(tmp_path):
    cb = DropAndPickCallback(num_samples=N, schedule=SCHEDULE, policy="dap", seed=0)
    model, logger = Model(cb, dataset()), Recorder()
    trainer(tmp_path, cb, enable_checkpointing=False, logger=logger).fit(model)
    trained = [sorted(model.losses[e]) for e in range(1, SCHEDULE.epochs + 1)]  # what each epoch served
    assert trained[0] == list(range(N))
    events = SCHEDULE.plan(N).events
    assert [e for e in events if e] == ["drop", "drop", "pick", "drop"]
    for epoch in range(1, SCHEDULE.epochs):
        assert trained[epoch] == expected_next(trained[epoch - 1], model.losses[epoch], events[epoch - 1]), epoch
    assert [len(t) for t in trained] == list(SCHEDULE.plan(N).subset_sizes)
    assert cb.dap.done and cb.dap.compute_fraction == pytest.approx(SCHEDULE.plan(N).compute_fraction)
    assert trainer_logged(model) == {"dap/subset_size", "dap/compute_fraction"}
    logged = [r for r in logger.rows if "dap/subset_size" in r]  # one row per epoch, the values themselves
    sizes = list(SCHEDULE.plan(N).subset_sizes)
    assert [r["dap/subset_size"] for r in logged] == sizes
    assert [r["dap/compute_fraction"] for r in logged] == pytest.approx(
        [sum(sizes[:e]) / (N * SCHEDULE.epochs) for e in range(1, SCHEDULE.epochs + 1)])



class MarginModel(Model):
    """Returns its logits and targets beside the losses; keeps each sample's margin hardness, computed
    here: 1 - (p_true - the largest other p)."""

    def training_step(self, batch, batch_idx):
        indices, x, y = batch
        logits = self.net(x)
        losses = F.cross_entropy(logits, y, reduction="none")
        probs = logits.detach().softmax(dim=1)
        for i, p, t in zip(indices.tolist(), probs.tolist(), y.tolist()):
            self.losses.setdefault(self.current_epoch + 1, {})[i] = 1 - (p[t] - max(v for c, v in enumerate(p) if c != t))
        return {"loss": losses.mean(), "sample_losses": losses, "logits": logits, "targets": y}


def test_callback_with_score_margin_keeps_the_top_k_of_the_modules_margins(tmp_path):
    cb = DropAndPickCallback(num_samples=N, schedule=SCHEDULE, policy="dap", seed=0, score="margin")
    model = MarginModel(cb, dataset())
    trainer(tmp_path, cb, enable_checkpointing=False).fit(model)
    trained = [sorted(model.losses[e]) for e in range(1, SCHEDULE.epochs + 1)]
    events = SCHEDULE.plan(N).events
    for epoch in range(1, SCHEDULE.epochs):
        assert trained[epoch] == expected_next(trained[epoch - 1], model.losses[epoch], events[epoch - 1]), epoch
    assert cb.dap.done and [len(t) for t in trained] == list(SCHEDULE.plan(N).subset_sizes)


def test_callback_with_a_score_refuses_a_step_without_logits(tmp_path):
    cb = DropAndPickCallback(num_samples=N, schedule=SCHEDULE, seed=0, score="el2n")
    with pytest.raises(ValueError, match="score 'el2n' is computed from the logits and targets: training_step must return"):
        trainer(tmp_path, cb, enable_checkpointing=False).fit(Model(cb, dataset()))

def trainer_logged(model) -> set:
    return {k for k in model.trainer.logged_metrics if k.startswith("dap/")}


class StopAfter(pl.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            trainer.should_stop = True


def note_worker_start(path: Path, worker_id: int) -> None:
    import os

    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")


class OneLoaderModel(Model):
    """Returns the same persistent-worker DataLoader from every ``train_dataloader()`` call."""

    def __init__(self, cb, train_set, starts: Path):
        super().__init__(cb, train_set)
        self.loader = DataLoader(IndexedDataset(train_set), batch_size=32, sampler=cb.sampler(), num_workers=2,
                                 persistent_workers=True, worker_init_fn=functools.partial(note_worker_start, starts))

    def train_dataloader(self):
        return self.loader


def test_one_persistent_loader_keeps_its_workers_across_reloads(tmp_path):
    """The callback makes Lightning call ``train_dataloader()`` every epoch; returning one loader
    with persistent workers then starts its workers once, and each epoch still serves the subset."""
    starts = tmp_path / "worker-starts"
    cb = DropAndPickCallback(num_samples=N, schedule=SCHEDULE, seed=0)
    model = OneLoaderModel(cb, dataset(), starts)
    trainer(tmp_path, cb, enable_checkpointing=False).fit(model)
    assert len(starts.read_text().split()) == 2  # two workers, started once for six epochs
    assert [len(model.losses[e]) for e in range(1, SCHEDULE.epochs + 1)] == list(SCHEDULE.plan(N).subset_sizes)


def test_resume_from_lightnings_checkpoint_equals_an_uninterrupted_run(tmp_path):
    straight_cb = DropAndPickCallback(num_samples=N, schedule=SCHEDULE, seed=0)
    straight = Model(straight_cb, dataset())
    trainer(tmp_path / "a", straight_cb, enable_checkpointing=False).fit(straight)

    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    first_cb = DropAndPickCallback(num_samples=N, schedule=SCHEDULE, seed=0)
    trainer(tmp_path / "b", first_cb, extra=[StopAfter(3), ckpt]).fit(Model(first_cb, dataset()))
    assert first_cb.dap.epoch == 4  # three epochs ended (a drop after each of 2 and 3)

    resumed_cb = DropAndPickCallback(num_samples=N, schedule=SCHEDULE, seed=0)
    resumed = Model(resumed_cb, dataset())
    trainer(tmp_path / "b", resumed_cb).fit(resumed, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert sorted(resumed.losses) == [4, 5, 6]  # it trained the epochs left, no more
    for epoch in (4, 5, 6):
        assert sorted(resumed.losses[epoch]) == sorted(straight.losses[epoch]), epoch
    assert torch.equal(resumed_cb.dap.subset, straight_cb.dap.subset)
    assert resumed_cb.dap.samples_per_epoch == straight_cb.dap.samples_per_epoch
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


class SelectiveModel(Model):
    """The Selective Backprop pattern: ``backprop_losses`` in training_step. Keeps each epoch's
    {index: recorded loss} and the number of samples it back-propagated."""

    def training_step(self, batch, batch_idx):
        indices, x, y = batch
        recorded, trained = backprop_losses(self.cb.dap, batch_idx,
                                            lambda at: F.cross_entropy(self.net(x[at]), y[at], reduction="none"))
        epoch = self.current_epoch + 1
        self.losses.setdefault(epoch, {}).update(zip(indices.tolist(), recorded.tolist()))
        self.trained[epoch] = self.trained.get(epoch, 0) + trained.numel()
        return {"loss": trained.mean(), "sample_losses": recorded}


def test_selective_backprop_in_training_step_records_every_sample_and_counts_what_it_back_propagated(tmp_path):
    schedule = DaPSchedule(epochs=3, warmup=1, interval=1, keep=1.0)
    cb = DropAndPickCallback(num_samples=N, schedule=schedule, policy=SelectiveBackprop(keep=0.4, start=2, interrupt=3),
                             seed=0)
    recorded = []  # what the callback handed the engine: (epoch, indices, losses) per batch
    record = cb.dap.record
    cb.dap.record = lambda indices, losses, **kw: (recorded.append((cb.dap.epoch, indices, losses)),
                                                   record(indices, losses, **kw))
    model, logger = SelectiveModel(cb, dataset()), Recorder()
    model.trained = {}
    trainer(tmp_path, cb, max_epochs=3, enable_checkpointing=False, logger=logger).fit(model)

    # 200 samples in batches of 32: six of 32, one of 8. Epoch 1 trains whole; from epoch 2 every
    # third batch (2, 5) trains whole, the others back-propagate int(0.4 x n): 12 of 32, 3 of 8.
    hand = {1: 200, 2: 4 * 12 + 3 + 2 * 32, 3: 4 * 12 + 3 + 2 * 32}
    assert model.trained == hand
    forwarded = 4 * 32 + 8  # the selecting batches' samples: their pass without gradients
    assert cb.spent == [{"samples_backprop": 200, "step_equivalents": 200.0}] + [
        {"samples_backprop": 115, "step_equivalents": 115 + FORWARD_COST * forwarded}] * 2
    logged = [r for r in logger.rows if "dap/samples_backprop" in r]
    assert [r["dap/samples_backprop"] for r in logged] == [200, 115, 115]
    assert [r["dap/step_equivalents"] for r in logged] == pytest.approx([200, 115 + forwarded / 3, 115 + forwarded / 3])
    for epoch in (1, 2, 3):  # every sample's loss recorded once an epoch, the pass over all of them
        batches = [(i, losses) for e, i, losses in recorded if e == epoch]
        indices = torch.cat([i for i, _ in batches])
        assert sorted(indices.tolist()) == list(range(N))
        assert dict(zip(indices.tolist(), torch.cat([v for _, v in batches]).tolist())) == model.losses[epoch]
    assert cb.dap.done and cb.dap.samples_per_epoch == [N] * 3


def test_selective_backprop_refuses_a_step_that_does_not_call_backprop_losses(tmp_path):
    schedule = DaPSchedule(epochs=3, warmup=1, interval=1, keep=1.0)
    cb = DropAndPickCallback(num_samples=N, schedule=schedule, policy=SelectiveBackprop(), seed=0)
    with pytest.raises(ValueError, match=r"training_step left its counts untouched: get the losses from "
                                         r"droppick.backprop_losses\(cb.dap, batch_idx, sample_losses\)"):
        trainer(tmp_path, cb, max_epochs=3, enable_checkpointing=False).fit(Model(cb, dataset()))


def test_the_stacks_pages_selective_backprop_block_runs_as_written(tmp_path, monkeypatch):
    from test_library_api import image_namespace, readme_block

    monkeypatch.chdir(tmp_path)  # Lightning writes lightning_logs/ in the working directory
    ns = image_namespace(n=64)
    exec(readme_block("cb.spent"), ns)
    assert ns["cb"].dap.done and ns["cb"].dap.samples_per_epoch == [64] * 4
    # 4 batches of 16 an epoch: batches 0 and 2 back-propagate 8 of 16, 1 and 3 (the interrupt) all 16
    assert ns["cb"].spent == [{"samples_backprop": 48, "step_equivalents": 48 + FORWARD_COST * 32}] * 4


def test_ddp_ranks_keep_identical_subsets(tmp_path):
    """The example under torchrun, two CPU processes with strategy="ddp", 301 samples (padded shards)."""
    from launch import torchrun

    proc = torchrun([str(ROOT / "examples" / "lightning_dap.py"), "--devices", "2", "--strategy", "ddp",
                     "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"subsets-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0] == ranks[1]
    plan = SCHEDULE.plan(301)
    assert [len(s) for s in ranks[0]["subsets"]] == list(plan.subset_sizes)
    assert ranks[0]["compute_fraction"] == pytest.approx(plan.compute_fraction)


@pytest.mark.parametrize("case,message", [
    ("distributed_sampler", "use_distributed_sampler=False"),
    ("no_losses", "must return a dict with 'sample_losses'"),
    ("mean_loss", "one loss per sample"),
    ("no_indices", "must start with the sample indices"),
    ("max_epochs", "max_epochs=schedule.epochs"),
])
def test_misuse_is_refused_with_a_clear_message(tmp_path, case, message):
    cb = DropAndPickCallback(num_samples=N, schedule=SCHEDULE, seed=0)
    outputs = {"no_losses": lambda losses: losses.mean(),
               "mean_loss": lambda losses: {"loss": losses.mean(), "sample_losses": losses.mean()}}
    model = Model(cb, dataset(), step_output=outputs.get(case), indexed=case != "no_indices")
    kw = {"use_distributed_sampler": True} if case == "distributed_sampler" else {}
    t = trainer(tmp_path, cb, max_epochs=3 if case == "max_epochs" else SCHEDULE.epochs, enable_checkpointing=False, **kw)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        t.fit(model)


def test_the_callback_takes_the_budget_rules_arguments():
    from droppick import budget_rule

    rule = budget_rule(compute=0.25, num_samples=2000, epochs=30, warmup=4, interval=1, reuse_at=[15])
    cb = DropAndPickCallback(num_samples=2000, seed=0, **rule.engine_args)  # as docs/guide/policies.md says
    assert (cb.dap.schedule, cb.dap.policy.params()) == (rule.schedule, {"epsilon": rule.epsilon})
