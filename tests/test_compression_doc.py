"""docs/compression.md against the study it reports: its generated block is what `compression_tables`
makes of docs/compression/ today, its plot is there, every model has its speed, and every number its
sentences quote (the phrases below) is computed here from the published results."""

from __future__ import annotations

import json
import re
import shlex
import statistics
from functools import cache

import pytest

from sparsecse.cli import REPO_ROOT
from sparsecse.report.compression import (
    DISTILLATION,
    JOINT,
    JOINT_INT8,
    LOG_LINE,
    PICKS,
    RECIPES,
    RUNTIMES,
    SPEED,
    SPEED_TOLERANCE,
    SPEEDUPS,
    TABLES_BEGIN,
    TABLES_END,
    Row,
    best_at,
    clear_pick,
    compression_tables,
    frontier,
    joint_targets_table,
    logged_seconds,
    margins,
    read_points,
    recorded_structure,
    speed_noise,
    summarise,
    target_misses,
    targets_table,
)

STUDY = REPO_ROOT / "docs" / "compression"
DOC = REPO_ROOT / "docs" / "compression.md"
INT8 = {"dense", "sparsecse", "layers", "layers-importance", "joint-int8"}  # the series exported to int8 ONNX


@cache
def doc() -> str:
    """White space folded, so that a phrase matches however the Markdown wraps it."""
    return re.sub(r"\s+", " ", DOC.read_text())


@cache
def rows() -> dict[tuple[str, str], Row]:
    return {(row.recipe, row.level): row for row in summarise(read_points(STUDY))}


@cache
def results() -> dict[str, dict]:
    """The study's points (the picks, run again each as its own command, and the dense control on
    another corpus are not points of it)."""
    found = {str(p.parent.relative_to(STUDY)): json.loads(p.read_text()) for p in STUDY.rglob("results.json")}
    return {
        name: point for name, point in found.items() if not name.startswith((f"{PICKS}/", f"{DISTILLATION}/"))
    }


@cache
def speed() -> dict:
    return json.loads((STUDY / SPEED).read_text())


def shifts_between_the_last_two_runs() -> dict[str, float]:
    """For each model both of the last two speed runs timed, how far its speed-up moved (last /
    earlier - 1)."""
    earlier, last = (run["speedup"] for run in speed()["runs"][-2:])
    return {name: last[name] / earlier[name] - 1 for name in earlier if name in last}


def recipe_row(series: str, variant: str, level: str) -> Row:
    return rows()[RECIPES[series, variant], level]


def signed(values: list[float]) -> str:
    return ", ".join(f"{v:+.2f}" for v in values)


def test_the_generated_block_is_the_tables_of_the_published_study():
    block = DOC.read_text().split(TABLES_BEGIN)[1].split(TABLES_END)[0]
    assert block.strip() == compression_tables(STUDY)


def test_every_published_model_has_its_speed_and_the_plot_is_there():
    speedup = speed()["speedup"]
    for name in results():
        assert f"{name} {RUNTIMES.get(name.split('/')[0], 'PyTorch')}" in speedup, name
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
    chosen, evenly = recipe_row("layers-importance", "int8", "keep2"), recipe_row("layers", "int8", "keep2")
    assert f"In int8 at keep2 it scores {chosen.sts_avg:.2f} against {evenly.sts_avg:.2f}" in doc()
    chosen, evenly = recipe_row("layers-importance", "after", "keep2"), recipe_row("layers", "after", "keep2")
    assert chosen.speedup == evenly.speedup  # one shape, one timing
    assert f"so they share one timing: {evenly.speedup:.2f}x" in doc()


def test_what_int8_adds_over_the_same_models():
    def gains(series: str, levels: tuple[str, ...]) -> str:
        return ", ".join(
            f"{recipe_row(series, 'int8', level).speedup / recipe_row(series, 'after', level).speedup:.2f}x"
            for level in levels
        )

    layers = gains("layers", ("keep5", "keep4", "keep3", "keep2"))
    sparsecse = gains("sparsecse", ("p0.35", "p0.55", "p0.75", "p0.85"))
    assert f"int8 is {layers} faster for layers dropped evenly" in doc()
    assert f"and {sparsecse} for recovered SparseCSE" in doc()


