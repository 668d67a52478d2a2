"""ONNX export of an encoder's backbone, in sentence-transformers' layout (`onnx/model.onnx` next to
the safetensors weights), so that the pruned model runs in plain ONNX Runtime without this project.

The graph maps the tokenizer's inputs, (B, T) int64 each (`input_ids`, `attention_mask`, and
`token_type_ids` where the tokenizer makes them: BERT's, not the other backbones'), to
`last_hidden_state` (B, T, H) float32, the token embeddings the poolers average or pick from; its
batch and sequence axes are dynamic. The per-layer head and neuron counts are baked into the
weights' shapes, a layer without FFN neurons included. Optional int8 dynamic quantisation (ONNX
Runtime's) writes `onnx/model_qint8.onnx` beside it. Needs the `[onnx]` extra (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from sparsecse.errors import ConfigError

OnnxExport = Literal["none", "fp32", "int8"]  # `onnx=`: no graph, the float32 graph, or it and its int8 copy
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # in this order, those the tokenizer makes
OUTPUT = "last_hidden_state"
MODEL_FILE = "onnx/model.onnx"
INT8_FILE = "onnx/model_qint8.onnx"
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


def check_onnx_available() -> None:
    """Before any compute: the exporter's packages are there, or one line says how to get them."""
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise ConfigError("onnx", f'needs the {module} package: pip install -e ".[onnx]"') from None


def export_onnx(encoder, directory: str | Path, mode: OnnxExport = "fp32") -> list[Path]:
    """Write the encoder's backbone (gates already sliced out) as `onnx/model.onnx` under
    `directory`, and with `mode="int8"` its dynamically quantised copy; returns the files written."""
    if mode == "none":
        return []
    check_onnx_available()
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
    return written
