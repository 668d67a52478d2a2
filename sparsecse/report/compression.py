"""The compression study's tables and figure (docs/compression.md): each recipe's STS avg against its
encode speed-up over the dense model, mean ± std over seeds, and the Pareto frontier.

A study folder (bench/compression_study.py) holds `<series>/<level>/seed<S>/results.json` (one
`sparsecse-prune` run each), `dense/results.json`, and `speed.json`: the speed-up of every model
directory (`"<series>/<level>/seed<S> PyTorch"`, `"... int8"`) over the dense PyTorch model of the
speed run that measured it, the int8 graphs' STS scores, and one record per speed run (`runs`,
with the speed-ups that run measured).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# docs/compression.md's generated block lies between these lines
TABLES_BEGIN = "<!-- tables made by compression_tables(docs/compression): do not edit -->"
TABLES_END = "<!-- end of the generated tables -->"
SPEED = "speed.json"
RESULTS = "results.json"
# row label of each (series, variant); variant: "pruned" (before recovery), "after", or "int8"
RECIPES = {
    ("joint", "pruned"): "joint pruning to a speed target, no recovery",
    ("joint", "after"): "joint pruning to a speed target + recovery",
    ("joint-int8", "int8"): "joint pruning to an int8 speed target + recovery, int8 ONNX",
    ("sparsecse", "pruned"): "SparseCSE, no recovery",
    ("sparsecse", "after"): "SparseCSE + recovery",
    ("sparsecse", "int8"): "SparseCSE + recovery, int8 ONNX",
    ("random", "after"): "random + recovery",
    ("layers", "after"): "layers dropped evenly + distillation",
    ("layers", "int8"): "layers dropped evenly + distillation, int8 ONNX",
    ("layers-importance", "after"): "layers dropped by importance + distillation",
    ("layers-importance", "int8"): "layers dropped by importance + distillation, int8 ONNX",
    ("dense-distilled", "after"): "dense + the same distillation (nothing removed)",
    ("dense", "after"): "dense",
    ("dense", "int8"): "dense, int8 ONNX",
    ("model2vec", "after"): "static embeddings (model2vec, 256 dims)",
}
# how each series' models run, as speed.json names their timings (`<model> <runtime>`)
RUNTIMES = {"model2vec": "static"}
SPEEDUPS = (1.3, 1.8, 2.5, 3.5, 5.0, 8.0)  # the speed-ups over dense PyTorch the study aims at
FLOORS = ((1.8, 77.9), (1.3, 78.6))  # (speed-up, the STS avg recovered SparseCSE should keep there)
COMPETITORS = {  # the same recovery, other ways to remove the same compute
    "random + recovery": (RECIPES["random", "after"],),
    "layer dropping + distillation": (RECIPES["layers", "after"], RECIPES["layers-importance", "after"]),
}
POINT = re.compile(r"(?P<series>[^/]+)/(?P<level>[^/]+)/seed(?P<seed>\d+)$")
# a point's level as its folder names it, from the level the study driver's log prints
LEVEL_NAMES = {"sparsecse": "p{}", "random": "p{}", "layers": "keep{}", "layers-importance": "keep{}",
               "dense-distilled": "p{}", "joint": "x{}", "joint-int8": "x{}"}  # fmt: skip
# the study driver's line for each point it ran (bench/compression_study.py): "joint 2.5 seed 1: STS avg
# 77.98, 753 s", and "dense: 397 s"
LOG_LINE = re.compile(r"^(?:dense:|(?P<series>\S+) (?P<level>\S+) seed (?P<seed>\d+): STS avg [\d.]+,) "
                      r"(?P<seconds>\d+) s$")  # fmt: skip
LOGS = "logs"  # <root>/logs/<date>.log: the driver's logs, published


def point_name(series: str, level: float | str, seed: int) -> str:
    """A point's folder in a study, from its series, its level as the driver gives it and its seed."""
    return f"{series}/{LEVEL_NAMES[series].format(level)}/seed{seed}"


@dataclass(frozen=True)
class Point:
    """One model of one recipe: its speed-up over dense PyTorch and its STS avg (7 tasks)."""

    recipe: str
    # p0.55 (heads and FFN neurons removed), keep3 (layers kept), x2.5 (speed-up asked), "-" (dense)
    level: str
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


CHECK = "check/"  # speed.json's prefix of a stand-in timed beside the model it stands in for