def test_int8_gains_on_pruned_shapes_against_the_target():
    gain = (
        recipe_row("sparsecse", "int8", "p0.55").speedup / recipe_row("sparsecse", "after", "p0.55").speedup
    )
    verdict = "met" if gain >= 1.9 else "missed"
    assert f"At p = 0.55 int8 gains {gain:.2f}x over its PyTorch model (target 1.9x: {verdict})." in doc()


def test_the_static_reference_against_the_fastest_transformer():
    static = recipe_row("model2vec", "after", "-")
    distilled = json.loads((STUDY / "model2vec" / "results.json").read_text())["distill_seconds"]
    transformers = [row for row in rows().values() if row.recipe != static.recipe]
    fastest = max(transformers, key=lambda row: (row.speedup, row.sts_avg))
    assert f"scores {static.sts_avg:.2f} at {static.speedup:.0f}x" in doc()
    assert (
        f"The fastest transformer of the study, {fastest.recipe} ({fastest.level}), scores "
        f"{fastest.sts_avg:.2f} at {fastest.speedup:.2f}x: {fastest.sts_avg - static.sts_avg:+.2f} points "
        f"against the static model, at {static.speedup / fastest.speedup:.0f} times less speed" in doc()
    )
    below = [row for row in transformers if row.sts_avg <= static.sts_avg]
    named = "; ".join(f"{r.recipe} ({r.level}), {r.sts_avg:.2f} at {r.speedup:.2f}x" for r in below)
    assert (
        f"{len(transformers) - len(below)} of the {len(transformers)} transformer rows score above it"
        in doc()
    )
    assert not below or f"below it: {named}." in doc()
    line = frontier(list(rows().values()))  # sorted by speed-up
    before = line[line.index(static) - 1]
    assert (
        f"On the frontier the static model follows {before.recipe} ({before.level}, {before.sts_avg:.2f} "
        f"at {before.speedup:.2f}x)" in doc()
    )
    assert f"model2vec distilled from the same MiniLM in {distilled:.0f} s" in doc()


@cache
def backends() -> dict:
    return json.loads((STUDY / "backends.json").read_text())


def test_the_best_int8_backend_on_the_dense_model_against_the_target():
    dense = backends()["variants"]["dense"]
    best = max((name for name in dense if name != "PyTorch"), key=lambda name: dense[name]["speedup"])
    assert best == "OpenVINO int8 (NNCF)", "the doc names OpenVINO as the fastest"
    speedup, sts, pytorch = dense[best]["speedup"], dense[best]["sts_avg"], dense["PyTorch"]["sts_avg"]
    verdict = "met" if speedup >= 2.5 and abs(sts - pytorch) <= 0.5 else "missed"
    assert (
        f"runs dense MiniLM at {speedup:.2f}x dense PyTorch, at {sts:.2f} against the PyTorch model's "
        f"{pytorch:.2f} (target: 2.5x at an STS within 0.5: {verdict})" in doc()
    )


def test_which_backends_ship():
    """A backend ships only where it is faster than dynamic int8 at an STS no more than 0.2 below it."""
    variants = backends()["variants"]
    dynamic = "ORT dynamic int8"

    def ships(backend: str) -> bool:
        faster = all(m[backend]["speedup"] > m[dynamic]["speedup"] for m in variants.values())
        return faster and all(m[backend]["sts_avg"] >= m[dynamic]["sts_avg"] - 0.2 for m in variants.values())

    assert ships("OpenVINO int8 (NNCF)") and not ships("ORT static int8")
    assert f"ONNX Runtime's dynamic int8 on all {len(variants)} models, at an STS no lower than it" in doc()
    assert all(m["OpenVINO int8 (NNCF)"]["sts_avg"] >= m[dynamic]["sts_avg"] for m in variants.values())
    slower = sum(m["ORT static int8"]["speedup"] < m[dynamic]["speedup"] for m in variants.values())
    below = [m[dynamic]["sts_avg"] - m["ORT static int8"]["sts_avg"] for m in variants.values()]
    assert (
        f"slower than its dynamic int8 on {slower} of the {len(variants)} models and scores "
        f"{min(below):.2f} to {max(below):.2f} below it" in doc()
    )


