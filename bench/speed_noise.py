"""How far encode speed-ups move between two runs on this machine, under three ways of taking the
ratio against the dense model: one dense timing per round (the earlier protocol), the median dense
timing of the round, and the dense timings just before and after each model (sparsecse.pruning.speed).
Prints figures; not a test.

    python bench/speed_noise.py --models /tmp/speed-models --rounds 10 --threads 1 --sentences 1000

The models: dense MiniLM and stand-ins cut to the shapes of published compression-study points
(docs/compression), each in PyTorch (`SentenceTransformer.encode`) and as its int8 ONNX graph, all
timed on STS-B dev's 3,000 sentences, batch 64. The dense model is timed after every model; the
rounds are split into two halves, each half standing for one speed run, and the shift of every
speed-up between the halves is reported per protocol. Also: steal time and the CPU clock.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from sparsecse.core.paths import default_data_dir
from sparsecse.evaluation.sts import read_stsb
from sparsecse.export.model_io import load_encoder, save_sparse_encoder
from sparsecse.export.onnx_encoder import OnnxEncoder
from sparsecse.export.onnx_export import INT8_FILE
from sparsecse.pruning.removal import cut_to_structure
from sparsecse.pruning.speed import SpeedRun, measure, median_abs, pin, shift
from sparsecse.report.compression import recorded_structure

POINTS = ("sparsecse/p0.55/seed1", "sparsecse/p0.85/seed1", "layers/keep5/seed1", "layers/keep3/seed1")
REFERENCE = "dense PyTorch"


def build_models(models: Path, study: Path) -> dict[str, Path]:
    """The dense export and the stand-ins, with int8 graphs, written once under `models`."""
    folders = {"dense": models / "dense", **{p: models / p for p in POINTS}}
    if all((f / INT8_FILE).is_file() for f in folders.values()):
        return folders
    dense = load_encoder("minilm", "avg")
    save_sparse_encoder(copy.deepcopy(dense), folders["dense"], onnx="int8")
    for point in POINTS:
        encoder = copy.deepcopy(dense)
        cut_to_structure(
            encoder, *recorded_structure(json.loads((study / point / "results.json").read_text()))
        )
        save_sparse_encoder(encoder, folders[point], onnx="int8")
    return folders


def encoders(folders: dict[str, Path], threads: int) -> dict:
    from sentence_transformers import SentenceTransformer

    found = {}
    for name, folder in folders.items():
        model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
        found[f"{name} PyTorch"] = lambda texts, m=model: m.encode(list(texts), batch_size=64)
        graph = OnnxEncoder(folder, INT8_FILE, threads)
        found[f"{name} int8"] = lambda texts, g=graph: g.encode(texts, batch_size=64)
    return found


def protocols(run: SpeedRun) -> dict[str, dict[str, float]]:
    """The same timings, three ways of taking the ratio."""
    first = {name: statistics.median(r[0] / s for r, s in zip(run.rounds_of_reference, secs))
             for name, secs in run.seconds.items()}  # fmt: skip
    median = {name: statistics.median(statistics.median(r) / s for r, s in zip(run.rounds_of_reference, secs))
              for name, secs in run.seconds.items()}  # fmt: skip
    return {
        "one dense timing per round": first,
        "the round's median dense timing": median,
        "the dense timings around each model": run.speedups(),
    }


def steal_ticks() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="where the models are written once")
    parser.add_argument("--study", type=Path, default=Path("docs/compression"))
    parser.add_argument("--rounds", type=int, default=10, help="split in two halves, one per 'run'")
    parser.add_argument("--threads", type=int, default=1, help="1: on one core (sparsecse.pruning.speed.pin)")
    parser.add_argument("--sentences", type=int, default=1000, help="of STS-B dev's 3,000, per call")
    parser.add_argument("--raw", type=Path, help="also write every timing here (JSON)")
    args = parser.parse_args()
    pinned = pin(args.threads)
    folders = build_models(args.models, args.study)
    stsb = read_stsb(Path(default_data_dir()), "dev")
    sentences = (stsb.sent1 + stsb.sent2)[: args.sentences]
    steal, start = steal_ticks(), time.perf_counter()
    with torch.inference_mode():
        models = encoders(folders, args.threads)
        run = measure(models, sentences, REFERENCE, args.rounds, every=1, progress=print)
    minutes = (time.perf_counter() - start) / 60
    if args.raw:
        args.raw.write_text(json.dumps(dataclasses.asdict(run)))
    stolen = (steal_ticks() - steal) / 100
    print(f"{args.rounds} rounds of {len(sentences)} sentences in {minutes:.1f} min, {pinned}; steal time "
          f"{stolen:.1f} s; dense {run.reference_per_second():.1f} sentences/s")  # fmt: skip
    calls = [t for calls in run.rounds_of_reference for t in calls]
    print(f"dense calls: {min(calls):.2f} to {max(calls):.2f} s, spread "
          f"{(max(calls) - min(calls)) / statistics.median(calls):.0%}")  # fmt: skip
    half = args.rounds // 2
    first, second = (protocols(run.rounds(range(0, half))), protocols(run.rounds(range(half, 2 * half))))
    print("| protocol | median abs shift between the halves | largest shift |")
    print("| --- | --: | --: |")
    for name in first:
        moved = shift(first[name], second[name])
        moved.pop(REFERENCE, None)
        print(f"| {name} | {median_abs(list(moved.values())):.1%} | {max(moved.values(), key=abs):+.1%} |")
    print()
    print("| model | speed-up (all rounds) | spread of its rounds |")
    print("| --- | --: | --: |")
    for name, value in run.speedups().items():
        spread = "" if name == REFERENCE else f"{run.spread(name):.0%}"
        print(f"| {name} | {value:.2f}x | {spread} |")


if __name__ == "__main__":
    main()