def merge_speed(earlier: dict, later: dict) -> dict:
    """Two speed.json records as one: the runs of both (a run published twice is kept once), and for a
    model both measured, the later run's figures. Each speed-up stays a ratio against the dense model
    of its own run, so models measured in different runs (seeds run at different times) sit side by
    side."""
    runs = earlier.get("runs", [])
    # a stand-in timed beside its model (`check/...`) checks the run that timed both: the later's only
    kept = {name: value for name, value in earlier.get("speedup", {}).items()
            if not (name.startswith(CHECK) and later.get("speedup"))}  # fmt: skip
    return {
        "runs": [*runs, *(run for run in later.get("runs", []) if run not in runs)],
        "speedup": {**kept, **later.get("speedup", {})},
        "int8_sts": {**earlier.get("int8_sts", {}), **later.get("int8_sts", {})},
    }


def recorded_structure(results: dict) -> tuple[list[int], list[int]]:
    """A point's model shape from its results.json (`sparsity`'s per-layer counts, which
    `sparsecse-prune` records): (heads, FFN neurons), one entry per layer."""
    counts = results["sparsity"]
    layers = range(sum(key.startswith("prune/heads_layer") for key in counts))
    return (
        [int(counts[f"prune/heads_layer{i}"]) for i in layers],
        [int(counts[f"prune/neurons_layer{i}"]) for i in layers],
    )


def read_points(root: str | Path, run: int | None = None) -> list[Point]:
    """Every (recipe, level, seed) of a study folder that has both a result and a speed: the latest
    speed-up of each model, or with `run`, the speed-ups that speed run measured (`runs[run]`)."""
    root = Path(root)
    speed = json.loads((root / SPEED).read_text())
    if run is not None:
        speed["speedup"] = speed["runs"][run]["speedup"]
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
            kind = "int8" if variant == "int8" else RUNTIMES.get(series, "PyTorch")
            if f"{name} {kind}" not in speed["speedup"]:
                continue
            # an int8 graph's scores: those its `sparsecse-prune onnx=int8` run printed, else the speed run's
            int8 = results.get("int8") or speed["int8_sts"].get(f"{name} int8")
            scores = int8 if variant == "int8" else results.get(variant)
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


def best_at(rows: Sequence[Row], speedup: float, recipes: Sequence[str] | None = None) -> Row | None:
    """The row with the highest mean STS avg among those at least `speedup` times faster than dense
    (by their means), of `recipes` if given; None if no row is that fast."""
    fast = [r for r in rows if r.speedup >= speedup and (recipes is None or r.recipe in recipes)]
    return max(fast, key=lambda r: r.sts_avg, default=None)


@dataclass(frozen=True)
class Pick:
    """The recipe to pick at a speed, and the rows this study cannot tell from it."""

    speedup: float  # the target: at least this much faster than dense PyTorch
    best: Row
    tied: tuple[Row, ...]


def pick_at(rows: Sequence[Row], speedup: float, noise: float = 0.0) -> Pick | None:
    """The best row at `speedup` or faster (`best_at`), and its ties: rows within the speed `noise`
    (a relative shift of the speed-ups between two runs) of being that fast whose STS avg is no
    more than the larger seed spread of the two below the best's; and, when the best itself is
    within the noise of the target, the best row clearly that fast."""
    best = best_at(rows, speedup)
    if best is None:
        return None
    close = [r for r in rows if r != best and r.speedup >= speedup / (1 + noise)]
    tied = [r for r in close if r.sts_avg >= best.sts_avg - max(r.sts_std, best.sts_std)]
    sure = clear_pick(rows, speedup, noise)
    tied += [sure] if sure is not None and sure not in tied else []
    return Pick(speedup, best, tuple(sorted(tied, key=lambda r: -r.sts_avg)))


def clear_pick(rows: Sequence[Row], speedup: float, noise: float) -> Row | None:
    """When the best row at `speedup` (`best_at`) is within the speed `noise` of being that fast, the best
    row clearly that fast; None when the best is clearly that fast itself, or no row is."""
    best = best_at(rows, speedup)
    if best is None or best.speedup >= speedup * (1 + noise):
        return None
    return best_at([r for r in rows if r.speedup >= speedup * (1 + noise)], speedup)


def _named(row: Row) -> str:
    return f"{row.recipe} ({row.level}, {row.sts_avg:.2f} at {row.speedup:.2f}x)"


