"""Finding wrong labels (issue 32, part 3): droppick's suspects, read from one run (DaP or full), against cleanlab
on out-of-sample probabilities from K-fold cross-validation of the same model. From the repository root:

    .venv/bin/python experiments/noise_detection.py            # train what is missing, then write the page
    .venv/bin/python experiments/noise_detection.py --report   # only rewrite the page

Setting: the small CNN on a seeded class-stratified 4,000-image slice of Fashion-MNIST, 30 epochs,
W = 4, I = 1, R = {15}, LR /10 after 15 and 22, seed 0; the labels as they are and with 10%, 20% and 40%
symmetric and 20% pairs noise (``--label-noise``). droppick, from two kinds of run: the paper's DaP at
keep 0.8 (44.6% compute), and full training (all data every epoch: ``--policy full``, whose records
droppick keeps too), one run per signal of each; a sample's score is the mean over the epochs it
trained in of what the run records (``DropAndPick.suspects``): the loss (the default), EL2N or the
margin (``--score``, whose records DaP also ranks by, so each signal is its own run; a full run
trains alike whatever it records). How many it flags, two readings:
the samples whose mean score is worse than a uniform guess's (``uniform_guess``: ln 10 for the loss),
or the top M, M the samples its final model (one plain forward pass) labels otherwise than given;
the one with the better mean F1 over the validation settings (the chosen signal's) is the table's.
The signal droppick recommends (for each kind of run)
is chosen on two validation settings of its own, symmetric 20% and pairs 20% on another seeded slice
(seed 1: other images, other flips, another initialisation), by the mean of its AUROC over both (a
user knows neither the rate nor the kind of their noise); the rows at seed 0 report every signal.
cleanlab 2.9, as its documentation recommends: five runs of all
data, each holding one fold out (``cv_folds`` 5), give every sample an out-of-sample probability;
``cleanlab.filter.find_label_issues`` flags, ``cleanlab.rank.get_label_quality_scores`` ranks.
Precision, recall and F1 are of the flagged set against the injected flips, AUROC of the ranking.
Compute: training samples over one all-data run's (cleanlab: 5 x 0.8).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

from _report import log, machine, setting, utc_now
from droppick.report.compare import run_all
from droppick.report.suspects import load_trainer, probabilities
from droppick.suspects import uniform_guess
from droppick.train.config import TrainConfig
from droppick.train.rundir import code_version

OUT = Path(__file__).resolve().parent / "fashion-mnist" / "noise" / "detection"
SLICE, FOLDS = 4000, 5
GALLERY = "clean_suspects.png"  # on the page's folder
MEASURED = "measured.json"  # per setting, what the page reads: checkpoints are not committed, this is
NOISE = [("clean", 0.0, "symmetric"), ("symmetric 10%", 0.1, "symmetric"), ("symmetric 20%", 0.2, "symmetric"),
         ("symmetric 40%", 0.4, "symmetric"), ("pairs 20%", 0.2, "pairs")]
BASE = TrainConfig(dataset="fashion-mnist", model="small_cnn", train_samples=SLICE, batch_size=128, lr=0.05,
                   momentum=0.9, weight_decay=5e-4, epochs=30, warmup=4, interval=1, keep=0.8, reuse_at=[15],
                   lr_milestones=[15, 22], device="cpu", eval_batch_size=250, eval_every=10, seed=0)


SIGNALS = {"loss": "loss", "el2n": "EL2N", "margin": "margin"}  # what each run records, as the page names it
RUNS = {"dap": "DaP run", "full": "full run"}  # the runs droppick reads its suspects from, by policy
VALIDATIONS = [("validation: symmetric 20%, slice seed 1", 0.2, "symmetric", 1),  # choose the signal
               ("validation: pairs 20%, slice seed 1", 0.2, "pairs", 1)]


def run_name(signal: str, kind: str = "dap") -> str:
    return f"{kind}-{signal}" if kind != "dap" else "dap" if signal == "loss" else f"dap-{signal}"


def label(signal: str, kind: str = "dap") -> str:
    """A droppick row's method, as the page names it."""
    return f"droppick ({RUNS[kind]}, mean {SIGNALS[signal]})"


def folder(name: str) -> Path:
    return OUT / name.replace(" ", "-").replace("%", "")


