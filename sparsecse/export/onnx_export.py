"""ONNX export of an encoder's backbone, in sentence-transformers' layout (`onnx/model.onnx` next to
the safetensors weights), so that the pruned model runs in plain ONNX Runtime without this project.

The graph maps the tokenizer's inputs, (B, T) int64 each (`input_ids`, `attention_mask`, and
`token_type_ids` where the tokenizer makes them: BERT's, not the other backbones'), to
`last_hidden_state` (B, T, H) float32, the token embeddings the poolers average or pick from; its
batch and sequence axes are dynamic. The per-layer head and neuron counts are baked into the
weights' shapes, a layer without FFN neurons included. Two int8 copies, each an option:
- `int8`: ONNX Runtime's dynamic quantisation, `onnx/model_qint8.onnx` (the `[onnx]` extra);
- `openvino-int8`: OpenVINO's model of the graph, quantised by NNCF (static: activations calibrated
  on training sentences; LayerNorm, softmax and the residual adds stay in floating point),
  `openvino/openvino_model_qint8_quantized.xml` and its `.bin` (the `[openvino]` extra). On a 2-core
  CPU it encodes faster than the dynamic int8 graph at the float32 model's STS (docs/compression.md).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from sparsecse.core.errors import ConfigError

# `onnx=`: no graph, the float32 graph, or it and an int8 copy (ONNX Runtime's, or OpenVINO's)
OnnxExport = Literal["none", "fp32", "int8", "openvino-int8"]
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # in this order, those the tokenizer makes
OUTPUT = "last_hidden_state"
MODEL_FILE = "onnx/model.onnx"
INT8_FILE = "onnx/model_qint8.onnx"
OPENVINO_INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"  # sentence-transformers' name for it
INT8_GRAPHS = {"int8": INT8_FILE, "openvino-int8": OPENVINO_INT8_FILE}  # the int8 copy of each option
CALIBRATION_SENTENCES = 300  # NNCF's default subset
OPSET = 18


class TokenEmbeddings(nn.Module):
    """The backbone as ONNX sees it: two or three (B, T) inputs -> (B, T, H) token embeddings."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state


def check_onnx_available(mode: OnnxExport = "fp32") -> None:
    """Before any compute: the exporter's packages are there, or one line says how to get them."""
    needed = [("onnx", "onnx"), ("onnxruntime", "onnx"), ("onnxscript", "onnx")]
    if mode == "openvino-int8":
        needed += [("openvino", "openvino"), ("nncf", "openvino")]
    for module, extra in needed:
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                "onnx", f'{mode} needs the {module} package: pip install -e ".[{extra}]"'
            ) from None


def export_onnx(
    encoder, directory: str | Path, mode: OnnxExport = "fp32", calibration: Sequence[str] = ()
) -> list[Path]:
    """Write the encoder's backbone (gates already sliced out) as `onnx/model.onnx` under
    `directory`, and its int8 copy for `mode` (`openvino-int8` calibrates on `calibration`, training
    sentences); returns the files written."""
    if mode == "none":
        return []
    check_onnx_available(mode)
    directory = Path(directory)
    (directory / "onnx").mkdir(parents=True, exist_ok=True)
    # a float32 copy on the CPU: the encoder may sit on a GPU, in bf16, and must stay as it is
    module = TokenEmbeddings(copy.deepcopy(encoder.backbone).float().cpu()).eval()
    example = encoder.tokenize(["An example sentence, to trace the graph.", "Another one."])
    names = [name for name in INPUTS if name in example]  # what users' tokenizers will feed the graph
    args = tuple(example[name].cpu() for name in names)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: sequence} for name in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own decompositions
        program = torch.onnx.export(
            module, args, input_names=names, output_names=[OUTPUT], dynamic_shapes=dynamic,
            opset_version=OPSET, dynamo=True, verbose=False,
        )  # fmt: skip
    program.save(str(directory / MODEL_FILE))
    written = [directory / MODEL_FILE]
    if mode == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(directory / MODEL_FILE, directory / INT8_FILE, weight_type=QuantType.QInt8)
        written.append(directory / INT8_FILE)
    if mode == "openvino-int8":
        written += quantize_openvino(directory, encoder.tokenizer, calibration)
    return written


def quantize_openvino(
    directory: Path, tokenizer, calibration: Sequence[str], batch_size: int = 32
) -> list[Path]:
    """OpenVINO's model of `onnx/model.onnx`, quantised to int8 by NNCF's post-training static
    quantisation (transformer preset), its activations calibrated on `calibration`'s first
    CALIBRATION_SENTENCES sentences; returns the files written (the .xml and its .bin)."""
    import nncf
    import openvino as ov

    sentences = list(calibration)[:CALIBRATION_SENTENCES]
    if not sentences:
        raise ConfigError(
            "onnx", "openvino-int8 calibrates its activations on training sentences, and none were given"
        )
    model = ov.Core().read_model(str(directory / MODEL_FILE))
    names = [port.get_any_name() for port in model.inputs]
    batches = [tokenizer(sentences[i : i + batch_size], padding=True, return_tensors="np")
               for i in range(0, len(sentences), batch_size)]  # fmt: skip
    dataset = nncf.Dataset(batches, lambda batch: {name: batch[name].astype("int64") for name in names})
    quantised = nncf.quantize(
        model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(sentences)
    )
    target = directory / OPENVINO_INT8_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantised, str(target))
    return [target, target.with_suffix(".bin")]
