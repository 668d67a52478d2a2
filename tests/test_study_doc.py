"""docs/study.md against the results it reports: each study folder's report is what `sparsecse-report`
makes of its results today, every table in the doc is a report's, and every number in the doc's
sentences listed below is computed here from the raw results. Prose and data cannot drift apart."""

from __future__ import annotations

import json
import math
import re
import statistics
from functools import cache
from pathlib import Path

import pytest

from sparsecse.cli import REPO_ROOT
from sparsecse.report import BETTER, format_report, load_sweep, study_lines

STUDY = Path("docs") / "study"  # relative: a report names its folder as it was given
AFTER_TRAINING = (
    "minilm-structured", "minilm-unstructured", "simcse-structured", "minilm-transfer", "minilm-aligned64",
    "minilm-plain",
)  # fmt: skip


def words(text: str) -> str:
    """White space folded, so that a sentence matches however the Markdown wraps it."""
    return re.sub(r"\s+", " ", text)


@cache
def doc() -> str:
    return words((REPO_ROOT / "docs" / "study.md").read_text())


@cache
def cells(folder: str, metric: str) -> tuple[dict, float]:
    """{(score mode, p): values in seed order} of the folder's single panel, and the dense mean."""
    found = study_lines(load_sweep(REPO_ROOT / STUDY / folder), metric)
    assert found is not None, f"{folder} has no {metric}"
    (lines,) = found[0].values()
    return {
        (mode, p): values for mode, by_p in lines.items() for p, values in by_p.items()
    }, statistics.fmean(found[1])


def signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def at_most(value: float, digits: int) -> str:
    """The bound a sentence gives for |value|: rounded up at `digits` decimals."""
    return f"{math.ceil(abs(value) * 10**digits - 1e-9) / 10**digits:.{digits}f}"


def cell(folder: str, mode: str, p: float, metric: str = "sts_avg") -> dict[str, str]:
    """The fields a sentence about one cell may quote, each formatted as the doc writes it."""
    by_cell, dense = cells(folder, metric)
    values = by_cell[(mode, p)]
    better = sum((v - dense) * BETTER[metric] > 0 for v in values)
    return {
        "dense": f"{dense:.2f}",
        "delta": signed(statistics.fmean(values) - dense),
        "seeds": ", ".join(signed(v - dense) for v in values),
        "better": str(better),
        "n": str(len(values)),
    }


# (study folder, metric, score mode, p, the sentence's words with the cell's fields in braces)
SENTENCES = [
    ("minilm-structured", "sts_avg", "magnitude", 0.1,
     "against {dense} dense: {delta}, and every seed gains ({seeds})"),
    ("minilm-structured", "sts_avg", "magnitude", 0.3, "at p = 0.3 it is below ({delta})"),
    ("minilm-structured", "sts_avg", "alignment", 0.05, "at p = 0.05 ({delta}, every seed above dense)"),
    ("minilm-structured", "sts_avg", "alignment", 0.1, "at p = 0.1 its seeds split ({seeds})"),
    ("minilm-structured", "sts_avg", "uniformity", 0.05,
     "({delta} at p = 0.05, {better} of {n} seeds above dense)"),
    ("minilm-unstructured", "sts_avg", "alignment", 0.3, "79.55 ± 0.08 at p = 0.3 ({delta} over dense)"),
    ("minilm-unstructured", "sts_avg", "magnitude", 0.3, "`magnitude` 79.48 ± 0.05 ({delta})"),
    ("minilm-unstructured", "sts_avg", "random", 0.02, "Random pruning hurts from p = 0.02** ({delta})"),
    ("simcse-structured", "sts_avg", "magnitude", 0.05, "gives {delta} with `magnitude`"),
    ("simcse-structured", "sts_avg", "alignment", 0.05, "and {delta} with `alignment`"),
    ("simcse-structured", "sts_avg", "uniformity", 0.02, "`uniformity` peaks at {delta} at p = 0.02"),
    ("minilm-transfer", "transfer_avg", "magnitude", 0.3,
     "The largest gain, {delta} for `magnitude` at p = 0.3"),
    ("minilm-transfer", "transfer_avg", "random", 0.3, "loses** at p = 0.3 ({delta}, CR down"),
]  # fmt: skip