def configs(rate: float, kind: str, seed: int = BASE.seed, folds: bool = True) -> dict[str, TrainConfig]:
    """droppick's runs (one per kind of run and signal) and cleanlab's fold runs at one noise setting, by run name."""
    noisy = BASE.to_dict() | {"label_noise": rate, "noise_kind": kind, "seed": seed}
    out = {run_name(s, k): TrainConfig.from_dict(noisy | {"policy": k, "score": s}) for k in RUNS for s in SIGNALS}
    if folds:
        out |= {f"full-fold{k}": TrainConfig.from_dict(noisy | {"policy": "full", "cv_folds": FOLDS, "cv_fold": k})
                for k in range(FOLDS)}
    return out


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> Optional[float]:
    """Area under the ROC curve of ``scores`` (higher: more likely positive), ties counted half
    (the Mann-Whitney statistic); None without both classes."""
    pos, neg = int(positive.sum()), int((~positive).sum())
    if not pos or not neg:
        return None
    ranks = torch.empty(len(scores), dtype=torch.float64)
    order = scores.double().argsort()
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def scores_of(flagged: torch.Tensor, ranking: torch.Tensor, flipped: torch.Tensor, compute: float) -> dict:
    tp = int((flagged & flipped).sum())
    precision = tp / int(flagged.sum()) if flagged.any() else None
    recall = tp / int(flipped.sum()) if flipped.any() else None
    f1 = None if not precision or not recall else 2 * precision * recall / (precision + recall)
    return {"flagged": int(flagged.sum()), "precision": precision, "recall": recall, "f1": f1,
            "auroc": auroc(ranking, flipped), "compute": compute}


def flipped_mask(split) -> torch.Tensor:
    mask = torch.zeros(len(split), dtype=torch.bool)
    mask[split.flipped] = True
    return mask


COUNTS = {"uniform": "mean score worse than a uniform guess", "disagree": "the final model's disagreements"}


def droppick_row(trainer, compute: float) -> dict:
    """The suspects ranking of the DaP run, and per reading of ``COUNTS`` the top M it flags: M the
    samples scoring worse than a uniform guess, or those its final model labels otherwise than given."""
    split = trainer.train_split
    order, scores = trainer.dap.suspects(len(split))
    ranking = torch.empty(len(split))
    ranking[order] = scores
    sizes = {"uniform": trainer.dap.loss_stats.above(uniform_guess(trainer.cfg.score, split.num_classes)).numel(),
             "disagree": int((probabilities(trainer).argmax(dim=1) != split.labels).sum())}
    flipped, row = flipped_mask(split), {}
    for count, m in sizes.items():
        flagged = torch.zeros(len(split), dtype=torch.bool)
        flagged[order[:m]] = True
        row[count] = scores_of(flagged, ranking, flipped, compute)
    return {"auroc": row["uniform"]["auroc"], "compute": compute,
            "counts": {count: {k: v for k, v in r.items() if k not in ("auroc", "compute")} for count, r in row.items()}}


def shown(row: dict, count: Optional[str]) -> dict:
    """A row as the table shows it: droppick's with the flagged set of reading ``count``."""
    return row | row["counts"][count or "uniform"] if "counts" in row else row