def picks_table(rows: Sequence[Row], noise: float = 0.0) -> str:
    """Which recipe a user should pick for each speed-up the study aims at: the best STS avg there,
    and what the study cannot tell from it (`pick_at`)."""
    lines = ["| at least | pick | level | encode speed-up | STS avg | not told apart from it |",
             "| --: | --- | --- | --: | --: | --- |"]  # fmt: skip
    for speedup in SPEEDUPS:
        if (pick := pick_at(rows, speedup, noise)) is not None:
            row, tied = pick.best, "; ".join(map(_named, pick.tied)) or "-"
            cells = [f"{speedup}x", row.recipe, row.level, f"{row.speedup:.2f}x", f"{row.sts_avg:.2f}", tied]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interpolate(rows: Sequence[Row], recipe: str, speedup: float) -> tuple[float, float] | None:
    """A recipe's mean STS avg at `speedup`, linear between its two nearest levels, and the larger of
    their seed stds; None outside the speed-ups its levels reach."""
    line = sorted((r for r in rows if r.recipe == recipe), key=lambda r: r.speedup)
    for low, high in zip(line, line[1:]):
        if low.speedup <= speedup <= high.speedup:
            weight = (speedup - low.speedup) / (high.speedup - low.speedup)
            return low.sts_avg + weight * (high.sts_avg - low.sts_avg), max(low.sts_std, high.sts_std)
    return None


def margins(rows: Sequence[Row], recipe: str, against: Sequence[str]) -> list[tuple[Row, float, float]]:
    """For each level of `recipe`: its STS avg minus the best of `against` at the same speed-up, and
    the largest seed std of the rows compared (levels outside the others' speed-ups are left out)."""
    found = []
    for row in sorted((r for r in rows if r.recipe == recipe), key=lambda r: r.speedup):
        others = [v for name in against if (v := interpolate(rows, name, row.speedup)) is not None]
        if others:
            sts, std = max(others)
            found.append((row, row.sts_avg - sts, max(row.sts_std, std)))
    return found


Target = tuple[str, str, bool]  # (the target, what was measured, whether it was met)


def targets_markdown(targets: Sequence[Target]) -> str:
    lines = ["| target | measured | met |", "| --- | --- | :-: |"]
    return "\n".join([*lines, *(f"| {t} | {m} | {'yes' if met else 'no'} |" for t, m, met in targets)])


def targets_table(rows: Sequence[Row]) -> str:
    """The study's targets, each with what was measured and whether it was met."""
    recovered, int8 = RECIPES["sparsecse", "after"], RECIPES["sparsecse", "int8"]
    dense_int8 = next(r for r in rows if r.recipe == RECIPES["dense", "int8"])
    targets: list[Target] = []

    def add(target: str, measured: str, met: bool) -> None:
        targets.append((target, measured, met))

    def at(row: Row | None) -> str:
        return (
            "nothing that fast" if row is None else f"{row.sts_avg:.2f} at {row.speedup:.2f}x ({row.level})"
        )

    # no level lands on dense int8's speed-up: the recovered line between its two nearest levels
    found = interpolate(rows, recovered, dense_int8.speedup)
    measured = "none" if found is None else f"{found[0]:.2f}, between its levels on either side of that speed"
    add(f"{recovered} beats dense int8 ONNX ({dense_int8.sts_avg:.2f} at {dense_int8.speedup:.2f}x) at its "
        "speed", measured, found is not None and found[0] > dense_int8.sts_avg)  # fmt: skip
    good = [r for r in rows if r.recipe == int8 and r.sts_avg >= dense_int8.sts_avg]
    row = max(good, key=lambda r: r.speedup, default=None)
    add(f"{int8} reaches 3.5x at an STS avg no lower than dense int8's", f"fastest that good: {at(row)}",
        row is not None and row.speedup >= 3.5)  # fmt: skip
    for speedup, floor in FLOORS:
        row = best_at(rows, speedup, [recovered])
        add(
            f"{recovered} keeps {floor} at {speedup}x or faster",
            at(row),
            row is not None and row.sts_avg >= floor,
        )
    for name, against in COMPETITORS.items():
        found = margins(rows, recovered, against)
        text = ", ".join(f"{m:+.2f} at {r.speedup:.2f}x (spread {s:.2f})" for r, m, s in found)
        met = bool(found) and all(m > s for _, m, s in found)
        add(f"{recovered} beats {name} at equal speed by more than the seed spread", text or "none", met)
    return targets_markdown(targets)


