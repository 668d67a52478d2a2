"""Sentence embeddings from an export's graphs, as they serve without PyTorch or this package's model
code: its ONNX graphs in ONNX Runtime, its OpenVINO model in OpenVINO; so that a graph is scored
(and timed) as users will run it.

The graph gives token embeddings (`last_hidden_state`); the sentence embedding is pooled from them
as the export's pooler does it, for the poolers that need nothing else: `avg`, `cls_before_pooler`,
and `cls` when its MLP is used only in training.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from transformers import AutoTokenizer

from sparsecse.core.errors import ConfigError
from sparsecse.export.model_io import exported_settings, save_sparse_encoder
from sparsecse.export.onnx_export import INT8_FILE, OUTPUT
from sparsecse.pruning.latency import Runtime
from sparsecse.pruning.speed_target import ENCODE_BATCH, pytorch_encode

POOLED_FROM_TOKENS = ("avg", "cls_before_pooler")


def token_pooling(pooler: str, mlp_only_train: bool) -> str | None:
    """How to pool the graph's token embeddings for an export's pooler: `avg`, `cls`, or None when
    the pooler needs more than the last layer (`avg_first_last`, `avg_top2`, `cls` with its MLP)."""
    if pooler == "avg":
        return "avg"
    if pooler == "cls_before_pooler" or (pooler == "cls" and mlp_only_train):
        return "cls"
    return None


class OnnxEncoder:
    """`encode(texts) -> Tensor` over an export's ONNX graph (`graph`, relative to `directory`), its
    tokenizer and its pooler (from `sparsecse.json`), in `threads` ONNX Runtime threads (default:
    PyTorch's thread count, so that both backends are timed alike)."""

    def __init__(self, directory: str | Path, graph: str, threads: int | None = None):
        directory = Path(directory)
        settings = exported_settings(str(directory))
        self.pooling = token_pooling(settings.get("pooler", "avg"), settings.get("mlp_only_train", False))
        if self.pooling is None:
            needs = f"{settings['pooler']!r} needs more than the ONNX graph's last layer"
            raise ConfigError("pooler", f"{needs}; a graph is pooled as one of {POOLED_FROM_TOKENS}")
        self.inputs = self.load(directory / graph, threads or torch.get_num_threads())
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.name_or_path = str(directory / graph)

    def load(self, path: Path, threads: int) -> list[str]:
        """Open the graph in the runtime, on `threads` threads; returns the names of its inputs."""
        import onnxruntime  # the [onnx] extra

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one graph at a time: its operators run in order
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph alone: (B, T) int64 inputs (those it takes, of `feeds`) -> (B, T, H) token embeddings."""
        (hidden,) = self.session.run([OUTPUT], {name: feeds[name] for name in self.inputs})
        return hidden

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """(B,) texts -> (B, H) float32 embeddings."""
        feeds = self.tokenizer(texts, padding=True, return_tensors="np")
        feeds = {name: feeds[name].astype(np.int64) for name in self.inputs}
        hidden = self.run(feeds)  # (B, T, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1)

    def encode(
        self, texts: Sequence[str], batch_size: int = 128, show_progress: bool | str = False
    ) -> Tensor:
        """(N,) texts -> (N, H) float32 embeddings, in input order; batched longest first, as
        SentenceEncoder.encode batches them."""
        from tqdm.auto import tqdm

        lengths = [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        chunks = []
        label = show_progress if isinstance(show_progress, str) else "encode"
        for start in tqdm(
            range(0, len(order), batch_size), desc=label, disable=not show_progress, leave=False
        ):
            chunks.append(self._encode_batch([texts[i] for i in order[start : start + batch_size]]))
        embeddings = torch.from_numpy(np.concatenate(chunks))  # (N, H), longest first
        out = torch.empty_like(embeddings)
        out[order] = embeddings
        return out


class OpenVinoEncoder(OnnxEncoder):
    """The same encode on OpenVINO's CPU plug-in: an export's OpenVINO model (.xml), or an ONNX graph."""

    def load(self, path: Path, threads: int) -> list[str]:
        import openvino as ov  # the [openvino] extra

        self.compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
        return [port.get_any_name() for port in self.compiled.inputs]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.compiled({name: feeds[name] for name in self.inputs})[0]


def graph_encoder(directory: str | Path, graph: str, threads: int | None = None) -> OnnxEncoder:
    """The encoder of an export's graph by its file: OpenVINO for `.xml`, ONNX Runtime for `.onnx`."""
    kind = OpenVinoEncoder if graph.endswith(".xml") else OnnxEncoder
    return kind(directory, graph, threads)


def runtime_encode(runtime: str, scratch: Path) -> Runtime:
    """An encoder -> its encode(texts) as it will serve, the batch users time: PyTorch, or its int8
    ONNX graph (exported under `scratch`) in ONNX Runtime, on the process's threads."""
    if runtime != "int8":
        return pytorch_encode(runtime, scratch)

    def int8(encoder: nn.Module):
        folder = Path(tempfile.mkdtemp(dir=scratch))
        save_sparse_encoder(encoder, folder, onnx="int8")
        graph = OnnxEncoder(folder, INT8_FILE, torch.get_num_threads())
        return lambda texts: graph.encode(texts, batch_size=ENCODE_BATCH)

    return int8
