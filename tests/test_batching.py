"""Length-grouped training batches: the same examples as the uniform shuffle, padded less."""

from __future__ import annotations

import random

import pytest
import torch

from sparsecse.data.corpora import TextLines
from sparsecse.data.sampling import EpochShuffle, example_lengths
from sparsecse.training.data import ContrastiveDataModule

BATCH, RUN = 4, 3  # a run of 3 batches is sorted by length


def batches_of(order: list[int], size: int = BATCH) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def grouped(size: int, lengths: list[int], **kwargs) -> EpochShuffle:
    return EpochShuffle(size, seed=7, lengths=lengths, batch_size=BATCH, bucket_batches=RUN, **kwargs)


@pytest.fixture
def lengths() -> list[int]:
    draw = random.Random(0)
    return [draw.randrange(1, 50) for _ in range(30)]


def test_each_run_of_batches_is_cut_from_its_examples_sorted_by_length(lengths):
    order = list(grouped(30, lengths))
    assert sorted(order) == list(range(30)), "a permutation: nothing dropped or repeated"
    batches = batches_of(order)
    for start in range(0, len(batches), RUN):
        run = sorted(batches[start : start + RUN], key=lambda b: -max(lengths[i] for i in b))
        spans = [(min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in run]
        assert all(low >= high for (low, _), (_, high) in zip(spans, spans[1:])), spans
    assert [len(b) for b in batches] == [4] * 7 + [2], "only the last batch is short, and it stays last"


def test_grouping_pads_less_than_the_uniform_shuffle(lengths):
    def padded(order: list[int]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in batches_of(order))

    uniform, by_length = list(EpochShuffle(30, seed=7)), list(grouped(30, lengths))
    assert padded(by_length) < 0.85 * padded(uniform)


def test_grouped_order_is_reproducible_sharded_and_resumable(lengths):
    first = [list(grouped(30, lengths, rank=r, world_size=2)) for r in (0, 1)]
    assert first[0] == list(grouped(30, lengths, rank=0, world_size=2)), "drawn from (seed, epoch) alone"
    assert sorted(first[0] + first[1]) == list(range(30))
    resumed = grouped(30, lengths, rank=1, world_size=2)
    resumed.resume(epoch=0, examples=8)
    assert list(resumed) == first[1][8:]
    resumed.set_epoch(1)
    assert list(resumed) != first[1]


def test_grouping_needs_a_length_per_example():
    with pytest.raises(ValueError, match="needs the lengths of all 5 examples"):
        EpochShuffle(5, lengths=[1, 2], batch_size=2, bucket_batches=2)


def test_file_lengths_come_from_the_offsets(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("ab\n\nabcde\nü\n", encoding="utf-8")
    assert example_lengths(TextLines(path)).tolist() == [4, 6, 3], "bytes to the next line, empty ones too"
    assert example_lengths([("ab", "abcd"), ("abc", "a")]) == [4, 3], "the longest view of a tuple"


def test_datamodule_batches_by_length(tmp_path, toy_senteval_dir, tiny_model_dir):
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    path = tmp_path / "c.txt"
    path.write_text("".join(" ".join(words[: 1 + i % 12]) + "\n" for i in range(96)))

    def padded_tokens(bucket_batches: int) -> int:
        data = ContrastiveDataModule(str(tiny_model_dir), toy_senteval_dir, str(path), batch_size=8, seed=1,
                                     bucket_batches=bucket_batches)  # fmt: skip
        batches = list(data.train_dataloader())
        lengths = [int(n) for b in batches for n in b["attention_mask"][0].sum(1)]  # tokens of each row
        assert len(batches) == 12 and sorted(lengths) == sorted(2 + 1 + i % 12 for i in range(96)), (
            "each once"
        )
        return sum(b["input_ids"][0].numel() for b in batches)

    assert padded_tokens(4) < 0.8 * padded_tokens(0)


def test_the_epoch_order_is_not_held_as_a_python_list():
    """A 1M-example epoch as a list of ints held ~38 MB for the whole epoch (bench/RESULTS.md)."""
    import tracemalloc

    sampler = EpochShuffle(1_000_000, seed=0)
    tracemalloc.start()
    order = iter(sampler)
    first = [next(order) for _ in range(10)]
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < 2_000_000, f"{held} bytes of Python objects held while iterating"
    assert first == torch.randperm(1_000_000, generator=torch.Generator().manual_seed(0))[:10].tolist()


def test_the_datamodule_reads_its_distinct_sentences_once(
    tmp_path, toy_senteval_dir, tiny_model_dir, monkeypatch
):
    """Recovery, the speed target's timing and OpenVINO's calibration all read `data.sentences`."""
    import sparsecse.training.data as module

    path = tmp_path / "c.txt"
    path.write_text("a cat sleeps .\na dog runs .\na cat sleeps .\n")
    data = ContrastiveDataModule(str(tiny_model_dir), toy_senteval_dir, str(path), batch_size=2)
    calls = []
    real = module.corpus_sentences
    monkeypatch.setattr(module, "corpus_sentences", lambda corpus: calls.append(1) or real(corpus))
    assert data.sentences == ["a cat sleeps .", "a dog runs ."] and data.sentences is data.sentences
    assert len(calls) == 1
