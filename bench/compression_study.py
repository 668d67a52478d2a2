"""The compression study of docs/compression.md: MiniLM made faster by each recipe a user has, from
about 1.3x to 8x its dense encode speed, with its STS avg over the 7 tasks.

    python bench/compression_study.py --out DIR                 # every point, seed by seed
    python bench/compression_study.py --out DIR --int8 layers layers-importance   # int8 graphs afterwards
    python bench/compression_study.py --out DIR --static        # the model2vec reference
    python bench/compression_study.py --out DIR --speed         # then every model's speed, one run
    python bench/compression_study.py --out DIR --table         # the tables of docs/compression.md
    python bench/compression_study.py --out DIR --publish docs/compression   # its numbers and plot

Each point is one `sparsecse-prune` run in its own process, written to DIR/<series>/<level>/seed<S>/
with its log beside it; a point whose results.json exists is kept, so a stopped study resumes where
it stopped. Series (METHOD.md sections 3, 7 and 8):
- joint: layers, heads and FFN neurons removed together by alignment/uniformity importance to a
  PyTorch speed target (`pruning.target_speedup` at 1.3x to 8x), then recovery by distillation;
- joint-int8: the same to an int8 speed target, exported to int8 ONNX and scored there;
- sparsecse: alignment/uniformity pruning of heads and FFN neurons, then recovery by distillation
  (its results.json's `pruned` is the same model before recovery: the series without recovery);
- random: random scores at the same sparsity, the same recovery;
- layers: whole layers dropped, evenly spaced (5 to 1 kept), the same recovery;
- layers-importance: layers chosen by alignment/uniformity importance, the same recovery;
- dense-distilled: the control, the same distillation with nothing removed (does recovery gain
  by distilling on the corpus alone?);
- dense: the dense encoder, exported to int8 ONNX (the recovered sparsecse points are exported too).
- model2vec: the static-embedding reference, distilled from the same MiniLM (`--static`).
Speed is measured afterwards for every model in one process (`--speed`), through
`SentenceTransformer.encode` on the first 1,000 sentences of STS-B dev, batch 64, with
sparsecse.pruning.speed's protocol (one thread on one core, the dense PyTorch model timed around every few
models, each ratio against those timings, the median over rounds); int8 graphs run in ONNX Runtime
and are scored there.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sparsecse.export.onnx_export import INT8_FILE
from sparsecse.report.compression import CHECK, JOINT_SERIES, TABLES_BEGIN, TABLES_END, point_name

SPARSITIES = (0.35, 0.55, 0.75, 0.85)  # about 1.3x, 1.8x, 2.5x and 3.5x through encode on 2 cores
LAYERS = (5, 4, 3, 2, 1)  # of MiniLM's 6; one layer is as fast as the joint recipe's 5x
TARGETS = (1.3, 1.8, 2.5, 3.5, 5.0, 8.0)  # asked speed-ups of the joint recipe
UNITS = lambda p: [f"pruning.head_sparsity={p}", f"pruning.ffn_sparsity={p}"]  # noqa: E731
TARGET = lambda x: [*UNITS(0), f"pruning.target_speedup={x}"]  # noqa: E731
SERIES = {
    "joint": (TARGETS, lambda x: TARGET(x)),  # to a PyTorch speed target
    "joint-int8": (TARGETS, lambda x: [*TARGET(x), "onnx=int8"]),  # to an int8 one
    "sparsecse": (SPARSITIES, lambda p: [*UNITS(p), "onnx=int8"]),
    "random": (SPARSITIES, lambda p: [*UNITS(p), "pruning.score=random"]),
    "layers": (LAYERS, lambda k: [f"layers.keep={k}", "layers.choose=evenly", *UNITS(0), "onnx=int8"]),
    "layers-importance": (
        (4, 3, 2),
        lambda k: [f"layers.keep={k}", "layers.choose=importance", *UNITS(0), "onnx=int8"],
    ),
    "dense-distilled": ((0,), lambda p: UNITS(p)),  # the control: the same distillation, nothing removed
}
RESULTS = "results.json"
SPEED = "speed.json"
STAND_INS = "stand-ins"  # models cut to the shapes of points timed elsewhere


def point_dir(out: Path, series: str, level: float, seed: int) -> Path:
    return out / point_name(series, level, seed)


def run_point(directory: Path, overrides: list[str]) -> float:
    """One sparsecse-prune run into `directory` (a stale partial one is removed first); seconds."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "sparsecse.cli.prune", f"output_dir={directory}", *overrides]
    start = time.perf_counter()
    with open(directory.parent / f"{directory.name}.log", "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{directory}: sparsecse-prune failed (exit {done.returncode}); see {directory}.log")
    return time.perf_counter() - start


