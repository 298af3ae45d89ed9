"""The frontier script's logic without training: its findings are computed from the numbers, and
``--seed`` splits a part between processes without two of them touching one run."""

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import fashion_mnist_frontier as frontier  # noqa: E402  (a broken import must fail, not skip)


def row(mean: float, std: float = 0.1, seeds: int = 3, compute: float = 0.63) -> dict:
    return {"top1_mean": mean, "top1_std": std, "seeds": seeds, "compute_fraction": compute}


def frontier_rows(dap: float, others: float) -> dict:
    return {keep: {p: row(dap if p == "dap" else others) for p in frontier.POLICIES} for keep in frontier.KEEPS}


def test_findings_say_within_noise_only_when_it_is():
    full = row(90.0)
    # se of a difference of two 3-seed means with std 0.1: 0.1 * sqrt(2/3) = 0.082; 2 se = 0.163
    close = frontier.findings(frontier_rows(dap=89.9, others=89.8), full, {600: (-0.05, 0.1), 6000: (0.0, 0.1)})
    assert "(within seed noise)" in close[0] and "beats none of the others" in close[0]
    assert close[len(frontier.KEEPS)] == "- DaP is within seed noise of full at keep 0.8, 0.9, 0.95."
    assert "within two standard errors: these runs cannot confirm" in close[-2]

    far = frontier.findings(frontier_rows(dap=89.0, others=88.0), full, {600: (-1.0, 0.1), 6000: (0.0, 0.1)})
    assert "(beyond seed noise)" in far[0] and "beats random, scaled, infobatch beyond seed noise" in far[0]
    assert far[len(frontier.KEEPS)] == "- DaP is not within seed noise of full at any of these budgets."
    assert "less data per class cost DaP more, as the paper's Table 4 reports" in far[-2]

    reverse = frontier.findings(frontier_rows(dap=89.0, others=88.0), full, {600: (0.5, 0.1), 6000: (-0.5, 0.1)})
    assert "cost DaP less, unlike Table 4" in reverse[-2]


def test_redundancy_steps_say_when_the_curve_is_not_monotone():
    bent = frontier.redundancy_steps({600: (-0.28, 0.21), 2000: (-0.38, 0.08), 6000: (0.38, 0.13)})
    assert "-0.10 ± 0.22 from 600 to 2,000 (within two standard errors)" in bent
    assert "+0.76 ± 0.15 from 2,000 to 6,000 (beyond two standard errors)" in bent
    assert "does not grow with the images per class at every step" in bent
    rising = frontier.redundancy_steps({600: (-1.0, 0.1), 2000: (-0.5, 0.1), 6000: (0.0, 0.1)})
    assert rising.endswith("grows with the images per class at every step.")


def test_seed_filter_gives_processes_disjoint_runs(monkeypatch):
    trained = []
    monkeypatch.setattr(frontier, "run_all", lambda configs, folder, log: trained.append((folder, sorted(configs))))

    def runs_of(seeds):
        trained.clear()
        frontier.train_missing(["redundancy"], seeds=seeds)
        return {(folder, name) for folder, runs in trained for name in runs}

    everything = runs_of(None)
    assert {name for _, name in everything} >= {"full-seed0", "dap-seed1", "dap-seed2"}
    shares = {seed: runs_of([seed]) for seed in (0, 1, 2)}
    for seed, share in shares.items():
        assert share and all(name.endswith(f"-seed{seed}") for _, name in share), seed
    assert shares[0].isdisjoint(shares[1]) and shares[1].isdisjoint(shares[2]) and shares[0].isdisjoint(shares[2])
    assert shares[0] | shares[1] | shares[2] == everything  # three processes together train every run, once
    assert runs_of([0, 2]) == shares[0] | shares[2]


def test_main_report_says_within_noise_only_when_it_is():
    import fashion_mnist_report as report

    t2f = {p: row(90.0) for p in report.POLICIES} | {"dap": row(89.95)}
    red = {"full": row(88.0), "dap": row(87.95)}
    close = report.findings(t2f, red, gap_full=-0.05, gap_red=-0.05)
    assert "(within seed noise)" in close[1]
    assert "change of +0.00, within seed noise: these runs cannot tell" in close[-1]

    red = {"full": row(88.0), "dap": row(86.0)}
    far = report.findings(t2f | {"dap": row(89.0)}, red, gap_full=-1.0, gap_red=-2.0)
    assert "(beyond seed noise)" in far[1] and "random (63.0% compute) -1.00, beyond seed noise" in far[2]
    assert "less redundancy cost DaP more, as the paper's Table 4 reports" in far[-1]
    assert "cost DaP less, unlike" in report.findings(t2f, red, gap_full=-2.0, gap_red=-1.0)[-1]


