from __future__ import annotations

import math

import pytest
import torch

from sparsecse.model.loss import alignment, info_nce, uniformity


def test_info_nce_matches_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = 0.5
    # cosines: row 0 -> [1, 1/sqrt2], row 1 -> [0, 1/sqrt2]; positive is the diagonal
    r = 1 / math.sqrt(2)
    row0 = -(1 / t) + math.log(math.exp(1 / t) + math.exp(r / t))
    row1 = -(r / t) + math.log(math.exp(0.0) + math.exp(r / t))
    assert info_nce(a, p, temperature=t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_info_nce_hard_negative_weight_hits_own_negative_only():
    torch.manual_seed(0)
    a, p, h = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    t, w = 0.05, 1.5
    cands = torch.cat([p, h])
    logits = torch.nn.functional.cosine_similarity(a[:, None], cands[None], dim=-1) / t
    logits[torch.arange(3), torch.arange(3) + 3] += w
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert info_nce(a, p, h, t, w).item() == pytest.approx(expected.item(), rel=1e-6)
    assert info_nce(a, p, h, t, 0.0).item() != pytest.approx(expected.item(), rel=1e-3)


@pytest.mark.parametrize("batch", [1, 5, 17])
def test_info_nce_labels_follow_the_tensors(batch):
    """Anchor i's positive is candidate row offset + i, whatever the batch size (the rows before ours
    are another rank's)."""
    torch.manual_seed(batch)
    x = torch.randn(batch, 8)
    candidates = torch.cat([torch.randn(3, 8), x + 0.01 * torch.randn(batch, 8)])
    logits = torch.nn.functional.cosine_similarity(x[:, None], candidates[None], dim=-1) / 0.05
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(batch) + 3)
    got = info_nce(x, candidates, temperature=0.05, offset=3)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() < info_nce(x, candidates, temperature=0.05, offset=2).item(), "the positive is matched"


def test_alignment_of_orthogonal_unit_vectors_is_two():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([[0.0, 2.0], [5.0, 0.0]])  # normalised inside
    assert alignment(x, y).item() == pytest.approx(2.0)
    assert alignment(x, x).item() == pytest.approx(0.0)


def test_uniformity_matches_definition():
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    z = torch.nn.functional.normalize(x, dim=-1)
    terms = [torch.exp(-2 * (z[i] - z[j]).pow(2).sum()) for i in range(6) for j in range(i + 1, 6)]
    assert uniformity(x).item() == pytest.approx(torch.stack(terms).mean().log().item(), rel=1e-5)


def test_info_nce_logits_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    a, p, h = (torch.randn(8, 16).bfloat16() for _ in range(3))
    # the same bf16 embeddings, upcast: what float32 logits give (bf16 logits differ by ~1e-3)
    expected = info_nce(a.float(), p.float(), h.float(), 0.05, 0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = info_nce(a, p, h, 0.05, 0.3)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