JOINT_SERIES = ("joint", "joint-int8")  # the series pruned to a speed target
JOINT, JOINT_INT8 = RECIPES["joint", "after"], RECIPES["joint-int8", "int8"]
AHEAD_FROM = 2.5  # from this speed-up up, the joint recipe should beat layers dropped evenly
FAST_FLOORS = ((4.0, None), (8.0, 77.0))  # (speed-up, the STS avg to keep there; None: the dense model's)
SPEED_TOLERANCE = 0.10  # a model asked for X should measure X within this
POINT_MINUTES = 15  # what one point of the joint recipe may cost on the 2 cores


def level_speedup(level: str) -> float:
    """The speed-up a joint level (`x2.5`) asked for, over the dense model in its own runtime."""
    return float(level.removeprefix("x"))


def asked_speedup(unit: Point | Row, dense_int8: float) -> float:
    """The speed-up over dense PyTorch a joint point or row asked for: an int8 one's level is over
    dense int8, so it is times dense int8's (`dense_int8`)."""
    return level_speedup(unit.level) * (dense_int8 if unit.recipe == JOINT_INT8 else 1.0)


def target_misses(points: Sequence[Point], dense_int8: float) -> list[tuple[Point, float]]:
    """Each joint point's measured speed-up over the one it asked for, minus 1."""
    joint = [p for p in points if p.recipe in (JOINT, JOINT_INT8)]
    return [(p, p.speedup / asked_speedup(p, dense_int8) - 1) for p in joint]


def logged_seconds(root: str | Path) -> dict[str, int]:
    """Each point's wall seconds, from the driver's logs (`logs/*.log`, by date: a later log's figure for
    a point wins), by its folder (`joint/x2.5/seed1`)."""
    seconds = {}
    for log in sorted((Path(root) / LOGS).glob("*.log")):
        for line in log.read_text().splitlines():
            if (match := LOG_LINE.match(line)) and match["series"] in LEVEL_NAMES:
                seconds[point_name(match["series"], match["level"], match["seed"])] = int(match["seconds"])
    return seconds


def pick_targets(rows: Sequence[Row], speedups: Sequence[float], noise: float) -> list[Target]:
    """At each speed-up, the joint recipe is the pick (or the study cannot tell the pick from it)."""
    found = []
    for speedup in speedups:
        pick = pick_at(rows, speedup, noise)
        chosen = [] if pick is None else [pick.best, *pick.tied]
        found.append((f"the joint recipe is the pick at {speedup}x (on the frontier there)",
                      "nothing that fast" if pick is None else _named(pick.best),
                      any(r.recipe in (JOINT, JOINT_INT8) for r in chosen)))  # fmt: skip
    return found


def ahead_targets(rows: Sequence[Row], dense_int8: float) -> list[Target]:
    """In each runtime, the joint levels asked for AHEAD_FROM or more over dense PyTorch beat layers
    dropped evenly at their speed by more than the seed spread; levels outside the layers' speeds are
    named and not counted."""
    found = []
    for recipe, against in ((JOINT, RECIPES["layers", "after"]), (JOINT_INT8, RECIPES["layers", "int8"])):
        asked = [r for r in rows if r.recipe == recipe and asked_speedup(r, dense_int8) >= AHEAD_FROM]
        compared = [(r, m, s) for r, m, s in margins(rows, recipe, [against]) if r in asked]
        measured = [f"{m:+.2f} at {r.speedup:.2f}x ({r.level}, spread {s:.2f})" for r, m, s in compared]
        outside = [r.level for r in asked if r not in [c[0] for c in compared]]
        measured += [f"{level}: outside the speed-ups theirs reach" for level in outside]
        found.append((f"{recipe} beats {against} at equal speed from {AHEAD_FROM}x up, by more than the "
                      "seed spread", ", ".join(measured) or "none that fast",
                      bool(compared) and all(m > s for _, m, s in compared)))  # fmt: skip
    return found