def write_runs(folder: Path, configs: dict, top1) -> None:
    for name, cfg in configs.items():
        run = folder / "runs" / name
        run.mkdir(parents=True, exist_ok=True)
        summary = {"final_test_top1": top1(cfg), "best_test_top1": top1(cfg), "compute_fraction": 0.6,
                   "planned_compute_fraction": 0.6, "train_seconds": 1.0, "wall_seconds": 1.0}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_top1": top1(cfg), "subset_size": 10}) + "\n")


def test_report_is_written_from_the_run_folders_and_only_when_all_are_there(tmp_path, monkeypatch):
    monkeypatch.setattr(frontier, "HERE", tmp_path)
    monkeypatch.setattr(frontier, "OUT", tmp_path / "frontier")
    monkeypatch.setattr(frontier, "FOLDERS", {k: tmp_path / f"keep-{k}" for k in frontier.KEEPS})
    monkeypatch.setattr(frontier, "PER_CLASS", {pc: tmp_path / f"pc-{pc}" for pc in frontier.PER_CLASS})
    readme = tmp_path / "README.md"
    readme.write_text(f"# droppick\n\nabove\n{frontier.START}\nold table\n{frontier.END}\nbelow\n")
    monkeypatch.setattr(frontier, "README", readme)
    top1 = lambda cfg: 90.0 + 0.1 * cfg.seed - (cfg.policy != "full") * (1 - cfg.keep) * 5  # noqa: E731
    for keep in frontier.KEEPS:
        write_runs(frontier.FOLDERS[keep], frontier.frontier_configs(keep), top1)
    write_runs(tmp_path / "table2f", frontier.run_configs(frontier.BASE, ["full"], frontier.SEEDS, frontier.N), top1)
    for pc in frontier.PER_CLASS:
        if pc != 6000:
            write_runs(frontier.PER_CLASS[pc], frontier.redundancy_configs(pc), top1)
    assert frontier.write_report() is False  # the 6,000-per-class runs are missing

    write_runs(frontier.PER_CLASS[6000], frontier.redundancy_configs(6000), top1)
    assert frontier.write_report() is True
    page = (tmp_path / "frontier" / "README.md").read_text()
    assert (tmp_path / "frontier" / "frontier.png").stat().st_size > 0
    # every policy at every keep has a row; keep 0.95 loses 0.25 points, and the seeds spread 0.1
    paper_part = page.split("## Beyond the paper")[0]
    rows = [line for line in paper_part.splitlines() if line.startswith(("| 0.8 | ", "| 0.9 | ", "| 0.95 | "))]
    assert sorted(tuple(line.split(" | ")[:2]) for line in rows) == sorted(
        (f"| {k}", p) for k in ("0.8", "0.9", "0.95") for p in ("dap", "random", "scaled", "infobatch"))
    assert "| 0.95 | dap | 3 | 60.0% | 89.85 ± 0.10 | -0.25 | yes |" in page
    assert "| 6,000 | 2 |" in page and "## What the numbers say" in page
    block = readme.read_text().split(frontier.START)[1].split(frontier.END)[0]
    assert readme.read_text().endswith(f"{frontier.END}\nbelow\n") and "old table" not in block
    # at each budget all policies tie (each loses (1 - keep) * 5 points), so DaP, listed first, is best; no rs2 here
    assert "| 60.0% | dap (keep 0.95) | 89.85 ± 0.10 | 89.85 ± 0.10 | not run | 90.10 ± 0.10 | it is DaP |" in block
    assert "### Tuning on a validation split" in page and "| 0.9 | dap + floor | min_keep 0.53, p 0.571 | not trained" \
        in page  # nothing beyond the paper is trained in this folder: the page lists what is missing