def cleanlab_issues(runs: list[Path], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cleanlab's flagged mask and label quality (low: suspect) from the fold runs' out-of-sample probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from droppick.data.validation import fold_indices

    probs = torch.zeros(len(labels), int(labels.max()) + 1)
    for k, run in enumerate(runs):
        trainer, _ = load_trainer(run)
        _, held = fold_indices(labels, k, FOLDS, BASE.seed)
        probs[held] = probabilities(trainer, trainer.val_split)
    issues = torch.as_tensor(find_label_issues(labels.numpy(), probs.numpy()))
    return issues, torch.as_tensor(get_label_quality_scores(labels.numpy(), probs.numpy()))


def cleanlab_row(issues: torch.Tensor, quality: torch.Tensor, flipped: torch.Tensor) -> dict:
    return scores_of(issues, -quality, flipped, FOLDS * (FOLDS - 1) / FOLDS)


def clean_gallery(run: Path, quality: torch.Tensor, path: Path, k: int = 16, compared: int = 100) -> str:
    """Draw the clean labels' top ``k`` suspects of droppick's run (first rows) and of cleanlab's
    ``quality`` (last rows); return the sentence saying how many of the two top ``compared`` are the
    same samples."""
    from droppick.report.inspection import FASHION_MNIST_CLASSES as NAMES, _thumbnails, write_grid

    trainer, _ = load_trainer(run)
    split = trainer.train_split
    ours_all = trainer.dap.suspects(compared)[0]
    theirs_all = quality.argsort()[:compared]
    ours, theirs = ours_all[:k], theirs_all[:k]
    shared = len(set(ours_all.tolist()) & set(theirs_all.tolist()))
    captions = [f"{who} #{int(i)}: {NAMES[int(split.labels[i])]}" for who, picked in (("droppick", ours),
                                                                                     ("cleanlab", theirs))
                for i in picked]
    write_grid(torch.cat([_thumbnails(split, ours), _thumbnails(split, theirs)]), captions, path,
               f"clean labels, the top {k} suspects: droppick's ({run.name}, first {k // 8} rows), then cleanlab's")
    return (f"Of droppick's {compared} top suspects on the clean labels ({run.name}), {shared} are among "
            f"cleanlab's {compared}.")


def droppick_rows(paths: dict[str, Path]) -> dict[str, dict]:
    """Each kind of run's and signal's row (``paths``: run name -> run folder)."""
    rows = {}
    for kind in RUNS:
        for signal in SIGNALS:
            trainer, _ = load_trainer(paths[run_name(signal, kind)])
            compute = json.loads((paths[run_name(signal, kind)] / "summary.json").read_text())["compute_fraction"]
            rows[label(signal, kind)] = droppick_row(trainer, compute)
    return rows


def chosen_count(rows: dict, signal: Optional[str], kind: str = "dap") -> Optional[str]:
    """The reading of ``COUNTS`` with the best mean F1 of ``signal`` over the validation settings (the
    first on a tie); None until the signal is chosen."""
    if signal is None:
        return None
    f1 = [sum(rows[name][label(signal, kind)]["counts"][count]["f1"] or 0.0 for name, *_ in VALIDATIONS) for count in COUNTS]
    return list(COUNTS)[f1.index(max(f1))]


def chosen_signal(rows: dict, kind: str = "dap") -> Optional[str]:
    """The signal with the best mean AUROC over the validation settings (the first of SIGNALS on a
    tie); None until every validation setting is measured."""
    if any(name not in rows for name, *_ in VALIDATIONS):
        return None
    aurocs = [sum(rows[name][label(signal, kind)]["auroc"] or 0.0 for name, *_ in VALIDATIONS) for signal in SIGNALS]
    return list(SIGNALS)[aurocs.index(max(aurocs))]


def verdicts(rows: dict, chosen: Optional[str], kind: str = "dap") -> list[str]:
    """The target per noise setting: the chosen signal's AUROC, from a run of ``kind``, within 0.02 of
    cleanlab's or above, at no more than a quarter of its compute."""
    out = []
    for name, methods in rows.items():
        ours, theirs = methods.get(label(chosen, kind) if chosen else ""), methods.get("cleanlab (5-fold)")
        if ours is None or theirs is None or None in (ours["auroc"], theirs["auroc"]):
            continue
        gap, share = ours["auroc"] - theirs["auroc"], ours["compute"] / theirs["compute"]
        met = gap >= -0.02 and share <= 0.25
        out.append(f"- {name}, from a {RUNS[kind]} ({SIGNALS[chosen]}): droppick's AUROC {gap:+.3f} against cleanlab's, "
                   f"at {share:.2f} of its compute: " + ("met." if met else "not met."))
    return out or [f"- No noise setting has both methods trained yet ({RUNS[kind]})."]


def count_table(rows: dict, signal: Optional[str], kind: str = "dap") -> list[str]:
    """How many to flag, each reading of ``COUNTS`` on the validation settings (the chosen signal's runs)."""
    if signal is None:
        return []
    cell = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"How many to flag, on the validation settings ({RUNS[kind]}, {SIGNALS[signal]}):", "",
             "| labels | flagged | samples flagged | precision | recall | F1 |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name, *_ in VALIDATIONS:
        for count, words in COUNTS.items():
            r = rows[name][label(signal, kind)]["counts"][count]
            lines.append(f"| {name} | {words} | {r['flagged']} | {cell(r['precision'])} | {cell(r['recall'])} | "
                         f"{cell(r['f1'])} |")
    return lines + [""]


def write_page(rows: dict, overlap: str = "") -> Path:
    cell = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    chosen = {kind: chosen_signal(rows, kind) for kind in RUNS}
    count = {kind: chosen_count(rows, chosen[kind], kind) for kind in RUNS}
    kind_of = {label(signal, kind): kind for kind in RUNS for signal in SIGNALS}
    lines = ["# Finding wrong labels: droppick's suspects against cleanlab", "",
             f"Generated by `{' '.join([Path(sys.executable).name, *sys.argv])}` (from the repository root) on "
             f"{utc_now()} UTC at commit {code_version()['git_commit']}; machine: {machine()}.", "",
             setting(__doc__), "",
             "Signal chosen on the validation settings (by mean AUROC): "
             + "; ".join(f"from a {RUNS[kind]}, {SIGNALS[chosen[kind]] if chosen[kind] else 'not trained yet'}"
                         for kind in RUNS) + ".", ""]
    for kind in RUNS:
        lines += verdicts(rows, chosen[kind], kind)
    lines += [""]
    for kind in RUNS:
        lines += count_table(rows, chosen[kind], kind)
    lines += ["Flagged (precision, recall, F1): droppick's "
              + ", ".join(f"{COUNTS[count[kind] or 'uniform']} ({RUNS[kind]})" for kind in RUNS)
              + "; cleanlab's `find_label_issues`.", "",
              "| labels | method | compute | flagged | precision | recall | F1 | AUROC |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, methods in rows.items():
        for method, r in methods.items():
            r = shown(r, count.get(kind_of.get(method)))
            lines.append(f"| {name} | {method} | {r['compute']:.2f} | {r['flagged']} | {cell(r['precision'])} | "
                         f"{cell(r['recall'])} | {cell(r['f1'])} | {cell(r['auroc'])} |")
    if (OUT / GALLERY).exists():
        lines += ["", f"The clean labels' top suspects, droppick's beside cleanlab's. {overlap}", "",
                  f"![clean suspects]({GALLERY})"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    return OUT / "README.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="only rewrite the page from the runs that exist")
    args = p.parse_args()
    settings = [(name, configs(rate, kind, seed, folds=False)) for name, rate, kind, seed in VALIDATIONS]
    settings += [(name, configs(rate, kind)) for name, rate, kind in NOISE]
    rows, overlap = {}, ""
    for name, runs in settings:
        if not args.report:
            run_all(runs, folder(name), log=log)
        paths = {run: folder(name) / "runs" / run for run in runs}
        if not all((path / "summary.json").exists() for path in paths.values()):
            continue
        cache = folder(name) / MEASURED
        if all(any(path.glob("checkpoint-*.pt")) for path in paths.values()):
            cache.write_text(json.dumps(measure(name, paths, chosen_signal(rows)), indent=1))
        elif not cache.exists():
            raise SystemExit(f"{folder(name)}: its runs' checkpoints are gone (the repository does not keep them) and "
                             f"{MEASURED} is missing: delete the runs folder and train them again")
        measured = json.loads(cache.read_text())
        rows[name], overlap = measured["rows"], measured["overlap"] or overlap
    log(f"page written to {write_page(rows, overlap)}")


def measure(name: str, paths: dict[str, Path], chosen: Optional[str]) -> dict:
    """One setting's rows (droppick's signals and cleanlab's) from its runs' checkpoints, and for the
    clean labels the gallery and its overlap sentence."""
    rows, overlap = droppick_rows(paths), ""
    folds = [path for run, path in paths.items() if run.startswith("full-fold")]
    if folds:  # a DaP run holds nothing out: its split is the whole slice
        split = load_trainer(paths["dap"])[0].train_split
        issues, quality = cleanlab_issues(folds, split.labels)  # once: the row and the gallery read it
        rows["cleanlab (5-fold)"] = cleanlab_row(issues, quality, flipped_mask(split))
        if name == "clean":
            overlap = clean_gallery(paths[run_name(chosen or "loss")], quality, OUT / GALLERY)
    return {"rows": rows, "overlap": overlap}


if __name__ == "__main__":
    main()
