"""Alignment and uniformity of an embedding space on STS-B (Wang & Isola 2020), as SimCSE
(section 5) measures them: pairs with a gold score above 4 are the positives, and every STS-B
sentence is a sample of the data distribution."""

from __future__ import annotations

from pathlib import Path

import torch

from sparsecse.evaluation.sts import Encode, encode_unique, read_stsb
from sparsecse.model.loss import alignment, uniformity

ANALYSIS_TASKS = ("alignment_uniformity",)


def stsb_alignment_uniformity(
    encode: Encode, data_dir: str | Path, split: str = "test", positive_threshold: float = 4.0
) -> dict[str, float]:
    """{"alignment": ..., "uniformity": ...} on STS-B `split`; lower is better for both."""
    pairs = read_stsb(Path(data_dir), split)
    table = encode_unique(encode, pairs.sent1 + pairs.sent2)
    positive = [i for i, score in enumerate(pairs.gold) if score > positive_threshold]
    x = torch.stack([table[pairs.sent1[i]] for i in positive])  # (P, H)
    y = torch.stack([table[pairs.sent2[i]] for i in positive])  # (P, H)
    # distinct sentences only: a repeated sentence would add pairs at distance 0
    everything = torch.stack(list(table.values()))  # (S, H)
    return {"alignment": float(alignment(x, y)), "uniformity": float(uniformity(everything))}