def test_pooled_check_repeats_the_redundancy_verdict_with_one_spread():
    tight = {"full": row(90.0, std=0.01, seeds=2), "dap": row(90.5, std=0.01, seeds=2)}
    curve = {600: {"full": row(85.0, std=0.4), "dap": row(84.8, std=0.4)}, 6000: tight}
    sentence = frontier.pooled_check(curve)
    # pooled std: sqrt((2*0.16 + 2*0.16 + 0.0001 + 0.0001) / 6) = 0.327; se of the change
    # = 0.327 * sqrt(1/3 + 1/3 + 1/2 + 1/2) = 0.422; the change -0.7 is within 2 se
    assert "(std 0.33; the fewest seeds in a row: 2)" in sentence
    assert "is -0.70 ± 0.42, within two standard errors." in sentence
    assert "beyond two standard errors" in frontier.pooled_check(
        {600: {"full": row(85.0, std=0.1), "dap": row(84.0, std=0.1)}, 6000: tight})


def dap_compute(keep: float) -> float:
    return dataclasses.replace(frontier.BASE.schedule, keep=keep).plan(frontier.N).compute_fraction


def test_tuning_runs_hold_out_validation_at_dap_compute_and_everything_trains_only_when_asked(tmp_path, monkeypatch):
    import frontier_beyond

    monkeypatch.setattr(frontier, "OUT", tmp_path)
    trained = []
    monkeypatch.setattr(frontier, "run_all", lambda configs, folder, log: trained.append((folder, configs)))
    frontier.train_missing(["frontier", "redundancy"])
    assert not any("beyond" in str(folder) for folder, _ in trained)
    trained.clear()
    frontier.train_missing(["tune"], keeps=[0.8])
    runs = {folder.name: cfg for folder, configs in trained for cfg in configs.values()}
    grid = frontier_beyond.GRID[0.8]
    assert len(runs) == 1 + sum(map(len, grid.values()))  # DaP for reference and every candidate
    for folder, cfg in runs.items():
        assert folder.startswith("keep-0.8") and all(f.parent == tmp_path / "beyond" / "tuning" for f, _ in trained)
        assert (cfg.seed, cfg.val_samples, cfg.train_samples) == (frontier_beyond.TUNE_SEED, frontier_beyond.TUNE_VAL,
                                                                   frontier.N + frontier_beyond.TUNE_VAL)
        assert abs(cfg.schedule.plan(frontier.N).compute_fraction - dap_compute(0.8)) < 0.001
        rule, _, value = folder.removeprefix("keep-0.8").removeprefix("-").partition("-")
        if not rule:
            assert (cfg.policy, cfg.keep, cfg.min_keep) == ("dap", 0.8, 0.0)  # the paper's rule, for reference
        elif rule == "floor":
            assert cfg.policy == "dap" and cfg.min_keep == float(value) and cfg.keep < 0.8
        elif value:
            assert cfg.keep == 0.8 and cfg.min_keep == 0.0 and cfg.policy == rule
            assert float(value) == (cfg.epsilon if rule == "epsilon" else cfg.ema_beta) and float(value) in grid[rule]
    assert {cfg.min_keep for cfg in runs.values()} == {0.0, *grid["floor"]}
    trained.clear()
    frontier.train_missing(["beyond"], seeds=[0])  # nothing is tuned yet: only rs2, which has nothing to tune
    assert [(folder.name, list(configs)) for folder, configs in trained] == [("keep-0.8", ["rs2-seed0"]),
                                                                          ("keep-0.9", ["rs2-seed0"])]


def write_tuning(tuning: Path, keep: float, val_top1, test_top1=lambda c: 0.0) -> None:
    """Finished tuning runs at ``keep``, each summary with the given val and test top-1 of its candidate."""
    import frontier_beyond

    for c in frontier_beyond.tuning_candidates(frontier.BASE, frontier.N):
        if c.keep == keep:
            (name,) = frontier_beyond.tuning_configs(c, frontier.N)
            run = tuning / c.folder / "runs" / name
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps({"final_val_top1": val_top1(c), "final_test_top1": test_top1(c)}))