def floor_targets(rows: Sequence[Row]) -> list[Target]:
    """At each of FAST_FLOORS' speed-ups or faster, the joint recipe's best keeps its STS avg floor."""
    dense = next(r for r in rows if r.recipe == RECIPES["dense", "after"])
    found = []
    for speedup, floor in FAST_FLOORS:
        floor = dense.sts_avg if floor is None else floor
        row = best_at(rows, speedup, [JOINT, JOINT_INT8])
        found.append((f"the joint recipe keeps {floor:.2f} at {speedup}x or faster",
                      "nothing that fast" if row is None else _named(row),
                      row is not None and row.sts_avg >= floor))  # fmt: skip
    return found


def asked_speed_target(points: Sequence[Point], dense_int8: float) -> Target:
    """Every joint point measures the speed-up it asked for within SPEED_TOLERANCE."""
    misses = target_misses(points, dense_int8)
    point, worst = max(misses, key=lambda m: abs(m[1]))
    within = sum(abs(m) <= SPEED_TOLERANCE for _, m in misses)
    furthest = f"furthest {worst:+.1%} ({point.recipe}, {point.level}, seed {point.seed})"
    return (f"every joint point measures the speed-up it asked for within {SPEED_TOLERANCE:.0%}",
            f"{within} of {len(misses)}; {furthest}", within == len(misses))  # fmt: skip


def cost_target(seconds: dict[str, int]) -> Target:
    """Every joint point the driver logged took at most POINT_MINUTES."""
    costs = {name: s for name, s in seconds.items() if name.split("/")[0] in JOINT_SERIES}
    longest = max(costs, key=costs.get, default=None)
    found = "no point logged" if longest is None else f"the longest {costs[longest] / 60:.1f} min ({longest})"
    return (f"a joint point costs at most {POINT_MINUTES} minutes", f"{len(costs)} points; {found}",
            bool(costs) and max(costs.values()) <= POINT_MINUTES * 60)  # fmt: skip


def joint_targets_table(rows: Sequence[Row], points: Sequence[Point], seconds: dict[str, int],
                        noise: float = 0.0, speedups: Sequence[float] = SPEEDUPS) -> str | None:  # fmt: skip
    """The joint recipe's targets, each with what was measured and whether it was met (None before the
    study has joint points): the pick at each of `speedups` (the study's), ahead of layers dropped evenly
    at equal speed, the STS avg kept at the fast end, the speed-ups measured against those asked for,
    and what a point cost (`seconds`, from `logged_seconds`)."""
    joint = [r for r in rows if r.recipe in (JOINT, JOINT_INT8)]
    if not joint:
        return None
    dense_int8 = next(r for r in rows if r.recipe == RECIPES["dense", "int8"]).speedup
    targets = [*pick_targets(rows, speedups, noise), *ahead_targets(rows, dense_int8), *floor_targets(rows)]
    return targets_markdown([*targets, asked_speed_target(points, dense_int8), cost_target(seconds)])


PLANS_HEADER = ("runtime", "asked", "seed", "layers kept", "heads", "FFN neurons", "predicted",
                "measured by the command", "measured in the speed run", "STS avg, no recovery",
                "+ recovery")  # fmt: skip