def levels_to_run(series: str, only: list[float] | None) -> list[float]:
    """The levels of `series` a run covers: all of them, or those `only` lists. A joint series takes any
    speed-up asked, so that the recipe can be measured at a target's own speed."""
    levels, _ = SERIES[series]
    if only is None:
        return list(levels)
    if series not in JOINT_SERIES:
        return [level for level in levels if level in only]
    if slow := [level for level in only if level <= 1]:
        raise SystemExit(f"--levels {slow[0]}: {series} asks a speed-up over its dense model, so above 1; "
                         "run the other series' levels in a command of their own")  # fmt: skip
    return list(only)


def run_points(out: Path, seeds: list[int], steps: int, series: list[str], layer_weight: float = 0.0,
               only: list[float] | None = None) -> None:  # fmt: skip
    """Every point of `series` not yet written (of the levels `only` lists, if given: `levels_to_run`),
    seed by seed."""
    levels = {name: levels_to_run(name, only) for name in series}  # a bad level stops before the first run
    common = ["model=minilm", "pooler=avg", "tasks=[sts]", "evaluate_before=false"]
    dense = out / "dense"
    if not (dense / RESULTS).is_file():
        seconds = run_point(dense, [*common, *UNITS(0), "onnx=int8", "seed=1"])
        print(f"dense: {seconds:.0f} s", flush=True)
    for seed in seeds:
        for name in series:
            _, overrides = SERIES[name]
            for level in levels[name]:
                directory = point_dir(out, name, level, seed)
                if (directory / RESULTS).is_file():
                    continue
                recovery = [f"recovery.steps={steps}", f"recovery.layer_weight={layer_weight}"]
                seconds = run_point(directory, [*common, *overrides(level), f"seed={seed}", *recovery])
                after = json.loads((directory / RESULTS).read_text())["after"]["sts_avg"]
                print(f"{name} {level} seed {seed}: STS avg {after:.2f}, {seconds:.0f} s", flush=True)


def model_dirs(out: Path) -> list[Path]:
    return sorted(path.parent for path in out.rglob(RESULTS) if STAND_INS not in path.parts)


def build_stand_ins(out: Path, published: Path | None, checks: Sequence[str]) -> dict[str, Path]:
    """Models with the recorded shapes of points whose weights are not in `out` (published ones from
    other machines), cut from the dense model, so that every model is timed in one run; and for each
    point of `checks`, a stand-in beside the real model, timed too, to compare the two speeds.
    Name -> model directory, under out/stand-ins/ (the checks under check/)."""
    from sparsecse.export.model_io import load_encoder, save_sparse_encoder
    from sparsecse.export.onnx_export import INT8_FILE
    from sparsecse.pruning.removal import cut_to_structure
    from sparsecse.report.compression import recorded_structure

    timed = set(json.loads((published / SPEED).read_text())["speedup"]) if published else set()
    wanted = {}
    if published:
        for path in sorted(published.rglob(RESULTS)):
            name = str(path.parent.relative_to(published))
            if name.split("/")[0] not in (*SERIES, "dense"):  # model2vec, the picks' runs, other runs
                continue
            if not (out / name / RESULTS).is_file():
                wanted[name] = (path, f"{name} int8" in timed)
    for name in checks:
        if not (out / name / RESULTS).is_file():
            raise SystemExit(f"--check-stand-ins: {out / name} holds no {RESULTS}")
        wanted[f"{CHECK}{name}"] = (out / name / RESULTS, (out / name / INT8_FILE).is_file())
    missing = {
        name: spec
        for name, spec in wanted.items()
        if not (out / STAND_INS / name / "sparsecse.json").is_file()
    }
    dense = load_encoder(str(out / "dense")) if missing else None
    for name, (results, with_int8) in missing.items():
        encoder = copy.deepcopy(dense)
        cut_to_structure(encoder, *recorded_structure(json.loads(results.read_text())))
        save_sparse_encoder(encoder, out / STAND_INS / name, onnx="int8" if with_int8 else "none")
        print(f"{out / STAND_INS / name}: stand-in written", flush=True)
    return {name: out / STAND_INS / name for name in wanted}


