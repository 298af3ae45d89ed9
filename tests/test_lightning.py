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

from droppick import DaPSchedule, IndexedDataset, keep_count  # noqa: E402
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