@pytest.mark.parametrize("speedup", SPEEDUPS)
def test_the_pick_at_each_speed(speedup):
    row = best_at(list(rows().values()), speedup)
    pick = f"{row.recipe} ({row.level}), {row.sts_avg:.2f} at {row.speedup:.2f}x"
    assert f"at {speedup}x or faster: {pick}" in doc()
    if (sure := clear_pick(list(rows().values()), speedup, speed_noise(STUDY))) is not None:
        assert (
            f"{pick}, within the speed noise of {speedup}x: the pick clearly that fast is {sure.recipe} "
            f"({sure.level}, {sure.sts_avg:.2f} at {sure.speedup:.2f}x)" in doc()
        )


def test_how_often_the_joint_recipe_is_the_pick():
    picks = [best_at(list(rows().values()), speedup).recipe for speedup in SPEEDUPS]
    joint = sum(pick in (JOINT, JOINT_INT8) for pick in picks)
    layered = sum(pick.startswith("layers dropped evenly") for pick in picks)
    assert joint + layered == len(picks), picks
    assert (
        f"The joint recipe is the pick at {joint} of the {len(picks)} speeds the study aims at, layers "
        f"dropped evenly + distillation at {layered}" in doc()
    )


def test_the_joint_recipe_against_layers_dropped_evenly_at_equal_speed():
    for runtime, variant in (("PyTorch", "after"), ("int8", "int8")):
        recipe = JOINT if runtime == "PyTorch" else JOINT_INT8
        found = margins(list(rows().values()), recipe, [RECIPES["layers", variant]])
        compared = ", ".join(f"{m:+.2f} at {r.speedup:.2f}x ({r.level}, spread {s:.2f})" for r, m, s in found)
        assert f"In {runtime}, against layers dropped evenly at equal speed: {compared}." in doc()


def test_how_close_the_joint_points_come_to_the_speed_they_asked_for():
    misses = target_misses(read_points(STUDY), recipe_row("dense", "int8", "-").speedup)
    within = sum(abs(miss) <= SPEED_TOLERANCE for _, miss in misses)
    outside = "; ".join(
        f"{p.recipe} ({p.level}, seed {p.seed}), {m:+.1%}" for p, m in misses if abs(m) > SPEED_TOLERANCE
    )
    assert (
        f"{within} of the {len(misses)} joint points measure the speed-up they asked for within "
        f"{SPEED_TOLERANCE:.0%} in the speed run (over the dense model of the runtime asked for), a median "
        f"{statistics.median(abs(miss) for _, miss in misses):.1%} off; outside it: {outside}." in doc()
    )
    fastest = [miss for p, miss in misses if p.level == "x8.0"]
    assert max(map(abs, fastest)) == max(abs(miss) for _, miss in misses)
    assert (
        f"asked for 8x, every seed in both runtimes runs {min(fastest):.1%} to {max(fastest):.1%} faster "
        "than asked" in doc()
    ) and min(fastest) > 0


def test_what_the_joint_recipe_keeps_at_the_fast_end():
    dense = recipe_row("dense", "after", "-").sts_avg
    for speedup, floor in ((4.0, dense), (8.0, 77.0)):
        best = best_at(list(rows().values()), speedup, [JOINT, JOINT_INT8])
        assert (
            f"at {speedup:.0f}x or faster it keeps {best.sts_avg:.2f} ({best.level}, {best.speedup:.2f}x), "
            f"{best.sts_avg - floor:+.2f} against {floor:.2f}" in doc()
        )


def joint_plans(level: str) -> list[dict]:
    """The results.json of each seed of the joint recipe's int8 `level`."""
    return [
        json.loads(p.read_text()) for p in sorted((STUDY / "joint-int8" / level).glob("seed*/results.json"))
    ]