def same_shapes(directories: dict[str, Path], checks: Sequence[str]) -> dict[str, str]:
    """Each model -> the model timed for it: the first of those with its shapes (per layer, the heads
    and FFN neurons kept; the layers left), since encode time depends on the shapes alone (a stand-in
    timed beside its model measures that: `checks`, which are timed on their own)."""
    first: dict[str, str] = {}
    timed_as = {}
    for name, directory in directories.items():
        units = json.loads((directory / "sparsecse.json").read_text())["structure"]
        shape = json.dumps([units["heads"], units["ffn"], (directory / INT8_FILE).is_file()])
        own = name.startswith(CHECK) or name in checks
        timed_as[name] = name if own else first.setdefault(shape, name)
    return timed_as


SPEED_SENTENCES = 1000  # the first of STS-B dev's sentences, per call: short calls, many rounds


def measure_speed(
    out: Path,
    rounds: int,
    published: Path | None = None,
    checks: Sequence[str] = (),
    every: int = 5,
    threads: int = 1,
) -> dict:
    """Every model of the study in one process: encode speed-up over the dense PyTorch model of this
    run (PyTorch, and int8 ONNX where exported), and the int8 graphs' STS avg. With `published`, the
    published points whose weights are not here are timed through stand-ins of their shapes."""
    import torch
    from sentence_transformers import SentenceTransformer

    from sparsecse.core.paths import default_data_dir
    from sparsecse.evaluation import evaluate_encoder
    from sparsecse.evaluation.sts import read_stsb
    from sparsecse.export.onnx_encoder import OnnxEncoder
    from sparsecse.export.onnx_export import INT8_FILE
    from sparsecse.pruning.speed import cpu_name, measure, pin, watch_contention

    data_dir = Path(default_data_dir())
    stsb = read_stsb(data_dir, "dev")
    sentences = (stsb.sent1 + stsb.sent2)[:SPEED_SENTENCES]
    pinned = pin(threads)
    stand_ins = build_stand_ins(out, published, checks)
    directories = {str(d.relative_to(out)): d for d in model_dirs(out) if d.name != STATIC} | stand_ins
    timed_as = same_shapes(directories, checks)
    encoders, graphs, scored = {}, {}, []
    for name, directory in directories.items():
        if timed_as[name] == name:
            model = SentenceTransformer(str(directory), device="cpu", trust_remote_code=True)
            encoders[f"{name} PyTorch"] = lambda texts, m=model: m.encode(list(texts), batch_size=64)
        if (directory / INT8_FILE).is_file():
            graphs[f"{name} int8"] = graph = OnnxEncoder(directory, INT8_FILE, threads)
            if timed_as[name] == name:
                encoders[f"{name} int8"] = lambda texts, g=graph: g.encode(texts, batch_size=64)
            # a stand-in's weights are the dense model's, cut: no score; a check's point is a re-run;
            # a point whose command scored its int8 graph keeps that score (read_points reads it first)
            own = json.loads((directory / RESULTS).read_text()) if name not in stand_ins else {}
            if name not in stand_ins and name not in checks and "int8" not in own:
                scored.append(f"{name} int8")
    if (out / STATIC / RESULTS).is_file():
        from static_embedding import StaticEncoder  # bench/, beside this script

        static = StaticEncoder(out / STATIC)
        encoders[f"{STATIC} static"] = lambda texts: static.encode(texts, batch_size=64)
    with torch.inference_mode(), watch_contention() as watched:
        timings = measure(encoders, sentences, "dense PyTorch", rounds, every, progress=print)
    run = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "threads": pinned,
        "rounds": rounds,
        "sentences": len(sentences),
        "protocol": f"dense timed around every {every} model(s); each ratio against those timings, the "
        "median over rounds",
        "stand_ins": sorted(stand_ins),
        "checked": sorted(checks),  # re-runs of published points, timed beside their stand-ins
        "dense_sentences_per_second": round(timings.reference_per_second(), 1),
        "contention": watched.share,  # the share of the timing core other processes took meanwhile
    }
    measured = timings.speedups()
    run["speedup"] = {
        f"{name} {kind}": round(measured[f"{timed_as[name]} {kind}"], 3)
        for name in directories
        for kind in ("PyTorch", "int8")
        if f"{timed_as[name]} {kind}" in measured and (kind == "PyTorch" or f"{name} int8" in graphs)
    }
    run["speedup"] |= {name: round(value, 3) for name, value in measured.items() if name.startswith(STATIC)}
    run["models"] = len(run["speedup"])
    run["timed"] = len(encoders)  # one per shape and runtime: models of one shape share a timing
    speed = {"runs": [run], "speedup": dict(run["speedup"]), "int8_sts": {}}
    for name in scored:
        # scored as `sparsecse-prune onnx=int8` scores it (dynamic int8 depends on how sentences are batched)
        speed["int8_sts"][name] = evaluate_encoder(graphs[name], data_dir, ["sts"], batch_size=128)
    (out / SPEED).write_text(json.dumps(speed, indent=2) + "\n")
    return speed


