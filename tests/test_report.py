"""sparsecse-report on a synthetic Hydra multirun: grouping, statistics, failed runs, files, CLI errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from sparsecse.cli.report import main
from sparsecse.core.errors import ConfigError
from sparsecse.report import (
    Row,
    Run,
    format_report,
    group_rows,
    load_sweep,
    run_metrics,
    run_sparsity,
    sort_key,
    varying_keys,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEAD = "pruning.head_sparsity"
# head sparsity -> per seed: (sts_avg, transfer_avg or None, alignment, uniformity)
SCORES = {
    "0": [(70.0, 80.0, 0.20, -2.0), (72.0, 81.0, 0.22, -2.2), (77.0, 85.0, 0.24, -2.4)],
    "0.3": [(60.0, None, 0.30, -1.5), (62.0, None, 0.32, -1.6), (64.0, None, 0.34, -1.7)],
}
PARAMETERS = {"0": (22_700_000, 0.0), "0.3": (18_000_000, 0.207)}


def write_run(run_dir: Path, overrides: list[str], results: dict | str | None = None, log: str = "") -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / ".hydra" / "hydra.yaml").write_text("hydra: {}\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if log:
        (run_dir / "train.log").write_text(log)
    if results is not None:
        text = results if isinstance(results, str) else json.dumps(results)
        (run_dir / "results.json").write_text(text)
    return run_dir


def results_for(head: str, sts_avg: float, transfer_avg: float | None, align: float, uniform: float) -> dict:
    after = {"stsb": sts_avg + 1, "sts_avg": sts_avg, "alignment": align, "uniformity": uniform}
    if transfer_avg is not None:
        after |= {"mr": transfer_avg - 1, "transfer_avg": transfer_avg}
    parameters, parameter_sparsity = PARAMETERS[head]
    return {
        "before": {"stsb": 10.0, "sts_avg": 10.0, "alignment": 9.0, "uniformity": 9.0},
        "after": after,
        "sparsity": {"prune/head_sparsity": float(head)},
        "parameters": parameters,
        "parameter_sparsity": parameter_sparsity,
    }


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """2 settings x 3 seeds under unpredictable subdir names (some nested), a crashed run, a broken JSON."""
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text("hydra: {}\n")
    for head, seeds in SCORES.items():
        for seed, scores in enumerate(seeds, start=1):
            subdir = root / f"job-{head}-{seed}" if seed < 3 else root / "nested" / f"h{head}s{seed}"
            overrides = ["experiment=sweep_demo", f"{HEAD}={head}", f"seed={seed}"]
            write_run(subdir, overrides, results_for(head, *scores))
    crash_log = "step 10\nRuntimeError: CUDA out of memory\n\n"
    write_run(root / "crashed", ["experiment=sweep_demo", f"{HEAD}=0.5", "seed=1"], log=crash_log)
    write_run(root / "broken", ["experiment=sweep_demo", f"{HEAD}=0.5", "seed=2"], results='{"after": {')
    return root


def test_runs_are_grouped_by_setting_with_mean_and_sample_std(sweep_dir):
    sweep = load_sweep(sweep_dir)
    assert len(sweep.runs) == 8 and sweep.varying == [HEAD] and sweep.constant == {"experiment": "sweep_demo"}
    assert [row.label for row in sweep.rows] == [f"{HEAD}=0", f"{HEAD}=0.3"]
    dense, sparse = sweep.rows
    assert (dense.n, sparse.n) == (3, 3)
    assert dense.stats["sts_avg"] == pytest.approx((73.0, math.sqrt(13)))  # 70, 72, 77
    assert dense.stats["stsb"] == pytest.approx((74.0, math.sqrt(13)))  # "after", not "before"
    assert dense.stats["transfer_avg"] == pytest.approx((82.0, math.sqrt(7)))  # 80, 81, 85
    assert sparse.stats["sts_avg"] == pytest.approx((62.0, 2.0))
    assert sparse.stats["alignment"] == pytest.approx((0.32, 0.02))
    assert sparse.stats["uniformity"] == pytest.approx((-1.6, 0.1))
    assert sparse.stats["parameters"] == pytest.approx((18e6, 0.0))
    assert "transfer_avg" not in sparse.stats


def test_failed_runs_are_listed_with_their_overrides_and_reason(sweep_dir):
    failed = {run.path.name: run for run in load_sweep(sweep_dir).failed}
    assert set(failed) == {"crashed", "broken"}
    assert failed["crashed"].reason == "no results.json; last log line: RuntimeError: CUDA out of memory"
    assert failed["broken"].reason.startswith("unreadable results.json: Expecting")
    assert failed["crashed"].overrides == {"experiment": "sweep_demo", HEAD: "0.5", "seed": "1"}
    section = format_report(load_sweep(sweep_dir)).split("## Failed or missing runs (2)")[1]
    assert f"`{sweep_dir / 'crashed'}` (experiment=sweep_demo {HEAD}=0.5 seed=1): no results.json" in section


def test_csv_parses_back_with_one_row_per_setting(sweep_dir):
    write_report(load_sweep(sweep_dir))
    with (sweep_dir / "report.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:5] == ["setting", HEAD, "n", "stsb_mean", "stsb_std"]  # sts12 is absent
    assert {"transfer_avg_mean", "alignment_std", "parameter_sparsity_mean"} <= set(reader.fieldnames)
    expected = [(f"{HEAD}=0", "0", "3"), (f"{HEAD}=0.3", "0.3", "3")]
    assert [(r["setting"], r[HEAD], r["n"]) for r in rows] == expected
    assert float(rows[0]["sts_avg_mean"]) == 73.0
    assert float(rows[0]["sts_avg_std"]) == pytest.approx(3.6056, abs=1e-4)
    assert float(rows[1]["parameter_sparsity_mean"]) == pytest.approx(0.207)
    assert rows[1]["transfer_avg_mean"] == rows[1]["transfer_avg_std"] == ""


def test_report_md_has_formatted_cells_and_the_failed_section(sweep_dir):
    write_report(load_sweep(sweep_dir))
    text = (sweep_dir / "report.md").read_text()
    scores, analysis = ["73.00 ± 3.61", "62.00 ± 2.00", "82.00 ± 2.65"], ["0.320 ± 0.020", "-1.600 ± 0.100"]
    cells = [*scores, *analysis, "18.00 ± 0.00"]  # the last: parameters in millions
    assert all(f" {cell} |" in text for cell in cells)
    assert "| setting" in text and "STS avg" in text and "## Failed or missing runs (2)" in text


def test_figures_are_valid_pngs(sweep_dir, tmp_path):
    written, notes = write_report(load_sweep(sweep_dir), tmp_path / "out")
    names = ["report.md", "report.csv", "align_uniform.png", "sparsity_sts.png", "sparsity_transfer.png"]
    assert [p.name for p in written] == names and notes == []
    for path in written[2:]:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert matplotlib.image.imread(path).ndim == 3


def test_a_figure_without_data_is_skipped_with_a_note(tmp_path):
    write_run(tmp_path / "a", ["seed=1"], {"after": {"sts_avg": 70.0}})
    written, notes = write_report(load_sweep(tmp_path))
    assert [p.name for p in written] == ["report.md", "report.csv", "sparsity_sts.png"]
    assert notes == [
        "skipped align_uniform.png: no finished run has alignment and uniformity",
        "skipped sparsity_transfer.png: no finished run has transfer_avg",
    ]


def test_a_single_seed_has_no_std(tmp_path):
    for head, sts in [("0", 70.0), ("0.5", 65.5)]:
        write_run(tmp_path / head, [f"{HEAD}={head}", "seed=1"], {"after": {"sts_avg": sts}})
    sweep = load_sweep(tmp_path)
    assert [row.stats["sts_avg"] for row in sweep.rows] == [(70.0, None), (65.5, None)]
    write_report(sweep)
    table = (tmp_path / "report.md").read_text().split("## STS")[1]
    assert "|   1 |   70.00 |" in table and "±" not in table
    with (tmp_path / "report.csv").open() as f:
        cells = [(r["sts_avg_mean"], r["sts_avg_std"]) for r in csv.DictReader(f)]
    assert cells == [("70.0", ""), ("65.5", "")]


def test_the_label_shows_only_the_overrides_that_vary():
    settings = [{"experiment": "x", "lr": lr, "ffn": "0.1"} for lr in ("1e-5", "3e-5")]
    assert varying_keys(settings) == ["lr"]
    assert varying_keys([*settings, {"experiment": "x", "lr": "1e-5"}]) == ["lr", "ffn"]  # one lacks ffn
    assert varying_keys(settings[:1]) == []
    assert Row({"lr": "1e-5", "ffn": None}, []).label == "lr=1e-5, ffn=(default)"
    assert Row({}, []).label == "all"


def test_no_varying_override_gives_one_row_labelled_all(tmp_path):
    for seed, sts in [(1, 71.0), (2, 72.0)]:
        write_run(tmp_path / str(seed), ["experiment=demo", f"seed={seed}"], {"after": {"sts_avg": sts}})
    (row,) = load_sweep(tmp_path).rows
    assert (row.label, row.n, row.stats["sts_avg"]) == ("all", 2, (71.5, pytest.approx(math.sqrt(0.5))))


def test_ordering_is_numeric_aware():
    values = ["10", "1", "0.25", "2", "0.1", "bert10", "bert2"]
    assert sorted(values, key=sort_key) == ["0.1", "0.25", "1", "2", "10", "bert2", "bert10"]
    runs = [Run(Path(v), {"h": v, "seed": "1"}, {}) for v in ["10", "0.25", "1", "0.1", "2"]]
    assert [row.setting["h"] for row in group_rows(runs, ["h"], "seed")] == ["0.1", "0.25", "1", "2", "10"]


def test_seed_key_is_configurable(tmp_path):
    for run_seed in (1, 2):
        write_run(tmp_path / str(run_seed), [f"data.seed={run_seed}"], {"after": {"sts_avg": 70.0}})
    assert [row.n for row in load_sweep(tmp_path).rows] == [1, 1]
    assert [row.n for row in load_sweep(tmp_path, seed_key="data.seed").rows] == [2]


def test_metrics_fall_back_to_before_and_sparsity_to_head_sparsity():
    only_before = {"before": {"sts_avg": 78.9, "stsb": 82.0, "note": "x"}, "parameters": 7}
    assert run_metrics(only_before) == {"stsb": 82.0, "sts_avg": 78.9, "parameters": 7.0}
    assert run_sparsity({"parameter_sparsity": 0.2, "sparsity": {"prune/head_sparsity": 0.3}}) == 0.2
    assert run_sparsity({"sparsity": {"prune/head_sparsity": 0.3}}) == 0.3
    assert run_sparsity({}) == 0.0


def test_cli_prints_the_tables_failed_runs_and_paths(sweep_dir, tmp_path, capsys):
    main([str(sweep_dir), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "| 73.00 ± 3.61 |" in out and "RuntimeError: CUDA out of memory" in out
    assert f"wrote {tmp_path / 'out' / 'report.csv'}" in out
    assert (tmp_path / "out" / "sparsity_sts.png").is_file() and not (sweep_dir / "report.md").exists()


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_cli_exits_2_with_one_line_for_a_missing_or_empty_dir(make, tmp_path, capsys):
    sweep_dir = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep_dir)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("sparsecse-report: error: SWEEP_DIR: ") and str(sweep_dir) in err
    with pytest.raises(ConfigError):
        load_sweep(sweep_dir)


def test_a_run_without_readable_overrides_is_listed_as_failed(tmp_path):
    write_run(tmp_path / "ok", ["seed=1"], {"after": {"sts_avg": 70.0}})
    write_run(tmp_path / "odd", ["seed=2"], {"after": {"sts_avg": 70.0}})
    (tmp_path / "odd" / ".hydra" / "overrides.yaml").write_text("seed: 2\n")
    (failed,) = load_sweep(tmp_path).failed
    assert failed.reason == "overrides.yaml holds a dict, expected a list of key=value"


def test_cli_exits_2_when_the_output_cannot_be_written(sweep_dir, tmp_path, capsys):
    taken = tmp_path / "a-file"
    taken.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep_dir), "--output", str(taken)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"sparsecse-report: error: output: cannot write {taken}: ")


def write_point(root: Path, score: str, p: str, seed: int, sts_avg: float, alignment: float) -> None:
    """A `sparsecse-study` point: its setting is in results.json, there is no .hydra folder."""
    folder = root / "structured" / score / f"sparsity={p},seed={seed}"
    folder.mkdir(parents=True)
    setting = {"granularity": "structured", "score": score, "sparsity": p, "seed": str(seed)}
    results = {"setting": setting, "after": {"sts_avg": sts_avg, "alignment": alignment}}
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture
def study_dir(tmp_path) -> Path:
    root = tmp_path / "study"
    (root / "dense").mkdir(parents=True)
    dense = {"setting": {"granularity": "dense", "score": "dense", "sparsity": "0"},
             "after": {"sts_avg": 70.0, "alignment": 0.30}}  # fmt: skip
    (root / "dense" / "results.json").write_text(json.dumps(dense))
    write_point(root, "magnitude", "0.1", 1, 71.0, 0.33)
    write_point(root, "magnitude", "0.1", 2, 73.0, 0.29)
    write_point(root, "magnitude", "0.3", 1, 65.0, 0.25)
    write_point(root, "random", "0.1", 1, 69.0, 0.28)
    write_point(root, "random", "0.1", 2, 69.0, 0.28)
    return root


def test_a_study_report_has_a_score_by_sparsity_table_per_metric(study_dir):
    write_report(load_sweep(study_dir))
    text = (study_dir / "report.md").read_text()
    sts = text.split("### STS avg, structured (dense 70.00)\n\n")[1].split("\n\n")[0].splitlines()
    assert [line.replace(" ", "") for line in sts[:1] + sts[2:]] == [
        "|score|p=0.1|p=0.3|",
        "|magnitude|**72.00±1.41**|65.00(1)|",  # bold: above dense; (1): fewer seeds than the fullest
        "|random|69.00±0.00||",  # no point at p=0.3: an empty cell
    ]
    alignment = text.split("### alignment, structured (dense 0.300)\n\n")[1].split("\n\n")[0].splitlines()
    assert [line.replace(" ", "") for line in alignment[2:]] == [
        "|magnitude|0.310±0.028|**0.250(1)**|",  # lower alignment is better
        "|random|**0.280±0.000**||",
    ]
    assert text.index("## Score mode against sparsity") < text.index("## STS (Spearman × 100)")


def test_a_training_sweep_report_has_no_study_tables(sweep_dir):
    assert "## Score mode against sparsity" not in format_report(load_sweep(sweep_dir))


def test_the_study_figure_draws_one_line_per_score_mode_and_dense(study_dir, monkeypatch):
    from sparsecse.report import plots

    drawn = {}
    save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path: drawn.setdefault(Path(path).name, fig) and save(fig, path)
    )
    write_report(load_sweep(study_dir))
    (axes,) = drawn["sparsity_lines_sts_avg.png"].axes
    assert axes.get_legend_handles_labels()[1] == ["dense", "magnitude", "random"]
    assert [list(line.get_ydata()) for line in axes.get_lines()[1:]] == [[72.0, 65.0], [69.0]]


def test_averages_over_other_tasks_are_not_put_in_one_column(tmp_path, capsys):
    """A run scored on STS-B alone once showed its "STS avg" (its STS-B score) beside seven-task
    averages, in the table and in sparsity_sts.png."""
    seven = {task: 70.0 + i for i, task in enumerate(["sts12", "sts13", "sts14", "sts15", "sts16", "stsb",
                                                          "sickr"])}  # fmt: skip
    root = tmp_path / "sweep"
    for seed, sts_avg in ((1, 73.0), (2, 75.0)):
        write_run(root / f"seed={seed}", [f"seed={seed}"], {"after": {**seven, "sts_avg": sts_avg}})
    write_run(
        root / "stsb_only", ["seed=3", "evaluate.tasks=[stsb]"], {"after": {"stsb": 90.0, "sts_avg": 90.0}}
    )
    sweep = load_sweep(root)
    assert sweep.averaged == {"sts_avg": ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")}
    stsb_only = next(run for run in sweep.runs if run.path.name == "stsb_only")
    assert stsb_only.metrics == {"stsb": 90.0} and stsb_only.left_out == {"sts_avg"}
    report = format_report(sweep)
    (row,) = [line for line in report.split("## STS")[1].splitlines() if "evaluate.tasks=[stsb]" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[-3:] == ["90.00", "", ""], "its STS-B score, no SICK-R and no STS avg"
    assert (
        "STS avg is the mean of STS12, STS13, STS14, STS15, STS16, STS-B, SICK-R. Left out of that column, "
        f"as the mean of other tasks: `{root / 'stsb_only'}` (STS-B)."
    ) in report
    main([str(root)])
    printed = capsys.readouterr().out
    assert f"wrote {root / 'sparsity_sts.png'}" in printed and f"wrote {root / 'report.md'}" in printed
