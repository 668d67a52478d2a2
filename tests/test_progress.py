from __future__ import annotations

from types import SimpleNamespace

import pytest

from callbacks import StepProgressBar


def bar_total(batches: int, max_steps: int, global_step: int = 0, accumulate: int = 1, done: int = 0) -> int:
    epoch = SimpleNamespace(batch_progress=SimpleNamespace(current=SimpleNamespace(ready=done)))
    trainer = SimpleNamespace(num_training_batches=batches, max_steps=max_steps, global_step=global_step,
                              accumulate_grad_batches=accumulate,
                              fit_loop=SimpleNamespace(epoch_loop=epoch))  # fmt: skip
    bar = StepProgressBar()
    bar._trainer = trainer  # what Lightning sets when the callback is attached
    return bar.total_train_batches


@pytest.mark.parametrize(
    ("arguments", "total"),
    [
        ({"batches": 403, "max_steps": 160}, 160),  # the embedded default: the run ends inside epoch 0
        ({"batches": 403, "max_steps": -1}, 403),  # bounded by epochs
        ({"batches": 100, "max_steps": 160, "global_step": 100}, 60),  # the last epoch of a step budget
        ({"batches": 403, "max_steps": 160, "accumulate": 4}, 403),  # 640 batches: the whole epoch
        ({"batches": 403, "max_steps": 50, "accumulate": 4}, 200),
        ({"batches": 403, "max_steps": 160, "global_step": 90, "done": 90}, 160),  # resumed mid-epoch
    ],
)
def test_the_bar_counts_to_the_batch_the_run_ends_at(arguments, total):
    assert bar_total(**arguments) == total