def test_why_the_joint_recipe_keeps_what_it_keeps_at_the_fast_end():
    """At 4x it keeps four whole layers, chosen otherwise than evenly; at 8x two whole layers are
    already short of 77.0, and thinning them to be faster costs more."""
    x14, keep4 = rows()[JOINT_INT8, "x1.4"], recipe_row("layers", "int8", "keep4")
    assert all(
        r["layers_kept"] == [0, 2, 4, 5] and set(recorded_structure(r)[0]) == {12}
        for r in joint_plans("x1.4")
    )
    assert x14.speedup == keep4.speedup  # one shape, one timing
    assert f"where layers dropped evenly keep [0, 2, 3, 5] ({keep4.sts_avg:.2f} at the same speed" in doc()
    x25, keep2 = rows()[JOINT_INT8, "x2.5"], recipe_row("layers", "int8", "keep2")
    assert all(
        r["layers_kept"] == [0, 5] and set(recorded_structure(r)[0]) == {12} for r in joint_plans("x2.5")
    )
    assert x25.speedup == keep2.speedup < 8.0
    assert f"score {x25.sts_avg:.2f} and {keep2.sts_avg:.2f} at {keep2.speedup:.2f}x, just under 8x" in doc()
    x28 = rows()[JOINT_INT8, "x2.8"]
    thinned = "; ".join(
        f"heads {recorded_structure(r)[0]} and FFN neurons {recorded_structure(r)[1]} on seed {r['seed']}"
        for r in joint_plans("x2.8")
    )
    assert all(r["layers_kept"] == [0, 5] for r in joint_plans("x2.8"))
    assert f"asked 2.8x over dense int8: {thinned}), and the score falls to {x28.sts_avg:.2f}" in doc()
    keep1 = recipe_row("layers", "int8", "keep1")
    assert keep1.speedup > x28.speedup and keep1.sts_avg < x28.sts_avg
    assert f"One layer is faster still and scores less ({keep1.sts_avg:.2f} at {keep1.speedup:.2f}x" in doc()


def test_where_recovered_sparsecse_is_on_the_frontier():
    on_it = [row for row in frontier(list(rows().values())) if row.recipe.startswith("SparseCSE")]
    named = "; ".join(f"{r.recipe} ({r.level}), {r.sts_avg:.2f} at {r.speedup:.2f}x" for r in on_it)
    points = f"{len(on_it)} point{'s' if len(on_it) != 1 else ''}"
    assert f"Recovered SparseCSE is on the Pareto frontier at {points}: {named}." in doc()
    layers = sorted(
        (r for r in rows().values() if r.recipe.startswith("layers dropped")), key=lambda r: r.speedup
    )

    def at(row: Row | None) -> str:
        return "none faster" if row is None else f"{row.sts_avg:.2f} at {row.speedup:.2f}x"

    gaps = "; ".join(
        f"{at([r for r in layers if r.speedup < row.speedup][-1])} and "
        f"{at(next((r for r in layers if r.speedup > row.speedup), None))}"
        for row in on_it
    )
    assert f"layer-dropped models (the nearest slower and faster one: {gaps})." in doc()


def met(table: str) -> list[str]:
    return [line.rsplit("|", 2)[1].strip() for line in table.splitlines()[2:]]


def test_how_many_targets_are_met():
    found = met(targets_table(list(rows().values())))
    assert f"{found.count('yes')} of the {len(found)} targets are met" in doc()
    points = read_points(STUDY)
    joint = met(joint_targets_table(summarise(points), points, logged_seconds(STUDY), speed_noise(STUDY)))
    assert f"{joint.count('yes')} of the joint recipe's {len(joint)} targets are met" in doc()


def test_the_seeds_each_row_holds():
    dense = {RECIPES["dense", "after"], RECIPES["dense", "int8"], RECIPES["model2vec", "after"]}
    seeds = sorted({row.seeds for row in rows().values() if row.recipe not in dense})
    held = f"{seeds[0]} seed" if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]} seeds"
    assert f"each row of a recipe holds {held}" in doc()


def test_the_budget_of_a_recovery_and_of_the_study():
    minutes = [r["recovery"]["seconds"] / 60 for r in results().values() if "recovery" in r]
    assert max(minutes) <= 10  # the budget a MiniLM recovery has on 2 cores
    assert (
        f"{len(minutes)} recoveries of 500 steps took {statistics.median(minutes):.1f} min (median) "
        f"and at most {max(minutes):.1f} min" in doc()
    )
    seconds = [int(m["seconds"]) for log in sorted((STUDY / "logs").glob("*.log"))
               for line in log.read_text().splitlines() if (m := LOG_LINE.match(line))]  # fmt: skip
    assert f"the {len(seconds)} point runs in the driver's logs took {sum(seconds) / 3600:.1f} h" in doc()


