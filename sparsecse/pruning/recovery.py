"""Recovery after pruning: the pruned encoder (student) learns to give the sentence embeddings the
encoder before the event (teacher) gave, on the training corpus (METHOD.md section 7).

The teacher's embeddings are computed once per (teacher weights, corpus, pooler, max_length) and
cached on disk under a digest of those four, so that no teacher forward runs in a training step and
a second recovery from the same teacher costs nothing. A cache file that does not load, whose
digest or size is not the one asked for, or whose contents fail their checksum is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from sparsecse.architecture.layout import encoder_layers
from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import NonNegativeInt, PositiveInt, checked
from sparsecse.model.encoder import SentenceEncoder
from sparsecse.model.loss import simcse_loss
from sparsecse.model.optim import linear_warmup_decay
from sparsecse.pruning.gates import hidden_of

log = logging.getLogger(__name__)

CACHE_ENV = "SPARSECSE_CACHE_DIR"
CACHE_VERSION = 1  # bump when the file layout or the digest's inputs change


def default_cache_dir() -> Path:
    """`$SPARSECSE_CACHE_DIR/teacher`, else a folder in the user's cache."""
    root = (
        os.environ.get(CACHE_ENV)
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sparsecse"
    )
    return Path(root).expanduser() / "teacher"


Weight = Annotated[float, Field(ge=0.0)]


class Recovery:
    """How the student is trained after an event; `steps=0` is no recovery."""

    @checked
    def __init__(
        self,
        steps: NonNegativeInt = 0,
        batch_size: PositiveInt = 64,
        lr: Annotated[float, Field(gt=0.0)] = 1e-4,
        warmup_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1,
        mse_weight: Weight = 1.0,  # MSE between student and teacher embeddings
        cosine_weight: Weight = 0.0,  # 1 - cos(student, teacher)
        contrastive_weight: Weight = 0.0,  # SimCSE's loss on two dropout views of the student
        layer_weight: Weight = 0.0,  # MSE of each kept layer's hidden states against its teacher layer's
        without_dropout: bool = False,  # the student trains as it serves; default: dropout on, as SimCSE
        max_length: PositiveInt = 32,
        seed: int = 0,  # the order of the sentences
        cache_dir: str | None = None,  # teacher embeddings; null: default_cache_dir()
    ):
        if steps and not (mse_weight or cosine_weight or contrastive_weight or layer_weight):
            raise ConfigError("mse_weight", "every loss weight is 0: recovery would train on nothing")
        if contrastive_weight and without_dropout:
            raise ConfigError(
                "without_dropout", "contrastive_weight needs dropout: its two views differ by it"
            )
        self.steps, self.batch_size, self.lr, self.warmup_ratio = steps, batch_size, lr, warmup_ratio
        self.mse_weight, self.cosine_weight, self.contrastive_weight = (
            mse_weight,
            cosine_weight,
            contrastive_weight,
        )
        self.layer_weight, self.without_dropout = layer_weight, without_dropout
        self.max_length, self.seed, self.cache_dir = max_length, seed, cache_dir


