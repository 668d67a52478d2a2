"""Where an int8 graph's time goes, by operator type, for exported models of different shapes: why
int8 gains less over PyTorch on a pruned model than on a layer-dropped one of the same speed.
ONNX Runtime's own profiler over STS-B dev's sentences (batch 64, the encode path); for each graph,
the share of each operator type, and the throughput of its integer matrix products. Prints figures;
not a test.

    python bench/int8_profile.py --model /work/speed-models/sparsecse/p0.55/seed1 \\
        /work/speed-models/layers/keep3/seed1 --graph onnx/model_qint8.onnx onnx/model.onnx
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime

from sparsecse.core.paths import default_data_dir
from sparsecse.evaluation.sts import read_stsb
from sparsecse.export.onnx_encoder import OnnxEncoder
from sparsecse.pruning.speed import pin

MATMULS = ("MatMulInteger", "MatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul")


class ProfiledEncoder(OnnxEncoder):
    def load(self, path: Path, threads: int) -> list[str]:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path("/tmp") / f"ort-{path.parent.parent.name}-{path.stem}")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return [i.name for i in self.session.get_inputs()]


def flops(event: dict) -> float:
    """2 m k n of a matrix product: m k from its first input's shape, n from its output's (the
    profiler records no shape for weights)."""
    first = next(iter(event["args"]["input_type_shape"][0].values()))
    output = next(iter(event["args"]["output_type_shape"][0].values()))
    if len(first) < 2 or len(output) < 2:
        return 0.0
    return 2.0 * math.prod(first[:-1]) * first[-1] * output[-1]


def profile(directory: Path, graph: str, sentences: list[str], threads: int) -> tuple[dict, float, float]:
    """(seconds by operator type, matrix-product GFLOP/s, total seconds in nodes)."""
    encoder = ProfiledEncoder(directory, graph, threads)
    encoder.encode(
        sentences[:256], batch_size=64
    )  # warm-up, profiled too: dropped below by its events' count
    encoder.session.end_profiling()
    encoder = ProfiledEncoder(directory, graph, threads)
    encoder.encode(sentences, batch_size=64)
    events = json.loads(Path(encoder.session.end_profiling()).read_text())
    by_type, matmul_flops, matmul_seconds = defaultdict(float), 0.0, 0.0
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        kind, seconds = event["args"]["op_name"], event["dur"] / 1e6
        by_type[kind] += seconds
        if kind in MATMULS:
            matmul_flops += flops(event)
            matmul_seconds += seconds
    return dict(by_type), matmul_flops / max(matmul_seconds, 1e-9) / 1e9, sum(by_type.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="+", required=True)
    parser.add_argument("--graph", nargs="+", default=["onnx/model_qint8.onnx", "onnx/model.onnx"])
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="1: on one core (sparsecse.pruning.speed.pin)")
    args = parser.parse_args()
    pin(args.threads)
    stsb = read_stsb(Path(default_data_dir()), "dev")
    sentences = (stsb.sent1 + stsb.sent2)[: args.sentences]
    rows = {}
    for directory in args.model:
        for graph in args.graph:
            rows[f"{directory.name if directory.name != 'seed1' else directory.parent.name} {graph}"] = (
                profile(directory, graph, sentences, args.threads)
            )
    kinds = sorted({k for by_type, _, _ in rows.values() for k in by_type}, key=lambda k: -max(
        r[0].get(k, 0) / r[2] for r in rows.values()))  # fmt: skip
    shown = [k for k in kinds if max(r[0].get(k, 0) / r[2] for r in rows.values()) >= 0.01]
    print(f"{len(sentences)} sentences of STS-B dev, batch 64, {args.threads} threads; share of node time")
    print("| graph | node s | matmul GFLOP/s | " + " | ".join(shown) + " | other |")
    print("| --- | --: | --: |" + " --: |" * (len(shown) + 1))
    for name, (by_type, gflops, total) in rows.items():
        shares = [by_type.get(k, 0.0) / total for k in shown]
        other = 1 - float(np.sum(shares))
        print(f"| {name} | {total:.2f} | {gflops:.1f} | " + " | ".join(f"{s:.0%}" for s in shares)
              + f" | {other:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