def test_each_rule_is_trained_at_its_best_validation_setting_whatever_the_tuning_runs_test_accuracy(tmp_path, monkeypatch):
    import frontier_beyond

    monkeypatch.setattr(frontier, "OUT", tmp_path)
    middle = {rule: values[1] for rule, values in frontier_beyond.GRID[0.8].items()}
    val = lambda c: 80.0 + (c.rule in middle and c.value == middle[c.rule])  # noqa: E731  the middle value wins
    test = lambda c: 99.0 if c.value == frontier_beyond.GRID[0.8].get(c.rule, (None,))[0] else 1.0  # noqa: E731
    write_tuning(tmp_path / "beyond" / "tuning", 0.8, val, test)
    rows = {(r.keep, r.label): r for r in frontier.beyond_rows()}
    eps, ema, floor = (rows[0.8, label] for label in ("epsilon", "ema", "dap + floor"))
    assert {c.epsilon for c in eps.configs.values()} == {middle["epsilon"]} and eps.setting.endswith(", tuned")
    assert {c.ema_beta for c in ema.configs.values()} == {middle["ema"]}
    assert {(c.min_keep, c.policy) for c in floor.configs.values()} == {(middle["floor"], "dap")}
    assert sorted(c.seed for c in floor.configs.values()) == frontier.SEEDS
    assert all(c.val_samples is None and c.train_samples == frontier.N for c in eps.configs.values())
    assert floor.folder == tmp_path / "beyond" / f"keep-0.8-floor-{middle['floor']}"
    assert rows[0.9, "epsilon"].configs is None and rows[0.9, "epsilon"].setting == "not tuned yet"

    table = frontier_beyond.tuning_section(frontier.BASE, frontier.N, tmp_path / "beyond" / "tuning", {0.8: 0.3, 0.9: 0.5})
    # one seed each: noise std 0.3 x sqrt(2) = 0.42, so +1.00 is beyond two standard errors (0.85)
    assert f"| 0.8 | epsilon | eps {middle['epsilon']} | **81.00** | +1.00 (beyond) |" in table
    assert "| 0.8 | epsilon | eps 0.1 | 80.00 | +0.00 (within) |" in table
    assert "| 0.8 | dap | the paper's rule | 80.00 |  |" in table and "| 0.9 | ema | beta 0.95 | not trained yet |  |" in table
    assert not any("99.00" in line for line in table)  # the tuning runs' test accuracy is never shown or used


def test_the_page_reports_each_finished_row_beyond_the_paper_and_lists_the_rest(tmp_path, monkeypatch):
    import frontier_beyond

    monkeypatch.setattr(frontier, "OUT", tmp_path)
    write_tuning(tmp_path / "beyond" / "tuning", 0.8, lambda c: 80.0 + (c.value or 0))  # the largest value wins
    beyond = frontier.beyond_rows()
    top1 = lambda cfg: 89.0 + 0.1 * cfg.seed + (cfg.policy == "ema") * 1.0  # noqa: E731
    for r in beyond:
        if r.keep == 0.8:
            write_runs(r.folder, r.configs, top1)
    dap = {0.8: row(88.0, compute=0.446), 0.9: row(89.0, compute=0.627)}
    lines = frontier_beyond.section(beyond, {k: {"dap": v} for k, v in dap.items()}, row(90.0), frontier.rows_of)
    table = [line for line in lines if line.startswith("| 0.8 |")]
    assert len(table) == 4 and not any(line.startswith("| 0.9 |") for line in lines)
    assert ("| 0.8 | ema | beta 0.95, tuned | 3 | 60.0% | 90.10 ± 0.10 | +0.10 (within) | +2.10 (beyond) | "
            "+1.00 (beyond) |") in table
    assert "| 0.8 | dap + floor | min_keep 0.3, p 0.397, tuned | 3 |" in table[-1]
    assert ("- At DaP keep 0.8 (44.6% compute) the best rule is ema (beta 0.95, tuned): +2.10 points over DaP "
            "(beyond two standard errors), +0.10 from full (within two standard errors).") in lines
    assert lines[-1].startswith("Not trained yet") and "rs2 (target = DaP's compute) at keep 0.9" in lines[-1]
    assert "epsilon (not tuned yet) at keep 0.9" in lines[-1]
    # ema: +2.10 over DaP and +1.00 over rs2 (89.10), each beyond two standard errors (0.08); the floor ties rs2
    assert ("- Target at 44.6% (a rule beyond the paper at least 1.0 point over DaP, beyond two standard errors of "
            "both DaP and rs2): met by ema (beta 0.95, tuned).") in lines