def joint_plans_table(root: str | Path) -> str | None:
    """What each joint point kept for the speed-up it asked for, the speed-up its command predicted and
    measured, the speed run's figure (over the dense model in its runtime) and its STS avg before and
    after recovery (the int8 graph's, for an int8 target); None before the study has joint points."""
    root = Path(root)
    speed = json.loads((root / SPEED).read_text())["speedup"]
    found = sorted(p for series in JOINT_SERIES for p in (root / series).glob(f"*/seed*/{RESULTS}"))
    if not found:
        return None
    listed = lambda values: ", ".join(map(str, values))  # noqa: E731
    lines = ["| " + " | ".join(PLANS_HEADER) + " |", "| --- | --: | --: | --- | --- | --- |" + " --: |" * 5]
    for path in found:
        results, name = json.loads(path.read_text()), str(path.parent.relative_to(root))
        target, (heads, ffn) = results["target_speedup"], recorded_structure(results)
        int8 = target["runtime"] == "int8"
        run = speed.get(f"{name} {'int8' if int8 else 'PyTorch'}")
        run = "-" if run is None else f"{run / (speed['dense int8'] if int8 else 1.0):.2f}x"
        after = results["int8" if int8 else "after"]["sts_avg"]
        cells = [target["runtime"], f"{target['asked']}x", results["seed"], listed(results["layers_kept"]),
                 listed(heads), listed(ffn), f"{target['predicted']:.2f}x", f"{target['measured']:.2f}x", run,
                 f"{results['pruned']['sts_avg']:.2f}", f"{after:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def speed_noise(root: str | Path) -> float:
    """How far the speed-ups moved between the last two speed runs of a study folder: the median of
    |later / earlier - 1| over the models both timed (0 with fewer than two runs)."""
    from sparsecse.pruning.speed import median_abs, shift

    runs = [run for run in json.loads((Path(root) / SPEED).read_text()).get("runs", []) if "speedup" in run]
    if len(runs) < 2:
        return 0.0
    moved = shift(runs[-2]["speedup"], runs[-1]["speedup"])
    moved.pop("dense PyTorch", None)
    return median_abs(list(moved.values()))


PICKS = "picks"  # <root>/picks/<level>/seed<S>/results.json: the picks, each run as the one command
# <root>/distillation/<variant>/seed<S>/results.json: the dense control distilled otherwise (another
# corpus, the student's dropout off)
DISTILLATION = "distillation"


def pick_runs_table(root: str | Path) -> str | None:
    """What each pick's `sparsecse-prune ... onnx=int8` run printed, seed by seed: its STS avg in
    PyTorch and as the int8 graph (None without a picks folder)."""
    found = sorted((Path(root) / PICKS).glob(f"*/seed*/{RESULTS}"))
    if not found:
        return None
    lines = ["| level | seed | STS avg, PyTorch | STS avg, int8 ONNX |", "| --- | --: | --: | --: |"]
    for path in found:
        results = json.loads(path.read_text())
        level, seed = path.parent.parent.name, results["seed"]
        lines.append(
            f"| {level} | {seed} | {results['after']['sts_avg']:.2f} | {results['int8']['sts_avg']:.2f} |"
        )
    return "\n".join(lines)


BACKENDS = "backends.json"  # bench/int8_backends.py's figures: each model through each runtime


def backends_table(root: str | Path) -> str | None:
    """Each model through each runtime (bench/int8_backends.py, one speed run): encode speed-up over
    dense PyTorch and STS avg, as `1.23x, 78.90` (None without a backends.json)."""
    path = Path(root) / BACKENDS
    if not path.is_file():
        return None
    variants = json.loads(path.read_text())["variants"]
    runtimes = list(next(iter(variants.values())))
    lines = [f"| model | {' | '.join(runtimes)} |", f"| --- |{' --: |' * len(runtimes)}"]
    for model, figures in variants.items():
        cells = [f"{figures[r]['speedup']:.2f}x, {figures[r]['sts_avg']:.2f}" for r in runtimes]
        lines.append(f"| {model} | {' | '.join(cells)} |")
    return "\n".join(lines)


def compression_tables(root: str | Path) -> str:
    """The tables of docs/compression.md: every (recipe, level), the frontier, the pick at each speed,
    the targets, and what the picks' own commands printed."""
    points = read_points(root)
    rows, noise = summarise(points), speed_noise(root)
    parts = {
        "All recipes:": rows_table(rows),
        "The Pareto frontier:": rows_table(frontier(rows)),
        f"The pick at each speed (speed noise {noise:.1%}: the median shift between the last two speed "
        "runs):": picks_table(rows, noise),
        "The targets:": targets_table(rows),
        "The joint recipe's targets:": joint_targets_table(rows, points, logged_seconds(root), noise),
        "What each speed target kept (speed-ups over the dense model in the runtime asked for):": (
            joint_plans_table(root)
        ),
        "Each pick as its own command printed it, seed by seed:": pick_runs_table(root),
        "The int8 backends (bench/int8_backends.py), each model's speed-up over dense PyTorch and STS "
        "avg:": backends_table(root),
    }
    return "\n\n".join(f"{title}\n\n{table}" for title, table in parts.items() if table is not None)


def pareto_plot(rows: Sequence[Row], path: str | Path) -> Path:
    """STS avg against encode speed-up, one line per recipe with ± std bars, the frontier dashed."""
    from sparsecse.report.plots import quality_against_speed

    lines: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in sorted(rows, key=lambda r: r.speedup):
        lines.setdefault(row.recipe, []).append((row.speedup, row.speedup_std, row.sts_avg, row.sts_std))
    best = [(row.speedup, row.sts_avg) for row in frontier(rows)]
    return quality_against_speed(lines, best, path)
