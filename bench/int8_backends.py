"""int8 backends on the same exported models, through the same harness: ONNX Runtime's dynamic int8
(what `onnx=int8` writes), ONNX Runtime's static int8 (QDQ, calibrated on training sentences), and
OpenVINO reading the float32 ONNX graph, as it is and quantised by NNCF (static, calibrated on the
same sentences). Each variant's encode speed-up over the dense PyTorch model (sparsecse.pruning.speed: the
dense model timed around every model) and its STS avg over the 7 tasks. Prints figures; not a test.

    python bench/int8_backends.py --model DENSE_EXPORT PRUNED_EXPORT ... --rounds 8

Every model folder needs `onnx/model.onnx` (an export with `onnx=fp32` or `int8`); the variants are
written beside it (`onnx/model_static_qint8.onnx`, `openvino/`) once. `--no-sts` skips the scores
(for stand-ins, whose weights are the dense model's, cut).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sparsecse.core.paths import default_data_dir
from sparsecse.evaluation import evaluate_encoder
from sparsecse.evaluation.sts import read_stsb
from sparsecse.export.onnx_encoder import OnnxEncoder, OpenVinoEncoder
from sparsecse.export.onnx_export import CALIBRATION_SENTENCES as CALIBRATION
from sparsecse.export.onnx_export import INT8_FILE, MODEL_FILE, quantize_openvino
from sparsecse.export.onnx_export import OPENVINO_INT8_FILE as OPENVINO_INT8
from sparsecse.pruning.speed import measure, pin

STATIC_FILE = "onnx/model_static_qint8.onnx"


def calibration_feeds(
    directory: Path, sentences: Sequence[str], batch: int = 32
) -> list[dict[str, np.ndarray]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    batches = [sentences[i : i + batch] for i in range(0, len(sentences), batch)]
    return [
        {k: v.astype(np.int64) for k, v in tokenizer(list(b), padding=True, return_tensors="np").items()}
        for b in batches
    ]


def write_static_int8(directory: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """ONNX Runtime's static QDQ int8 of the float32 graph: MatMul weights per channel, activations
    per tensor from MinMax calibration."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [i.name for i in onnxruntime.InferenceSession(str(directory / MODEL_FILE)).get_inputs()]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{n: f[n] for n in names} for f in feeds])

        def get_next(self):
            return next(self.batches, None)

    directory = directory.resolve()
    prepared = directory / "onnx" / "model_prepared.onnx"
    # the pre-processing writes its temporary graph and weights into the working directory: a scratch one
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        quant_pre_process(str(directory / MODEL_FILE), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(directory / STATIC_FILE), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"])  # fmt: skip
    prepared.unlink()


def variants(directory: Path, sentences: Sequence[str], threads: int) -> dict:
    """name -> encode of each backend of one export, the int8 ones written first where missing."""
    from transformers import AutoTokenizer

    if not (directory / STATIC_FILE).is_file():
        write_static_int8(directory, calibration_feeds(directory, sentences))
    if not (directory / OPENVINO_INT8).is_file():
        quantize_openvino(directory, AutoTokenizer.from_pretrained(directory), sentences)
    return {
        "ORT dynamic int8": OnnxEncoder(directory, INT8_FILE, threads),
        "ORT static int8": OnnxEncoder(directory, STATIC_FILE, threads),
        "OpenVINO fp32": OpenVinoEncoder(directory, MODEL_FILE, threads),
        "OpenVINO int8 (NNCF)": OpenVinoEncoder(directory, OPENVINO_INT8, threads),
    }


def main() -> None:
    from sentence_transformers import SentenceTransformer

    from sparsecse.core.paths import resolve_model_path
    from sparsecse.data.corpora import corpus_sentences, load_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="+", required=True, help="exports with onnx/model.onnx")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--no-sts", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="1: on one core (sparsecse.pruning.speed.pin)")
    parser.add_argument("--sentences", type=int, default=1000, help="of STS-B dev's 3,000, per call")
    args = parser.parse_args()
    pinned = pin(args.threads)
    data_dir = Path(default_data_dir())
    calibration = corpus_sentences(load_corpus("snli_sentences", data_dir))[:CALIBRATION]
    dense = SentenceTransformer(resolve_model_path("minilm"), device="cpu")
    encoders = {"dense PyTorch": lambda texts: dense.encode(list(texts), batch_size=64)}
    graphs = {}
    for directory in args.model:
        model = SentenceTransformer(str(directory), device="cpu", trust_remote_code=True)
        encoders[f"{directory} PyTorch"] = lambda texts, m=model: m.encode(list(texts), batch_size=64)
        for name, graph in variants(directory, calibration, args.threads).items():
            graphs[f"{directory} {name}"] = graph
            encoders[f"{directory} {name}"] = lambda texts, g=graph: g.encode(texts, batch_size=64)
    stsb = read_stsb(data_dir, "dev")
    sentences = (stsb.sent1 + stsb.sent2)[: args.sentences]
    with torch.inference_mode():
        run = measure(encoders, sentences, "dense PyTorch", args.rounds, progress=print)
    print(f"CPU, {pinned}; {len(sentences)} sentences a call; median of {args.rounds} rounds, dense timed "
          "around each model")  # fmt: skip
    print("| model | speed-up | STS avg (7 tasks) |")
    print("| --- | --: | --: |")
    for name, speedup in run.speedups().items():
        score = "-"
        if not args.no_sts and name in graphs:
            score = f"{evaluate_encoder(graphs[name], data_dir, ['sts'], 128)['sts_avg']:.2f}"
        print(f"| {name} | {speedup:.2f}x | {score} |")


if __name__ == "__main__":
    main()