STATIC = "model2vec"  # the static-embedding reference's folder under the study's


def write_static_reference(out: Path) -> None:
    """model2vec distilled from the embedded MiniLM (bench/static_embedding.py) into out/model2vec/,
    with its results.json: the 7 STS tasks through this project's evaluator."""
    from static_embedding import StaticEncoder, distilled  # bench/, beside this script

    from sparsecse.core.paths import default_data_dir
    from sparsecse.evaluation import evaluate_encoder

    if (out / STATIC / RESULTS).is_file():
        return
    path, seconds = distilled(out / STATIC)
    scores = evaluate_encoder(StaticEncoder(path), default_data_dir(), ["sts"], 128)
    (out / STATIC / RESULTS).write_text(json.dumps({"after": scores, "distill_seconds": round(seconds, 1)}))
    print(f"{STATIC}: STS avg {scores['sts_avg']:.2f}, distilled in {seconds:.0f} s", flush=True)


def export_int8(out: Path, series: list[str]) -> None:
    """The int8 ONNX graph of every model of `series` written without one (`onnx=int8` is otherwise
    given to `sparsecse-prune` with the point)."""
    from sparsecse.export.model_io import load_encoder
    from sparsecse.export.onnx_export import INT8_FILE, export_onnx

    for name in series:
        for directory in sorted(path.parent for path in (out / name).rglob(RESULTS)):
            if not (directory / INT8_FILE).is_file():
                export_onnx(load_encoder(str(directory)), directory, "int8")
                print(f"{directory}: int8 ONNX written", flush=True)


