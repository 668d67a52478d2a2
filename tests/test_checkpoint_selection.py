"""How a run selects the checkpoint it evaluates: the window of `BestCheckpoint`, and the final step's
model evaluated beside the best (`evaluate.final_step`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import compose_train, cpu_overrides
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks import BestCheckpoint
from sparsecse.core.errors import ConfigError
from train import train


def test_only_validations_after_the_window_compete_for_best(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(ModelCheckpoint, "on_validation_end", lambda self, trainer, module: seen.append(
        trainer.global_step))  # fmt: skip
    callback = BestCheckpoint(dirpath=tmp_path, monitor="val/stsb_spearman", mode="max", after_step=80)
    for step in (20, 80, 100, 160):
        callback.on_validation_end(SimpleNamespace(global_step=step), None)
    assert seen == [100, 160], "the validation at the window's step itself is before the event it waits for"


def test_final_step_needs_the_last_checkpoint(tmp_path, toy_senteval_dir, tiny_model_dir):
    cfg = compose_train(
        cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir)
        + ["evaluate.final_step=true", "~callbacks.last_checkpoint"]
    )
    with pytest.raises(ConfigError, match=r"^evaluate.final_step: needs callbacks.last_checkpoint"):
        train(cfg)


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"sentence {i} is about topic {i % 3} .\n" for i in range(16)))
    return path  # 16 sentences, batch 4: four steps


def four_steps(tmp_path: Path, data_dir: Path, model: Path, corpus: Path, *extra: str):
    return compose_train(
        cpu_overrides(tmp_path, data_dir, model)
        + [
            f"data.train_file={corpus}",
            "data.batch_size=4",
            "trainer.max_steps=4",
            "evaluate.before=false",
            "evaluate.tasks=[stsb,analysis]",
            "evaluate.final_step=true",
            "save_model=false",
            "pruning.schedule=[{step:2}]",
            "pruning.head_sparsity=0.5",
            "pruning.ffn_sparsity=0.5",
            "pruning.num_batches=1",
            *extra,
        ]  # fmt: skip
    )


@pytest.mark.slow
def test_the_final_step_is_scored_as_the_run_that_selects_it_scores_it(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    """Validating at step 3 only makes step 3 the best and 4 the final; a run of the same seed that
    validates at step 4 selects and evaluates the step-4 model through the in-memory path."""
    earlier = four_steps(
        tmp_path / "a", toy_senteval_dir, tiny_model_dir, corpus, "trainer.val_check_interval=3"
    )
    results = train(earlier)
    assert (results["best_step"], results["steps"]) == (3, 4)
    assert results["final"] != results["after"]
    last = four_steps(
        tmp_path / "b", toy_senteval_dir, tiny_model_dir, corpus, "trainer.val_check_interval=4"
    )
    selected = train(last)
    assert selected["best_step"] == 4 and selected["final"] == selected["after"]
    assert results["final"] == pytest.approx(selected["after"], abs=1e-6)
    assert results["sparsity"] == selected["sparsity"]
    assert torch.load(results["checkpoints"]["best"], weights_only=True)["global_step"] == 3