def test_the_log_line_pattern_reads_the_drivers_lines():
    assert LOG_LINE.match("sparsecse 0.35 seed 1: STS avg 79.40, 375 s")["seconds"] == "375"
    assert LOG_LINE.match("dense: 66 s")["seconds"] == "66"
    assert LOG_LINE.match("every point in /x; 300 s this start") is None


def test_the_study_folder_holds_no_weights():
    assert not [p for p in STUDY.rglob("*") if p.suffix in {".safetensors", ".onnx", ".bin", ".ckpt"}]


def test_every_model_was_timed_in_the_last_speed_run():
    last = speed()["runs"][-1]
    assert last["models"] == len(speed()["speedup"])  # the earlier runs' figures are all replaced
    stand_ins = [name for name in last["stand_ins"] if not name.startswith("check/")]
    assert (
        f"all {last['models']} models in one speed run ({last['timed']} timings: models of one shape "
        f"share one), on {last['date']} on an {last['cpu']}, {last['threads']}; {len(stand_ins)} of them "
        "stand-ins" in doc()
    )
    every = re.search(r"around every (\d+)", last["protocol"])[1]
    assert f"{last['rounds']} rounds of the first {last['sentences']:,} sentences of STS-B dev" in doc()
    assert f"the dense model timed around every {every} models" in doc()


def test_the_stand_in_checks_are_quoted_from_the_speed_run():
    speedup = speed()["speedup"]
    checked = sorted(
        {name.split(" ")[0].removeprefix("check/") for name in speedup if name.startswith("check/")}
    )
    assert checked, "the last speed run timed no stand-in beside its model"
    pairs = "; ".join(
        f"{point}: "
        + ", ".join(
            f"{speedup[f'check/{point} {kind}']:.2f}x against {speedup[f'{point} {kind}']:.2f}x ({kind})"
            for kind in ("PyTorch", "int8")
        )
        for point in checked
    )
    assert f"stand-ins timed beside their models ran {pairs}" in doc()
    gaps = {
        kind: max(abs(speedup[f"check/{p} {kind}"] / speedup[f"{p} {kind}"] - 1) for p in checked)
        for kind in ("PyTorch", "int8")
    }
    shifts = [abs(v) for name, v in shifts_between_the_last_two_runs().items() if name != "dense PyTorch"]
    assert (
        f"a stand-in's speed-up was within {gaps['PyTorch']:.1%} of its model's in PyTorch and "
        f"{gaps['int8']:.1%} in int8, where the two speed runs moved each speed-up by a median "
        f"{statistics.median(shifts):.1%} and at most {max(shifts):.1%}" in doc()
    )


def test_the_last_two_speed_runs_agree_within_five_percent():
    """How far a speed-up repeats: the models both of the last two speed runs timed, on one CPU."""
    earlier, last = speed()["runs"][-2:]
    for key in ("cpu", "threads", "rounds", "sentences", "protocol"):
        assert earlier[key] == last[key], key
    shifts = {n: s for n, s in shifts_between_the_last_two_runs().items() if n != "dense PyTorch"}
    median = statistics.median(map(abs, shifts.values()))
    largest = max(shifts.items(), key=lambda item: abs(item[1]))
    assert median == pytest.approx(speed_noise(STUDY))
    assert median <= 0.05, "the speed protocol's target: two runs within 5% (median absolute shift)"
    assert (
        f"for the {len(shifts)} models both timed, the speed-ups moved by a median {median:.1%} "
        f"(absolute); the largest shift was {largest[1]:+.1%} ({largest[0]})" in doc()
    )
    assert (
        f"the dense model encoded {earlier['dense_sentences_per_second']} and "
        f"{last['dense_sentences_per_second']} sentences a second" in doc()
    )
    faster = last["dense_sentences_per_second"] / earlier["dense_sentences_per_second"] - 1
    pace = "faster" if faster > 0 else "slower"
    assert f"the machine ran {abs(faster):.0%} {pace} in the last run" in doc()
    timed_before = read_points(STUDY, run=-2)  # the picks among the models both runs timed
    both = {(p.recipe, p.level, p.seed) for p in timed_before}
    timed_last = [p for p in read_points(STUDY, run=-1) if (p.recipe, p.level, p.seed) in both]
    rows_before, rows_last = (
        {(r.recipe, r.level): r for r in summarise(timed)} for timed in (timed_before, timed_last)
    )
    before, after = ([best_at(list(r.values()), s) for s in SPEEDUPS] for r in (rows_before, rows_last))
    changed = [s for s, a, b in zip(SPEEDUPS, before, after) if (a.recipe, a.level) != (b.recipe, b.level)]
    same = len(SPEEDUPS) - len(changed)
    assert f"Picked among the models both runs timed, {same} of the {len(SPEEDUPS)} picks are the same" in (
        doc()
    )
    if changed:
        picked = " and ".join(
            f"{a.recipe} ({a.level}) at {s}x, which measured {rows_last[a.recipe, a.level].speedup:.2f}x in "
            "the last run"
            for s, a in zip(SPEEDUPS, before)
            if s in changed
        )
        assert f"the run before picked {picked}" in doc()
        for s in changed:  # a pick changes when one of the two crosses the speed between the runs
            pick, was = after[SPEEDUPS.index(s)], before[SPEEDUPS.index(s)]
            then = rows_before[pick.recipe, pick.level].speedup
            assert then < s or rows_last[was.recipe, was.level].speedup < s
            assert then >= s or f"the last run's pick there had measured {then:.2f}x, short of {s}x" in doc()


