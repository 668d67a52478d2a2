"""How well the latency model (sparsecse.pruning.latency) predicts the encode speed-up of shapes it was not
fitted on: MiniLM cut to the calibration shapes and to the shapes of published compression-study
points (docs/compression), all timed in one speed run per runtime; the model fitted on the
calibration shapes alone; each study shape's predicted speed-up against its measured one. Prints
figures; not a test.

    python bench/latency_model.py --runtime PyTorch int8 --rounds 5
    python bench/latency_model.py --runtime PyTorch --study DIR --points joint/x5.0/seed1 joint/x8.0/seed1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from sparsecse.core.paths import default_data_dir
from sparsecse.evaluation.sts import read_stsb
from sparsecse.export.model_io import load_encoder
from sparsecse.export.onnx_encoder import runtime_encode
from sparsecse.pruning.latency import Shape, calibration_shapes, fit_latency, shape_key, time_shapes
from sparsecse.pruning.speed import pin
from sparsecse.pruning.speed_target import encoder_shape
from sparsecse.report.compression import recorded_structure

POINTS = (
    "sparsecse/p0.35/seed1",
    "sparsecse/p0.55/seed1",
    "sparsecse/p0.75/seed1",
    "sparsecse/p0.85/seed1",
    "layers/keep5/seed1",
    "layers/keep4/seed1",
    "layers/keep2/seed1",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("docs/compression"))
    parser.add_argument("--points", nargs="+", default=list(POINTS), help="the study's points whose shapes "
                        "are held out (their results.json's)")  # fmt: skip
    parser.add_argument("--runtime", nargs="+", default=["PyTorch", "int8"], choices=["PyTorch", "int8"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=500, help="of STS-B dev's, per call")
    parser.add_argument("--threads", type=int, default=1, help="1: on one core (sparsecse.pruning.speed.pin)")
    args = parser.parse_args()
    pinned = pin(args.threads)
    stsb = read_stsb(Path(default_data_dir()), "dev")
    sentences = (stsb.sent1 + stsb.sent2)[: args.sentences]
    encoder = load_encoder("minilm", "avg")
    dense = encoder_shape(encoder)
    calibration = calibration_shapes(len(dense.heads), dense.heads[0], dense.ffn[0])
    recorded = {point: json.loads((args.study / point / "results.json").read_text()) for point in args.points}
    held_out = {point: Shape(*map(tuple, recorded_structure(r))) for point, r in recorded.items()}
    print(f"{time.strftime('%Y-%m-%d')}, {pinned}, {args.rounds} rounds of {len(sentences)} sentences")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.runtime:
            start = time.perf_counter()
            runtime = runtime_encode(name, Path(scratch))  # on pin()'s threads
            shapes = [*calibration, *(s for s in held_out.values() if s not in calibration)]
            times = time_shapes(encoder, shapes, runtime, sentences, args.rounds, every=2)
            model = fit_latency(dense, {s: times[s] for s in calibration})
            print(f"\n{name}: {time.perf_counter() - start:.0f} s; relative time = {model.fixed:.4f} + "
                  f"{model.per_layer:.4f} per layer + {model.per_head:.5f} per head + "
                  f"{model.per_neuron:.7f} per FFN neuron")  # fmt: skip
            print("| shape | measured speed-up | predicted | error |\n| --- | --: | --: | --: |")
            errors = []
            for label, shape in [*((shape_key(s), s) for s in calibration), *held_out.items()]:
                measured, predicted = 1 / times[shape], model.speedup(shape)
                error = predicted / measured - 1
                if label in held_out:
                    errors.append(abs(error))
                print(f"| {label} | {measured:.2f}x | {predicted:.2f}x | {error:+.1%} |")
            worst = max(errors)
            print(f"held-out shapes: median |error| {statistics.median(errors):.1%}, largest {worst:.1%}")


if __name__ == "__main__":
    main()
