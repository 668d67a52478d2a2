"""Fixtures: the toy and the real SentEval folder, the tokenizer, tiny encoders and a tiny model folder.

Plain functions and constants the test files share are in helpers.py; the toy folder's generator is
toy_senteval.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import tiny_backbone, tiny_bert, tokenizer_for
from toy_senteval import write_toy_senteval

from sparsecse.model.encoder import SentenceEncoder
from sparsecse.model.loading import load_tokenizer


@pytest.fixture(scope="session")
def toy_senteval_dir(tmp_path_factory) -> Path:
    """A few dozen lines of every SentEval file, in SentEval's layout (tests/toy_senteval.py): for the
    tests that need a SentEval folder but not SentEval's numbers. Treat it as read-only."""
    return write_toy_senteval(tmp_path_factory.mktemp("toy-senteval"))


@pytest.fixture(scope="session")
def real_senteval_dir() -> Path:
    """The real SentEval folder, `$SPARSECSE_DATA_DIR` as the README documents, for the tests that
    check SentEval's own sizes and reference scores; they skip without it."""
    path = Path(os.environ.get("SPARSECSE_DATA_DIR", "")).expanduser()
    if not os.environ.get("SPARSECSE_DATA_DIR") or not (path / "STS").is_dir():
        pytest.skip(f"the real SentEval data is not in {path}: set SPARSECSE_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("minilm")


@pytest.fixture
def make_encoder(tokenizer):
    tokenizers = {}

    def make(
        pooler: str = "avg", mlp_only_train: bool = False, seed: int = 0, kind: str = "bert", **overrides
    ):
        backbone = tiny_backbone(kind, seed, with_pooler=pooler == "cls", **overrides)
        if kind not in tokenizers:
            tokenizers[kind] = tokenizer_for(kind, tokenizer)
        return SentenceEncoder(backbone, tokenizers[kind], pooler, mlp_only_train)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny BERT saved as a Hugging Face model directory (stands in for bert-base-uncased)."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
