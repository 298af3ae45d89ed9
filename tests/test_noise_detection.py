"""The detection experiment without its real runs: the AUROC it reports is the Mann-Whitney statistic,
the folds give every sample one out-of-sample probability, and the page is written from tiny runs."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import noise_detection as nd  # noqa: E402  (a broken import must fail, not skip)
from droppick.data.validation import fold_indices  # noqa: E402
from droppick.train.config import TrainConfig  # noqa: E402


def test_auroc_is_the_share_of_positive_negative_pairs_ranked_right_ties_half():
    positive = torch.tensor([True, True, False, False])
    assert nd.auroc(torch.tensor([4.0, 3.0, 2.0, 1.0]), positive) == 1.0
    assert nd.auroc(torch.tensor([1.0, 2.0, 3.0, 4.0]), positive) == 0.0
    assert nd.auroc(torch.tensor([3.0, 1.0, 2.0, 0.0]), positive) == 0.75  # 3 of the 4 pairs in order
    assert nd.auroc(torch.ones(4), positive) == 0.5
    assert nd.auroc(torch.ones(4), torch.zeros(4, dtype=torch.bool)) is None


def test_the_folds_hold_every_sample_out_exactly_once_with_each_class_spread():
    labels = torch.arange(5).repeat_interleave(torch.tensor([10, 11, 12, 13, 14]))
    held = [fold_indices(labels, k, 5, seed=3)[1] for k in range(5)]
    assert torch.equal(torch.cat(held).sort().values, torch.arange(len(labels)))
    for h in held:  # each class's 10..14 members dealt out in turn: 2 or 3 of each in every fold
        assert set(torch.bincount(labels[h], minlength=5).tolist()) <= {2, 3}
    with pytest.raises(ValueError, match="cv_folds"):
        TrainConfig(cv_folds=5, cv_fold=5)


def test_the_page_is_written_from_tiny_runs_of_each_method(fake_fashion, tmp_path, monkeypatch):
    monkeypatch.setattr(nd, "OUT", tmp_path)
    monkeypatch.setattr(nd, "BASE", TrainConfig.from_dict(nd.BASE.to_dict() | {
        "data_dir": str(fake_fashion), "train_samples": 200, "epochs": 3, "warmup": 1, "reuse_at": [], "lr_milestones": [],
        "batch_size": 50, "eval_every": 3}))
    monkeypatch.setattr(nd, "NOISE", [("clean", 0.0, "symmetric"), ("symmetric 20%", 0.2, "symmetric")])
    monkeypatch.setattr(nd, "SIGNALS", {s: nd.SIGNALS[s] for s in ("loss", "margin")})  # two signals: cheaper
    monkeypatch.setattr(sys, "argv", ["noise_detection.py"])
    nd.main()
    page = (tmp_path / "README.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| symmetric 20% |")]
    assert [row.split(" | ")[1] for row in rows] == [nd.label("loss"), nd.label("margin"), nd.label("loss", "full"),
                                                     nd.label("margin", "full"), "cleanlab (5-fold)"]
    compute = [float(row.split(" | ")[2]) for row in rows]
    assert compute[4] == 4.0 and 0.5 < compute[0] == compute[1] < 1.0 and compute[2] == compute[3] == 1.0
    assert all(0.0 <= float(row.split(" | ")[-1].strip(" |")) <= 1.0 for row in rows)  # an AUROC each
    # the validation settings (another slice seed, symmetric and pairs) have droppick's signals only, and
    # choose among them by their mean AUROC; then how many to flag by the chosen signal's mean F1
    chosen, flagged = [], []
    for kind in nd.RUNS:
        total, f1 = [0.0, 0.0], {}
        for name, *_ in nd.VALIDATIONS:
            validation = [line.split(" | ") for line in page.splitlines()
                          if line.startswith(f"| {name} | droppick ({nd.RUNS[kind]}")]
            assert [row[1] for row in validation] == [nd.label("loss", kind), nd.label("margin", kind)]
            total = [t + float(row[-1].strip(" |")) for t, row in zip(total, validation)]
        best = ["loss", "margin"][total.index(max(total))]
        chosen.append(f"from a {nd.RUNS[kind]}, {best}")
        table = page.split(f"How many to flag, on the validation settings ({nd.RUNS[kind]}, {best}):", 1)[1]
        for name, *_ in nd.VALIDATIONS:
            for count, words in nd.COUNTS.items():
                row = next(line.split(" | ") for line in table.splitlines() if line.startswith(f"| {name} | {words} |"))
                f1[count] = f1.get(count, 0.0) + float(row[-1].strip(" |") or 0)
        count = max(nd.COUNTS, key=lambda c: f1[c])  # max keeps the first on a tie, as chosen_count
        flagged.append(f"{nd.COUNTS[count]} ({nd.RUNS[kind]})")
        # a verdict where flips exist (clean labels have no AUROC)
        [verdict] = [line for line in page.splitlines() if line.startswith(f"- symmetric 20%, from a {nd.RUNS[kind]} ")]
        assert verdict.endswith(("met.", "not met.")) and f"({best}): droppick's AUROC" in verdict
    assert f"Signal chosen on the validation settings (by mean AUROC): {'; '.join(chosen)}." in page
    assert f"Flagged (precision, recall, F1): droppick's {', '.join(flagged)};" in page
    assert f"![clean suspects]({nd.GALLERY})" in page
    assert (tmp_path / nd.GALLERY).stat().st_size > 0
    assert "Of droppick's 100 top suspects on the clean labels" in page and "are among cleanlab's 100." in page
    # without the checkpoints (a fresh clone: they are not committed) --report writes the same page from
    # what each setting measured, and a setting without that either says what to do
    for checkpoint in tmp_path.rglob("checkpoint-*.pt"):
        checkpoint.unlink()
    monkeypatch.setattr(sys, "argv", ["noise_detection.py", "--report"])
    nd.main()
    assert (tmp_path / "README.md").read_text().split("\n", 3)[3] == page.split("\n", 3)[3]  # all but the date line
    (nd.folder("clean") / nd.MEASURED).unlink()
    with pytest.raises(SystemExit, match="checkpoints are gone.*train them again"):
        nd.main()


def test_the_detection_target_needs_the_auroc_and_a_quarter_of_the_compute():
    rows = lambda ours, compute: {"s": {nd.label("loss"): {"auroc": ours, "compute": compute},  # noqa: E731
                                        nd.label("loss", "full"): {"auroc": ours, "compute": compute},
                                        "cleanlab (5-fold)": {"auroc": 0.95, "compute": 4.0}}}
    assert nd.verdicts(rows(0.94, 0.45), "loss") == ["- s, from a DaP run (loss): droppick's AUROC -0.010 against "
                                                     "cleanlab's, at 0.11 of its compute: met."]
    assert nd.verdicts(rows(0.94, 1.0), "loss", "full") == ["- s, from a full run (loss): droppick's AUROC -0.010 "
                                                            "against cleanlab's, at 0.25 of its compute: met."]
    assert nd.verdicts(rows(0.92, 0.45), "loss")[0].endswith("not met.")  # 0.03 under
    assert nd.verdicts(rows(0.99, 1.2), "loss")[0].endswith("not met.")  # above a quarter of cleanlab's compute
    assert nd.verdicts(rows(0.99, 0.45), None) == ["- No noise setting has both methods trained yet (DaP run)."]


def test_the_signal_is_chosen_by_mean_validation_auroc_first_on_a_tie():
    setting = lambda aurocs: {nd.label(s): {"auroc": a} for s, a in aurocs.items()}  # noqa: E731
    (symmetric, *_), (pairs, *_) = nd.VALIDATIONS
    assert nd.chosen_signal({}) is None
    assert nd.chosen_signal({symmetric: setting({"loss": 0.9, "el2n": 0.9, "margin": 0.9})}) is None  # pairs missing
    # el2n best on the symmetric setting, but the margin best on the mean of both
    rows = {symmetric: setting({"loss": 0.97, "el2n": 0.98, "margin": 0.97}),
            pairs: setting({"loss": 0.75, "el2n": 0.80, "margin": 0.87})}
    assert nd.chosen_signal(rows) == "margin"
    assert nd.chosen_signal({name: setting(dict.fromkeys(nd.SIGNALS, 0.8)) for name in (symmetric, pairs)}) == "loss"


def test_the_flagged_count_is_chosen_by_the_signals_mean_validation_f1():
    counts = lambda uniform, disagree: {nd.label("el2n"): {"counts": {"uniform": {"f1": uniform},  # noqa: E731
                                                                         "disagree": {"f1": disagree}}}}
    (symmetric, *_), (pairs, *_) = nd.VALIDATIONS
    assert nd.chosen_count({symmetric: counts(0.85, 0.55), pairs: counts(0.23, 0.55)}, "el2n") == "disagree"
    assert nd.chosen_count({symmetric: counts(0.85, 0.55), pairs: counts(0.40, 0.55)}, "el2n") == "uniform"
    assert nd.chosen_count({symmetric: counts(0.5, 0.5), pairs: counts(0.5, 0.5)}, "el2n") == "uniform"  # a tie
    assert nd.chosen_count({}, None) is None
