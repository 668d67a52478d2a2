"""The training step's speed options: batches of one shape (data.static_shapes), model.compile's loss
equal to the eager one, and page-locked batches for a GPU."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from sparsecse.core.errors import ConfigError
from sparsecse.training.data import ContrastiveDataModule
from sparsecse.training.module import SimCSEModule

WORDS = "one two three four five six seven eight nine ten eleven twelve".split()


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("".join(" ".join(WORDS[: 1 + i % 12]) + "\n" for i in range(45)))
    return path


def shapes(data: ContrastiveDataModule) -> set[tuple[int, ...]]:
    return {tuple(batch["input_ids"].shape) for batch in data.train_dataloader()}


def test_static_shapes_pad_to_max_length_and_drop_the_short_last_batch(
    corpus, toy_senteval_dir, tiny_model_dir
):
    make = partial(ContrastiveDataModule, str(tiny_model_dir), toy_senteval_dir, str(corpus), batch_size=8,
                   max_length=16)  # fmt: skip
    assert shapes(make(static_shapes=True)) == {(2, 8, 16)}, "45 examples: 5 full batches, the 5 left dropped"
    assert len(make(static_shapes=True).train_dataloader()) == 5
    dynamic = shapes(make())
    assert any(s[1] == 5 for s in dynamic) and len({s[2] for s in dynamic}) > 1, (
        "the default pads each batch to its longest sentence and keeps the short last batch"
    )


def test_batches_are_page_locked_for_a_gpu_only(corpus, toy_senteval_dir, tiny_model_dir):
    from types import SimpleNamespace

    data = ContrastiveDataModule(str(tiny_model_dir), toy_senteval_dir, str(corpus), batch_size=8)
    assert not data.train_dataloader().pin_memory and not data.val_dataloader().pin_memory
    for device, pinned in (("cpu", False), ("cuda", True)):
        data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)),
                                       global_rank=0, world_size=1)  # fmt: skip
        assert data.train_dataloader().pin_memory is pinned and data.val_dataloader().pin_memory is pinned


def test_static_shapes_need_a_max_length(corpus, toy_senteval_dir, tiny_model_dir):
    with pytest.raises(ConfigError, match="static_shapes: pads every batch to max_length, which is null"):
        ContrastiveDataModule(str(tiny_model_dir), toy_senteval_dir, str(corpus), max_length=None,
                              static_shapes=True)  # fmt: skip


def batch_of(tokenizer, size: int = 6, length: int = 12) -> dict[str, torch.Tensor]:
    from sparsecse.training.data import ContrastiveCollator

    sentences = [" ".join(WORDS[: 2 + i]) for i in range(size)]
    return ContrastiveCollator(tokenizer, length, pad_to_max_length=True)(sentences)


def test_compile_compiles_the_loss_once_for_fixed_shapes(monkeypatch, make_encoder, tokenizer):
    """The wiring, with torch.compile recorded: one compile for the run, of views_loss, static shapes."""
    calls = []

    def recording_compile(fn, **options):
        calls.append((fn, options))
        return fn

    monkeypatch.setattr(torch, "compile", recording_compile)
    module = SimCSEModule(make_encoder("avg", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                          optimizer=None, compile=True)  # fmt: skip
    module.log = lambda *args, **kwargs: None
    batch = batch_of(tokenizer)
    losses = [module.training_step(batch, i) for i in range(3)]
    assert len(calls) == 1 and calls[0][0] == module.views_loss
    assert calls[0][1] == {"dynamic": False, "mode": None}, "no CUDA graphs on a CPU"
    assert torch.equal(losses[0], module.views_loss(batch))


def loss_and_gradients(module: SimCSEModule, loss_of, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    loss = loss_of(batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]


@pytest.mark.slow
def test_the_inductor_compiled_loss_and_gradients_equal_the_eager_ones_before_and_after_an_event(
    make_encoder, tokenizer
):
    """Dropout off, so that both paths compute the same function (their random streams differ). After
    an event has set the gates in place, the same compiled function must see them: gates are inputs
    of the graph, not constants baked into it."""
    from sparsecse.pruning.schedule import PruningEvent
    from sparsecse.pruning.sparsifier import Sparsifier

    encoder = make_encoder("avg", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    sparsifier = Sparsifier(score="weight_magnitude")
    sparsifier.attach(encoder)
    module = SimCSEModule(encoder, optimizer=None, compile=True)
    compiled_loss, batch = module.compile_loss(), batch_of(tokenizer)
    losses = []
    for event in (None, PruningEvent("step", 2, 0.5, 0.5)):
        if event is not None:
            sparsifier.apply(encoder, event, sparsifier.importance(encoder, iter(())))
        eager, eager_grads = loss_and_gradients(module, module.views_loss, batch)
        compiled, compiled_grads = loss_and_gradients(module, compiled_loss, batch)
        assert eager > 0.1 and torch.allclose(compiled, eager, rtol=1e-4), (event, compiled, eager)
        assert len(compiled_grads) == len(eager_grads) > 10
        for c, e in zip(compiled_grads, eager_grads):
            torch.testing.assert_close(c, e, rtol=1e-3, atol=1e-5)
        losses.append(eager)
    assert not torch.allclose(losses[0], losses[1]), "the event changed the function"