def test_the_targets_are_met_only_beyond_noise():
    import frontier_beyond

    def done(label: str, r: dict) -> tuple:
        return frontier_beyond.Row(0.8, label, "s", {}, None), r

    paper, full = {"dap": row(86.8, std=0.3)}, row(88.95, std=0.06)
    noisy = frontier_beyond.verdict(0.8, [done("rs2", row(87.0)), done("ema", row(87.9, std=1.0))], paper, full)
    assert noisy.endswith("not met by any rule trained here.")  # +1.1 over DaP, but within the noise of ema's seeds
    clear = frontier_beyond.verdict(0.8, [done("rs2", row(87.0)), done("ema", row(87.9))], paper, full)
    assert clear.endswith("met by ema (s).")
    short = frontier_beyond.verdict(0.8, [done("rs2", row(87.0)), done("ema", row(87.7))], paper, full)
    assert short.endswith("not met by any rule trained here.")  # beyond noise, but 0.9 < 1.0 point over DaP
    near = frontier_beyond.verdict(0.9, [done("rs2", row(88.75, std=0.2))], {"dap": row(88.57, std=0.13)}, full)
    assert near.endswith("met by rs2 (s).")  # -0.20 from full with se 0.12: within two standard errors
    assert frontier_beyond.verdict(0.95, [], paper, full) is None


def test_the_readme_table_names_a_rule_beyond_the_paper_where_it_scores_best(tmp_path, monkeypatch):
    import frontier_beyond

    monkeypatch.setattr(frontier, "OUT", tmp_path)
    write_tuning(tmp_path / "beyond" / "tuning", 0.8, lambda c: 80.0)
    beyond = [r for r in frontier.beyond_rows() if r.keep == 0.8 and r.label in ("rs2", "dap + floor")]
    for r in beyond:
        write_runs(r.folder, r.configs, lambda cfg: 88.0 + cfg.min_keep * 4 + 0.1 * cfg.seed)  # floor 0.15: 88.7
    paper = {keep: {"dap": row(87.0 + keep, compute=0.446), "random": row(87.1, compute=0.446)} for keep in (0.8, 0.9)}
    table = frontier_beyond.budget_table(paper, row(90.0), frontier.beyond_rows(), frontier.rows_of)
    assert table[2] == ("| 44.6% | dap + floor (min_keep 0.15, p 0.782, tuned) | 88.70 ± 0.10 | 87.80 ± 0.10 | "
                        "88.10 ± 0.10 | 90.00 ± 0.10 | +0.90 (beyond noise) |")
    assert table[3] == ("| 44.6% | dap (keep 0.9) | 87.90 ± 0.10 | 87.90 ± 0.10 | not run | 90.00 ± 0.10 | "
                        "it is DaP |")


def test_all_data_rows_take_the_rule_validation_ranks_first_at_44_percent(tmp_path, monkeypatch):
    import frontier_beyond

    monkeypatch.setattr(frontier, "OUT", tmp_path)
    assert [r.configs is None for r in frontier.all_data_rows()] == [False, False, True]  # nothing tuned yet
    write_tuning(tmp_path / "beyond" / "tuning", 0.8, lambda c: 80.0 + (c.rule == "ema") * (c.value or 0))
    dap, rs2, best = frontier.all_data_rows()
    assert (best.label, best.setting) == ("ema", "beta 0.95, tuned")  # ema's best setting, not just ema's
    for r in (dap, rs2, best):
        assert r.folder.parent == tmp_path / "beyond" / "all-60000"
        assert [(c.seed, c.train_samples, c.keep) for c in r.configs.values()] == [(0, None, 0.8), (1, None, 0.8)]
    for r in (dap, rs2):
        write_runs(r.folder, r.configs, lambda cfg: 91.0 + (cfg.policy == "dap") * 0.5)
    lines = frontier_beyond.all_data_section([dap, rs2, best], row(91.0, seeds=2), frontier.rows_of)
    assert "| dap | the paper's rule | 2 | 60.0% | 91.50 ± 0.00 | +0.50 (beyond) |  | +0.50 (beyond) |" in lines
    assert lines[-1] == "Not trained yet (`fashion_mnist_frontier.py --part all-data`): ema (beta 0.95, tuned)."
    write_runs(best.folder, best.configs, lambda cfg: 90.0)
    lines = frontier_beyond.all_data_section([dap, rs2, best], row(91.0, seeds=2), frontier.rows_of)
    assert lines[-1] == ("- On all 60,000 images at 44.6% compute the best is dap (the paper's rule): +0.50 over rs2 "
                         "(beyond two standard errors), +1.50 over ema (beyond two standard errors).")