def pick_section() -> str:
    return DOC.read_text().split("## The picks, each as one command")[1].split("## Results")[0]


@cache
def picks() -> dict[tuple[int, int], dict]:
    """(layers kept, seed) -> the results.json of the pick's own command."""
    return {
        (int(p.parent.parent.name.removeprefix("keep")), int(p.parent.name.removeprefix("seed"))): json.loads(
            p.read_text()
        )
        for p in sorted((STUDY / PICKS).glob("*/seed*/results.json"))
    }


def test_each_pick_was_run_as_the_command_the_doc_gives():
    """The command, with the pick's layers and seed, composes to the config its run recorded."""
    from helpers import compose_prune

    from sparsecse.cli import resolved
    from sparsecse.cli.prune import UNCOMPARED_KEYS
    from sparsecse.core.runs import differences

    block = pick_section().split("```bash\n")[1].split("```")[0].replace("\\\n", " ")
    program, *overrides = shlex.split(block)
    assert program == "sparsecse-prune"
    assert {(5, 1), (3, 1)} <= set(picks()), "keep5, the pick at 1.8x and 2.5x, and keep3, seed 1"
    for (keep, seed), results in picks().items():
        mine = [o for o in overrides if not o.startswith(("layers.keep=", "seed="))]
        config = resolved(compose_prune([*mine, f"layers.keep={keep}", f"seed={seed}"]))
        assert differences(results["config"], config, UNCOMPARED_KEYS) == [], (keep, seed)
        assert results["seed"] == seed
        assert results["layers_kept"] == {5: [0, 1, 2, 4, 5], 3: [0, 2, 5]}[keep]


def test_the_joint_picks_are_the_command_the_doc_gives():
    """Each pick of the joint recipe is a point of the study, run as the doc's second command with the
    pick's asked speed-up and seed: the command composes to the config each seed's run recorded."""
    from helpers import compose_prune

    from sparsecse.cli import resolved
    from sparsecse.cli.prune import UNCOMPARED_KEYS
    from sparsecse.core.runs import differences

    picked = {best_at(list(rows().values()), s) for s in SPEEDUPS} & {
        row for row in rows().values() if row.recipe in (JOINT, JOINT_INT8)
    }
    assert picked, "no joint pick: the doc gives no command for one"
    block = pick_section().split("```bash\n")[2].split("```")[0].replace("\\\n", " ")
    program, *overrides = shlex.split(block)
    assert program == "sparsecse-prune" and "onnx=int8" in overrides
    mine = [o for o in overrides if not o.startswith(("pruning.target_speedup=", "seed=", "onnx="))]
    for row in picked:
        series = "joint-int8" if row.recipe == JOINT_INT8 else "joint"  # a PyTorch pick: without onnx=int8
        for path in sorted((STUDY / series / row.level).glob("seed*/results.json")):
            recorded = json.loads(path.read_text())
            asked = [f"pruning.target_speedup={row.level.removeprefix('x')}", f"seed={recorded['seed']}"]
            asked += ["onnx=int8"] if series == "joint-int8" else []
            config = resolved(compose_prune([*mine, *asked]))
            assert differences(recorded["config"], config, UNCOMPARED_KEYS) == [], path