@pytest.mark.parametrize(("folder", "metric", "mode", "p", "sentence"), SENTENCES)
def test_a_sentence_quotes_its_cell(folder, metric, mode, p, sentence):
    assert words(sentence.format(**cell(folder, mode, p, metric))) in doc()


def deltas(folder: str, modes: tuple[str, ...], sparsities: tuple[float, ...]) -> tuple[list, list]:
    """The mean differences from dense of these cells, and every seed's."""
    by_cell, dense = cells(folder, "sts_avg")
    chosen = [by_cell[(m, p)] for m in modes for p in sparsities]
    return [statistics.fmean(v) - dense for v in chosen], [x - dense for v in chosen for x in v]


GRADIENT = ("magnitude", "alignment", "uniformity")  # the modes built from |gradient|


def test_the_sentences_about_ranges_of_cells():
    means, seeds = deltas("minilm-structured", GRADIENT, (0.01, 0.02))
    assert words(f"beat dense in {sum(d > 0 for d in seeds)} of {len(seeds)} (mode, p, seed) points") in doc()
    assert words(f"the mean gains are {signed(min(means))} to {signed(max(means))}") in doc()
    _, random_seeds = deltas("minilm-structured", ("random",), (0.01, 0.02))
    assert f"random pruning beats it in {sum(d > 0 for d in random_seeds)} of {len(random_seeds)}" in doc()
    modes = ("magnitude", "alignment", "uniformity", "random", "weight_magnitude")  # all but signed
    means, _ = deltas("minilm-structured", modes, (0.005,))
    assert f"every mode but `signed` is within {at_most(max(means, key=abs), 2)} of dense" in doc()
    means, _ = deltas("minilm-unstructured", GRADIENT, (0.005, 0.01, 0.02))
    assert f"are within {at_most(max(means, key=abs), 3)} of dense" in doc()
    means, _ = deltas("simcse-structured", GRADIENT, (0.05, 0.1))
    assert f"stay {signed(min(means))} to {signed(max(means))} above dense" in doc()


def tables(text: str) -> list[str]:
    """The Markdown tables of a score mode against sparsity (first column `score`)."""
    return re.findall(r"^\| score .*\n(?:\|.*\n?)+", text, flags=re.MULTILINE)


def test_every_study_table_in_the_doc_is_a_reports():
    text = (REPO_ROOT / "docs" / "study.md").read_text()
    reports = [(REPO_ROOT / STUDY / folder / "report.md").read_text() for folder in AFTER_TRAINING]
    found = tables(text)
    assert len(found) >= 10
    for table in found:
        assert any(table.strip() in report for report in reports), table.splitlines()[0]


