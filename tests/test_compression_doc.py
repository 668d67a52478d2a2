"""docs/compression.md against the study it reports: its generated block is what `compression_tables`
makes of docs/compression/ today, its plot is there, every model has its speed, and every number its
sentences quote (the phrases below) is computed here from the published results."""

from __future__ import annotations

import json
import re
import statistics
from functools import cache
from pathlib import Path

import pytest

from sparsecse.cli import REPO_ROOT
from sparsecse.compression import (
    RECIPES,
    SPEED,
    SPEEDUPS,
    TABLES_BEGIN,
    TABLES_END,
    Row,
    best_at,
    compression_tables,
    read_points,
    summarise,
)

STUDY = REPO_ROOT / "docs" / "compression"
DOC = REPO_ROOT / "docs" / "compression.md"
LOG_LINE = re.compile(r"^(?:dense:|\S+ \S+ seed \d+: STS avg [\d.]+,) (\d+) s$")  # the driver's lines
INT8 = {"dense", "sparsecse", "layers", "layers-importance"}  # the series exported to int8 ONNX


@cache
def doc() -> str:
    """White space folded, so that a phrase matches however the Markdown wraps it."""
    return re.sub(r"\s+", " ", DOC.read_text())


@cache
def rows() -> dict[tuple[str, str], Row]:
    return {(row.recipe, row.level): row for row in summarise(read_points(STUDY))}


@cache
def results() -> dict[str, dict]:
    return {str(p.parent.relative_to(STUDY)): json.loads(p.read_text()) for p in STUDY.rglob("results.json")}


def recipe_row(series: str, variant: str, level: str) -> Row:
    return rows()[RECIPES[series, variant], level]


def signed(values: list[float]) -> str:
    return ", ".join(f"{v:+.2f}" for v in values)


def test_the_generated_block_is_the_tables_of_the_published_study():
    block = DOC.read_text().split(TABLES_BEGIN)[1].split(TABLES_END)[0]
    assert block.strip() == compression_tables(STUDY)


def test_every_published_model_has_its_speed_and_the_plot_is_there():
    speedup = json.loads((STUDY / SPEED).read_text())["speedup"]
    for name in results():
        assert f"{name} PyTorch" in speedup, name
        if name.split("/")[0] in INT8:
            assert f"{name} int8" in speedup, name
    assert (STUDY / "pareto.png").stat().st_size > 5000
    assert "(compression/pareto.png)" in doc()


def test_the_dense_model_and_its_distilled_control():
    dense = recipe_row("dense", "after", "-").sts_avg
    distilled = recipe_row("dense-distilled", "after", "p0").sts_avg
    dense_int8 = recipe_row("dense", "int8", "-")
    assert f"The dense model scores {dense:.2f}" in doc()
    assert f"with nothing removed, reaches {distilled:.2f} ({distilled - dense:+.2f})" in doc()
    assert f"dense int8 ONNX runs {dense_int8.speedup:.2f}x at {dense_int8.sts_avg:.2f}" in doc()


def test_what_recovery_adds_at_each_sparsity():
    levels = ["p0.35", "p0.55", "p0.75", "p0.85"]
    gains = [recipe_row("sparsecse", "after", p).sts_avg - recipe_row("sparsecse", "pruned", p).sts_avg
             for p in levels]  # fmt: skip
    assert f"recovery adds {signed(gains)} STS points at p = 0.35, 0.55, 0.75 and 0.85" in doc()


def test_layers_chosen_by_importance_against_even_spacing():
    differences = [
        recipe_row("layers-importance", "after", k).sts_avg - recipe_row("layers", "after", k).sts_avg
        for k in ("keep4", "keep3", "keep2")
    ]
    assert f"by importance scores {signed(differences)} against evenly spaced layers" in doc()


@pytest.mark.parametrize("speedup", SPEEDUPS)
def test_the_pick_at_each_speed(speedup):
    row = best_at(list(rows().values()), speedup)
    pick = f"{row.recipe} ({row.level}), {row.sts_avg:.2f} at {row.speedup:.2f}x"
    assert f"at {speedup}x or faster: {pick}" in doc()


def test_how_many_targets_are_met():
    table = compression_tables(STUDY).split("The targets:")[1]
    met = [line.rsplit("|", 2)[1].strip() for line in table.strip().splitlines()[2:]]
    assert f"{met.count('yes')} of the {len(met)} targets are met" in doc()


def test_the_seeds_each_row_holds():
    seeds = sorted({row.seeds for row in rows().values() if row.recipe != RECIPES["dense", "after"]
                    and row.recipe != RECIPES["dense", "int8"]})  # fmt: skip
    held = f"{seeds[0]} seed" if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]} seeds"
    assert f"each row of a recipe holds {held}" in doc()


def test_the_budget_of_a_recovery_and_of_the_study():
    minutes = [r["recovery"]["seconds"] / 60 for r in results().values() if "recovery" in r]
    assert max(minutes) <= 10  # the budget a MiniLM recovery has on 2 cores
    assert (
        f"{len(minutes)} recoveries of 500 steps took {statistics.median(minutes):.1f} min (median) "
        f"and at most {max(minutes):.1f} min" in doc()
    )
    seconds = [int(m[1]) for log in sorted((STUDY / "logs").glob("*.log"))
               for line in log.read_text().splitlines() if (m := LOG_LINE.match(line))]  # fmt: skip
    assert f"the {len(seconds)} point runs in the driver's logs took {sum(seconds) / 3600:.1f} h" in doc()


def test_the_log_line_pattern_reads_the_drivers_lines():
    assert LOG_LINE.match("sparsecse 0.35 seed 1: STS avg 79.40, 375 s")[1] == "375"
    assert LOG_LINE.match("dense: 66 s")[1] == "66"
    assert LOG_LINE.match("every point in /x; 300 s this start") is None


def test_the_study_folder_holds_no_weights():
    assert not [p for p in Path(STUDY).rglob("*") if p.suffix in {".safetensors", ".onnx", ".bin", ".ckpt"}]