def test_what_the_picks_commands_printed_against_the_study():
    int8_gaps, pytorch_gaps = [], []
    for (keep, seed), run in picks().items():
        name = f"layers/keep{keep}/seed{seed}"
        int8_gaps.append(abs(run["int8"]["sts_avg"] - speed()["int8_sts"][f"{name} int8"]["sts_avg"]))
        pytorch_gaps.append(abs(run["after"]["sts_avg"] - results()[name]["after"]["sts_avg"]))
    assert (
        f"the commands' int8 scores differ from the speed run's for the same seed by at most "
        f"{max(int8_gaps):.2f} points, and their PyTorch scores from the study's by at most "
        f"{max(pytorch_gaps):.2f}."
    ) in doc()


DISTILL_TASKS = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr", "sts_avg")


def distilled_row(label: str, paths: list, dense: dict | None = None) -> str:
    """A row of the distillation table: the mean scores over `paths`' results, or their change over
    `dense`'s."""
    scores = [json.loads(p.read_text())["after"] for p in paths]
    means = [statistics.fmean(s[task] for s in scores) for task in DISTILL_TASKS]
    cells = [f"{m:.2f}" if dense is None else f"{m - dense[t]:+.2f}" for m, t in zip(means, DISTILL_TASKS)]
    return f"| {label} | {' | '.join(cells)} |"


def test_what_distillation_adds_per_task_on_each_corpus():
    dense_path = STUDY / "dense" / "results.json"
    dense = json.loads(dense_path.read_text())["after"]
    reviews = STUDY / DISTILLATION / "reviews" / "seed1" / "results.json"
    no_dropout = STUDY / DISTILLATION / "snli-dropout-off" / "seed1" / "results.json"
    rows = [
        distilled_row("dense (the teacher)", [dense_path]),
        distilled_row("distilled on SNLI captions, 3 seeds",
                      sorted((STUDY / "dense-distilled" / "p0").glob("seed*/results.json")), dense),
        distilled_row("distilled on SNLI captions, seed 1",
                      [STUDY / "dense-distilled" / "p0" / "seed1" / "results.json"], dense),
        distilled_row("distilled on SNLI captions, the student's dropout off, seed 1", [no_dropout], dense),
        distilled_row("distilled on reviews and plot sentences, seed 1", [reviews], dense),
        distilled_row("5 layers kept evenly, distilled on SNLI, 3 seeds",
                      sorted((STUDY / "layers" / "keep5").glob("seed*/results.json")), dense),
    ]  # fmt: skip
    for row in rows:
        assert row in DOC.read_text(), row
    run = json.loads(reviews.read_text())
    config = run["config"]
    assert (config["train_file"], config["seed"], config["recovery"]["steps"]) == ("REVIEWS.txt", 1, 500)
    assert config["pruning"]["head_sparsity"] == config["pruning"]["ffn_sparsity"] == 0
    snli = json.loads((STUDY / "dense-distilled" / "p0" / "seed1" / "results.json").read_text())["after"]
    gains = [run["after"]["sts_avg"] - dense["sts_avg"], snli["sts_avg"] - dense["sts_avg"]]
    assert f"lifts the average nearly as much ({gains[0]:+.2f} against {gains[1]:+.2f} for the" in doc()
    off = json.loads(no_dropout.read_text())
    assert off["config"]["recovery"]["without_dropout"] and not run["config"]["recovery"].get(
        "without_dropout"
    )
    assert off["recovery"]["first_loss"] < 1e-10, "the dense student starts where its teacher is"
    gain = off["after"]["sts_avg"] - dense["sts_avg"]
    assert f"same run with the student's dropout off gains {gain:+.2f} (against {gains[1]:+.2f})" in doc()


def test_the_corpus_without_captions_is_what_the_doc_says(real_senteval_dir):
    import importlib.util

    path = REPO_ROOT / "bench" / "distill_corpus.py"
    spec = importlib.util.spec_from_file_location("distill_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sentences = module.reviews_corpus(real_senteval_dir)
    assert len(set(sentences)) == len(sentences) and all(s == s.strip() and s for s in sentences)
    assert (
        f"The corpus without captions is the {len(sentences):,} distinct sentences of SentEval's SUBJ"
        in doc()
    )