def publish(out: Path, dest: Path) -> None:
    """The study's numbers without its models, as docs/compression/ holds them, and its plot. What
    `dest` holds already is kept: its speed.json is merged with this study's (seeds run at different
    times, each measured against the dense model of its own speed run), and the driver's log of each
    point's wall time, `study.log`, where it was kept, goes to logs/<date>.log."""
    from sparsecse.report.compression import merge_speed, pareto_plot, read_points, summarise

    later = json.loads((out / SPEED).read_text())
    checked = {name for run in later.get("runs", []) for name in run.get("checked", [])}
    for path in out.rglob(RESULTS):
        target = dest / path.relative_to(out)
        if str(path.parent.relative_to(out)) in checked and target.is_file():
            continue  # a re-run timed beside its stand-in: the published point keeps its results
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    earlier = json.loads((dest / SPEED).read_text()) if (dest / SPEED).is_file() else {}
    speed = merge_speed(earlier, later)
    (dest / SPEED).write_text(json.dumps(speed, indent=2) + "\n")
    if (out / "study.log").is_file():
        (dest / "logs").mkdir(exist_ok=True)
        shutil.copyfile(out / "study.log", dest / "logs" / f"{time.strftime('%Y-%m-%d')}.log")
    print(pareto_plot(summarise(read_points(dest)), dest / "pareto.png"))
    doc = dest.parent / f"{dest.name}.md"  # docs/compression.md beside docs/compression/
    if doc.is_file():
        doc.write_text(with_tables(doc.read_text(), dest))
        print(f"{doc}: tables rewritten")


def with_tables(text: str, dest: Path) -> str:
    """The doc with its generated block (between the two markers) made from the study folder."""
    from sparsecse.report.compression import compression_tables

    before, rest = text.split(TABLES_BEGIN)
    after = rest.split(TABLES_END)[1]
    return f"{before}{TABLES_BEGIN}\n{compression_tables(dest)}\n{TABLES_END}{after}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=500, help="recovery steps of every point")
    parser.add_argument("--layer-weight", type=float, default=0.0, help="recovery.layer_weight of each point")
    parser.add_argument("--series", nargs="+", default=list(SERIES), choices=list(SERIES))
    parser.add_argument("--levels", type=float, nargs="+", help="only these levels of each series (a "
                        "sparsity, a count of layers kept or, for a joint series, any speed-up asked); "
                        "default all")  # fmt: skip
    parser.add_argument("--int8", nargs="+", default=[], choices=list(SERIES),
                        help="export the int8 ONNX graph of these series' models that lack one")  # fmt: skip
    parser.add_argument("--speed", action="store_true", help="measure every model written so far")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--every", type=int, default=5, help="with --speed: time the dense model again after "
                        "every this many models (sparsecse.pruning.speed)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="with --speed: 1 runs on one core")
    parser.add_argument("--stand-ins-for", type=Path, help="with --speed: time the points published "
                        "there whose weights are not in --out through stand-ins of their shapes")  # fmt: skip
    parser.add_argument("--check-stand-ins", nargs="+", default=[], metavar="POINT",
                        help="with --speed: time stand-ins of these points of --out beside them")  # fmt: skip
    parser.add_argument("--static", action="store_true", help="the static-embedding reference (model2vec)")
    parser.add_argument("--table", action="store_true", help="print docs/compression.md's tables")
    parser.add_argument("--publish", type=Path, help="copy every results.json and speed.json (no weights) "
                        "there, and draw the Pareto plot")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    if args.static:
        write_static_reference(args.out)
    elif args.int8:
        export_int8(args.out, args.int8)
    elif args.publish:
        publish(args.out, args.publish)
    elif args.table:
        from sparsecse.report.compression import compression_tables

        print(compression_tables(args.out))
    elif args.speed:
        speed = measure_speed(
            args.out, args.rounds, args.stand_ins_for, args.check_stand_ins, args.every, args.threads
        )
        print(json.dumps(speed["speedup"], indent=2))
    else:
        start = time.perf_counter()
        run_points(args.out, args.seeds, args.steps, args.series, args.layer_weight, args.levels)
        print(f"every point in {args.out}; {time.perf_counter() - start:.0f} s this start")


if __name__ == "__main__":
    main()
