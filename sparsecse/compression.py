"""The compression study's tables and figure (docs/compression.md): each recipe's STS avg against its
encode speed-up over the dense model, mean ± std over seeds, and the Pareto frontier.

A study folder (bench/compression_study.py) holds `<series>/<level>/seed<S>/results.json` (one
`sparsecse-prune` run each), `dense/results.json`, and `speed.json`: the speed-up of every model
directory (`"<series>/<level>/seed<S> PyTorch"`, `"... int8"`) over the dense PyTorch model of one
run, and the int8 graphs' STS scores.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SPEED = "speed.json"
RESULTS = "results.json"
# row label of each (series, variant); variant: "pruned" (before recovery), "after", or "int8"
RECIPES = {
    ("sparsecse", "pruned"): "SparseCSE, no recovery",
    ("sparsecse", "after"): "SparseCSE + recovery",
    ("sparsecse", "int8"): "SparseCSE + recovery, int8 ONNX",
    ("random", "after"): "random + recovery",
    ("layers", "after"): "layers dropped evenly + distillation",
    ("layers-importance", "after"): "layers dropped by importance + distillation",
    ("dense-distilled", "after"): "dense + the same distillation (nothing removed)",
    ("dense", "after"): "dense",
    ("dense", "int8"): "dense, int8 ONNX",
}
POINT = re.compile(r"(?P<series>[^/]+)/(?P<level>[^/]+)/seed(?P<seed>\d+)$")


@dataclass(frozen=True)
class Point:
    """One model of one recipe: its speed-up over dense PyTorch and its STS avg (7 tasks)."""

    recipe: str
    level: str  # p0.55 (heads and FFN neurons removed), keep3 (layers kept), or "-" for dense
    seed: int
    speedup: float
    sts_avg: float


@dataclass(frozen=True)
class Row:
    """A recipe at one level: mean and sample std over its seeds."""

    recipe: str
    level: str
    seeds: int
    speedup: float
    speedup_std: float
    sts_avg: float
    sts_std: float


def read_points(root: str | Path) -> list[Point]:
    """Every (recipe, level, seed) of a study folder that has both a result and a speed."""
    root = Path(root)
    speed = json.loads((root / SPEED).read_text())
    points = []
    for path in sorted(root.rglob(RESULTS)):
        name = str(path.parent.relative_to(root))
        match = POINT.match(name)
        series, level, seed = (
            (match["series"], match["level"], int(match["seed"])) if match else (name, "-", 0)
        )
        results = json.loads(path.read_text())
        for variant in ("pruned", "after", "int8"):
            recipe = RECIPES.get((series, variant))
            if recipe is None:
                continue
            kind = "int8" if variant == "int8" else "PyTorch"
            if f"{name} {kind}" not in speed["speedup"]:
                continue
            scores = speed["int8_sts"][f"{name} int8"] if variant == "int8" else results.get(variant)
            if scores:
                points.append(
                    Point(recipe, level, seed, speed["speedup"][f"{name} {kind}"], scores["sts_avg"])
                )
    return points


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(points: Sequence[Point]) -> list[Row]:
    """One row per (recipe, level), in the order RECIPES lists the recipes, then by speed-up."""
    groups: dict[tuple[str, str], list[Point]] = {}
    for point in points:
        groups.setdefault((point.recipe, point.level), []).append(point)
    rows = []
    for (recipe, level), members in groups.items():
        speed, speed_std = _mean_std([p.speedup for p in members])
        sts, sts_std = _mean_std([p.sts_avg for p in members])
        rows.append(Row(recipe, level, len(members), speed, speed_std, sts, sts_std))
    order = {recipe: i for i, recipe in enumerate(RECIPES.values())}
    return sorted(rows, key=lambda row: (order[row.recipe], row.speedup))


def frontier(rows: Sequence[Row]) -> list[Row]:
    """The rows no other row beats: none is at least as fast and at least as good, and better in one
    (by the means). Sorted by speed-up."""

    def dominated(row: Row) -> bool:
        return any(
            o.speedup >= row.speedup
            and o.sts_avg >= row.sts_avg
            and (o.speedup, o.sts_avg) != (row.speedup, row.sts_avg)
            for o in rows
        )

    return sorted((row for row in rows if not dominated(row)), key=lambda row: row.speedup)


def _cell(mean: float, std: float, seeds: int, digits: int, suffix: str = "") -> str:
    return f"{mean:.{digits}f}{suffix} ± {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}{suffix}"


def rows_table(rows: Sequence[Row]) -> str:
    lines = ["| recipe | level | seeds | encode speed-up | STS avg |", "| --- | --- | --: | --: | --: |"]
    for row in rows:
        speed = _cell(row.speedup, row.speedup_std, row.seeds, 2, "x")
        lines.append(f"| {row.recipe} | {row.level} | {row.seeds} | {speed} "
                     f"| {_cell(row.sts_avg, row.sts_std, row.seeds, 2)} |")  # fmt: skip
    return "\n".join(lines)


def compression_tables(root: str | Path) -> str:
    """The two tables of docs/compression.md: every (recipe, level), then the frontier."""
    rows = summarise(read_points(root))
    return "\n\n".join(["All recipes:", rows_table(rows), "The Pareto frontier:", rows_table(frontier(rows))])


def pareto_plot(rows: Sequence[Row], path: str | Path) -> Path:
    """STS avg against encode speed-up, one line per recipe with ± std bars, the frontier dashed."""
    from sparsecse.plots import quality_against_speed

    lines: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in sorted(rows, key=lambda r: r.speedup):
        lines.setdefault(row.recipe, []).append((row.speedup, row.speedup_std, row.sts_avg, row.sts_std))
    best = [(row.speedup, row.sts_avg) for row in frontier(rows)]
    return quality_against_speed(lines, best, path)