def teacher_digest(teacher: SentenceEncoder, sentences: Sequence[str], max_length: int) -> str:
    """sha256 over what the teacher's embeddings depend on: its weights (names, shapes, dtypes,
    values), its architecture and pooler, the sentences in order, and max_length."""
    digest = hashlib.sha256(
        f"v{CACHE_VERSION} {teacher.pooler} {teacher.mlp_only_train} {max_length}\n".encode()
    )
    digest.update(json.dumps(teacher.backbone.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in teacher.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim too
    for sentence in sentences:
        digest.update(sentence.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def _checksum(embeddings: Tensor) -> str:
    return hashlib.sha256(embeddings.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _cached(path: Path, digest: str, count: int) -> Tensor | None:
    """The embeddings in `path` if it holds exactly what `digest` names; else None, saying why."""
    if not path.is_file():
        return None
    try:
        record = torch.load(path, weights_only=True)
        embeddings = record["embeddings"]
        problem = (
            "another teacher or corpus" if record["digest"] != digest
            else f"{len(embeddings)} embeddings, {count} sentences" if len(embeddings) != count
            else "contents fail their checksum" if _checksum(embeddings) != record["checksum"]
            else None
        )  # fmt: skip
    except Exception as err:  # a truncated or foreign file: any failure to read it means rebuild
        problem = f"unreadable ({type(err).__name__})"
    if problem is None:
        return embeddings
    log.warning(f"teacher cache {path}: {problem}; rebuilding it")
    return None


def teacher_embeddings(
    teacher: SentenceEncoder,
    sentences: Sequence[str],
    max_length: int,
    cache_dir: str | Path | None = None,
    batch_size: int = 128,
) -> Tensor:
    """(N,) sentences -> (N, H) float32 teacher embeddings (test-time pooling, no dropout), from
    the cache when it holds them, else computed and cached (written whole, then renamed into place)."""
    digest = teacher_digest(teacher, sentences, max_length)
    path = Path(cache_dir or default_cache_dir()).expanduser() / f"{digest}.pt"
    if (embeddings := _cached(path, digest, len(sentences))) is not None:
        log.info(f"teacher embeddings of {len(sentences)} sentences from {path}")
        return embeddings
    start = time.perf_counter()
    embeddings = teacher.encode(sentences, batch_size=batch_size, max_length=max_length)  # (N, H)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"digest": digest, "checksum": _checksum(embeddings), "embeddings": embeddings}, partial)
    partial.replace(path)
    log.info(f"teacher embeddings of {len(sentences)} sentences in {time.perf_counter() - start:.0f} s, "
             f"cached in {path}")  # fmt: skip
    return embeddings


def distillation_loss(
    student: Tensor, teacher: Tensor, mse_weight: float = 1.0, cosine_weight: float = 0.0
) -> Tensor:
    """(B, H) student and teacher embeddings -> mse_weight * MSE + cosine_weight * (1 - cos), means
    over the batch (MSE also over dimensions, as sentence-transformers' MSELoss)."""
    loss = student.new_zeros(())
    if mse_weight:
        loss = loss + mse_weight * F.mse_loss(student, teacher)
    if cosine_weight:
        loss = loss + cosine_weight * (1 - F.cosine_similarity(student, teacher)).mean()
    return loss


@contextmanager
def layer_outputs(encoder: SentenceEncoder) -> Iterator[list[Tensor]]:
    """Within the block, each forward's transformer-layer outputs, (B, T, H) in model order, in the
    list yielded (cleared by the caller between forwards)."""
    outputs: list[Tensor] = []
    keep = lambda module, args, output: outputs.append(hidden_of(output))  # noqa: E731
    hooks = [layer.register_forward_hook(keep) for layer in encoder_layers(encoder.backbone)]
    try:
        yield outputs
    finally:
        for hook in hooks:
            hook.remove()


def layer_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], mask: Tensor) -> Tensor:
    """Per layer (B, T, H) student hidden states and the teacher's of the layers they were -> the mean
    over layers of the MSE over real tokens (`mask` (B, T)) and dimensions: CoFi's layer-wise
    distillation (Xia et al., ACL 2022) with the layers mapped by where each kept layer came from,
    no learned transform (the hidden size is not pruned)."""
    weights = mask[..., None].to(student[0].dtype)  # (B, T, 1)
    count = weights.sum() * student[0].shape[-1]
    errors = [((s - t).pow(2) * weights).sum() / count for s, t in zip(student, teacher)]
    return torch.stack(errors).mean()


class LayerTeacher:
    """The encoder before the event, run in every recovery step for its hidden states: the student's
    layer `student[j]` is distilled from the teacher's layer `layers[j]`, the layer it was. After
    layers are dropped, student[j] = j; while they are gated off in training, student = layers (the
    kept ones)."""

    def __init__(self, encoder: SentenceEncoder, layers: Sequence[int], student: Sequence[int] | None = None):
        self.encoder, self.layers = encoder.eval(), list(layers)
        self.student = list(range(len(self.layers))) if student is None else list(student)

    @torch.no_grad()
    def hidden_states(self, tokens: dict[str, Tensor]) -> list[Tensor]:
        """(B, T) tokens -> the (B, T, H) outputs of the mapped teacher layers."""
        with layer_outputs(self.encoder) as outputs:
            self.encoder(**tokens, test_time=True)
        return [outputs[i] for i in self.layers]


def sentence_order(count: int, steps: int, batch_size: int, seed: int) -> Tensor:
    """(steps, batch_size) sentence indices: seeded permutations of all `count`, one after another."""
    generator = torch.Generator().manual_seed(seed)
    needed = steps * batch_size
    rounds = math.ceil(needed / count)
    order = torch.cat([torch.randperm(count, generator=generator) for _ in range(rounds)])
    return order[:needed].view(steps, batch_size)


def recover(
    student: SentenceEncoder,
    sentences: Sequence[str],
    teacher: Tensor,
    config: Recovery,
    log_every: int = 50,
    seed: int | None = None,
    after_step: Callable[[], None] | None = None,
    show_progress: bool = False,
    layer_teacher: LayerTeacher | None = None,
) -> list[float]:
    """Train `student` in place to match `teacher` ((N, H) embeddings of `sentences`) for
    config.steps steps of AdamW with linear warm-up and decay; returns the loss of every step.
    Dropout stays on, as in SimCSE training, unless `config.without_dropout`; the student's embedding
    is its test-time one, and it is left in the mode it came in. `seed` (default config.seed) orders
    the sentences; `after_step` runs after each optimizer step (e.g. re-applying unstructured masks);
    `show_progress` draws a bar of the steps with the last loss; `layer_teacher` (needed when
    config.layer_weight > 0) gives the hidden states of the teacher's layers."""
    from tqdm.auto import tqdm

    if len(sentences) != len(teacher):
        raise ValueError(f"{len(sentences)} sentences, {len(teacher)} teacher embeddings")
    if config.layer_weight and layer_teacher is None:
        raise ValueError("layer_weight > 0 needs the teacher encoder (layer_teacher)")
    if layer_teacher is not None and max(layer_teacher.student) >= len(encoder_layers(student.backbone)):
        raise ValueError(f"student layers {layer_teacher.student} mapped, the student has "
                         f"{len(encoder_layers(student.backbone))}")  # fmt: skip
    device, was_training = student.device, student.training
    student.train(not config.without_dropout)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = linear_warmup_decay(optimizer, config.steps, config.warmup_ratio)
    losses = []
    start = time.perf_counter()
    order = sentence_order(
        len(sentences), config.steps, config.batch_size, config.seed if seed is None else seed
    )
    bar = tqdm(total=config.steps, desc="recovery", unit="step", disable=not show_progress)
    for step, index in enumerate(order):
        tokens = student.tokenize([sentences[i] for i in index], config.max_length)
        tokens = {k: v.to(device) for k, v in tokens.items()}
        views = 2 if config.contrastive_weight else 1
        if views == 2:  # two dropout views in one forward, as the training step does: (2 B, T)
            tokens = {k: torch.cat([v, v]) for k, v in tokens.items()}
        with layer_outputs(student) if config.layer_weight else nullcontext([]) as hidden:
            emb = student(**tokens, test_time=True).view(views, len(index), -1)  # (V, B, H)
        target = teacher[index].to(device)
        loss = distillation_loss(emb[0], target, config.mse_weight, config.cosine_weight)
        if config.layer_weight:  # the first view's hidden states: (B, T, H) per layer
            first = {k: v[: len(index)] for k, v in tokens.items()}
            own = [hidden[j][: len(index)] for j in layer_teacher.student]
            loss = loss + config.layer_weight * layer_loss(
                own, layer_teacher.hidden_states(first), first["attention_mask"]
            )
        if views == 2:
            loss = loss + config.contrastive_weight * simcse_loss(emb)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.5f}", refresh=False)
        if log_every and (step + 1) % log_every == 0:
            log.info(f"recovery step {step + 1}/{config.steps}: loss {losses[-1]:.5f}, "
                     f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    bar.close()
    student.train(was_training)
    return losses