@pytest.mark.parametrize("folder", AFTER_TRAINING)
def test_a_committed_report_is_what_its_results_make_today(folder, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert (STUDY / folder / "report.md").read_text() == format_report(load_sweep(STUDY / folder))


ARMS = {"SimCSE": "none", "SparseCSE (magnitude)": "demo", "random": "demo_random",
        "weight magnitude": "demo_weight_magnitude"}  # fmt: skip


def test_every_during_training_row_is_its_jobs_results():
    rows = re.findall(r"^\| (SimCSE|SparseCSE \(magnitude\)|random|weight magnitude) \| (\d) \| (.*) \|$",
                      (REPO_ROOT / "docs" / "study.md").read_text(), flags=re.MULTILINE)  # fmt: skip
    jobs = sorted((REPO_ROOT / STUDY / "during-training").glob("pruning=*/results.json"))
    assert rows and len(rows) == len(jobs), "one row per finished job"
    for arm, seed, cells in rows:
        results = json.loads((REPO_ROOT / STUDY / "during-training" / f"pruning={ARMS[arm]},seed={seed}"
                              / "results.json").read_text())  # fmt: skip
        after, final = results["after"], results["final"]
        expected = [str(results["best_step"]), f"{after['sts_avg']:.2f}", f"{final['sts_avg']:.2f}",
                    f"{after['transfer_avg']:.2f}", f"{final['transfer_avg']:.2f}",
                    f"{after['alignment']:.3f}", f"{after['uniformity']:.3f}",
                    f"{results['parameters'] / 1e6:.2f}"]  # fmt: skip
        assert [c.strip() for c in cells.split("|")] == expected, (arm, seed)


def test_every_during_training_mean_is_its_jobs_mean():
    """The mean ± std over seeds of each arm, from the jobs' results."""
    arm_names = "|".join(re.escape(arm) for arm in ARMS)
    rows = re.findall(rf"^\| ({arm_names}) \| mean of (\d) \| (.*) \|$",
                      (REPO_ROOT / "docs" / "study.md").read_text(), flags=re.MULTILINE)  # fmt: skip
    assert [arm for arm, _, _ in rows] == list(ARMS)
    for arm, count, cells in rows:
        jobs = sorted(
            (REPO_ROOT / STUDY / "during-training").glob(f"pruning={ARMS[arm]},seed=*/results.json")
        )
        results = [json.loads(path.read_text()) for path in jobs]
        assert len(results) == int(count) >= 2, arm

        def spread(key: str, metric: str, digits: int = 2, results: list = results) -> str:
            values = [r[key][metric] for r in results]
            return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

        expected = [spread("after", "sts_avg"), spread("final", "sts_avg"), spread("after", "transfer_avg"),
                    spread("final", "transfer_avg"), spread("after", "alignment", 3),
                    spread("after", "uniformity", 3)]  # fmt: skip
        assert [c.strip() for c in cells.split("|")] == expected, arm


def during_training(arm: str) -> list[dict]:
    jobs = sorted((REPO_ROOT / STUDY / "during-training").glob(f"pruning={ARMS[arm]},seed=*/results.json"))
    return [json.loads(path.read_text()) for path in jobs]


def test_the_during_training_verdict_quotes_the_jobs():
    def gaps(arm: str, reference: str, key: str = "after", metric: str = "sts_avg") -> tuple[str, list[str]]:
        pairs = zip(during_training(arm), during_training(reference))
        values = [a[key][metric] - r[key][metric] for a, r in pairs]
        return signed(statistics.fmean(values)), [signed(v) for v in values]

    sparse, simcse = "SparseCSE (magnitude)", "SimCSE"
    mean, seeds = gaps(sparse, simcse)
    assert words(f"SparseCSE trails SimCSE by {mean} STS avg selected and {gaps(sparse, simcse, 'final')[0]} "
                 f"final (per seed: {', '.join(seeds)} selected)") in doc()  # fmt: skip
    mean, seeds = gaps(sparse, simcse, metric="transfer_avg")
    assert words(f"level within the seed spread ({mean} selected; per seed {', '.join(seeds)})") in doc()
    mean, seeds = gaps(sparse, "random")
    assert words(f"beats random pruning by {mean} selected ({', '.join(seeds)} per seed)") in doc()
    mean, seeds = gaps(sparse, "weight magnitude")
    assert words(f"weight-magnitude pruning by {mean} ({', '.join(seeds)})") in doc()
    change = lambda arm: statistics.fmean(r["final"]["sts_avg"] - r["after"]["sts_avg"]  # noqa: E731
                                          for r in during_training(arm))  # fmt: skip
    largest = max((change(arm) for arm in ARMS), key=abs)
    assert f"final step is within {at_most(largest, 2)} of its selected checkpoint on average" in doc()


def test_every_aligned_width_row_is_its_points_results():
    """The table of STS avg with and without FFN widths at multiples of 64."""
    rows = re.findall(
        r"^\| (0\.[135]) \| (.*) \|$", (REPO_ROOT / "docs" / "study.md").read_text(), flags=re.MULTILINE
    )
    assert [p for p, _ in rows] == ["0.1", "0.3", "0.5"]

    def points(folder: str, p: str) -> list[dict]:
        found = sorted((REPO_ROOT / STUDY / folder / "structured" / "magnitude").glob(f"sparsity={p},seed=*"))
        return [json.loads((path / "results.json").read_text()) for path in found]

    def cell(results: list[dict]) -> str:
        scores = [r["after"]["sts_avg"] for r in results]
        return f"{statistics.fmean(scores):.2f} ± {statistics.stdev(scores):.2f}"

    for p, cells in rows:
        aligned, plain = (
            points("minilm-aligned64", p),
            points("minilm-structured" if p != "0.5" else "minilm-plain", p),
        )
        assert len(aligned) == len(plain) == 3
        size = lambda results: f"{results[0]['parameters'] / 1e6:.2f}"  # noqa: E731
        reached = f"{aligned[0]['sparsity']['prune/ffn_sparsity']:.4f}"
        expected = [reached, size(aligned), cell(aligned), size(plain), cell(plain)]
        assert [c.strip() for c in cells.split("|")] == expected, p
