import itertools
import math

import numpy as np
import pytest
import torch

from sparsecse.core.errors import ConfigError
from sparsecse.evaluation.analysis import stsb_alignment_uniformity

VECTORS = {"a b": [1.0, 0.0], "c": [0.0, 2.0], "d": [3.0, 4.0], "e": [-1.0, 1.0]}
ROWS = [("a  b", "c", 5.0), ("d", "e", 4.2), ("c", "d", 4.0), ("e", "a b", 1.0)]  # 4.0 is not > 4


def write_stsb(root, rows, split="test"):
    folder = root / "STS" / "STSBenchmark"
    folder.mkdir(parents=True)
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}" for i, (a, b, s) in enumerate(rows)]
    (folder / f"sts-{split}.csv").write_text("\n".join(lines) + "\n")


def unit(v):
    v = np.asarray(v)
    return v / np.linalg.norm(v)


def test_alignment_uniformity_by_hand(tmp_path):
    write_stsb(tmp_path, ROWS)
    seen = []

    def encode(texts):
        seen.append(list(texts))
        return torch.tensor([VECTORS[t] for t in texts])

    result = stsb_alignment_uniformity(encode, tmp_path)
    positives = [("a b", "c"), ("d", "e")]
    align = np.mean([np.sum((unit(VECTORS[x]) - unit(VECTORS[y])) ** 2) for x, y in positives])
    pairs = list(itertools.combinations(VECTORS.values(), 2))  # 4 distinct sentences -> 6 pairs
    uniform = math.log(np.mean([np.exp(-2 * np.sum((unit(x) - unit(y)) ** 2)) for x, y in pairs]))
    assert result == pytest.approx({"alignment": align, "uniformity": uniform}, abs=1e-6)
    assert len(seen) == 1 and sorted(seen[0]) == sorted(VECTORS)  # each sentence encoded once


def test_threshold_and_split(tmp_path):
    write_stsb(tmp_path, ROWS, split="dev")
    encode = lambda texts: torch.tensor([VECTORS[t] for t in texts])  # noqa: E731
    strict = stsb_alignment_uniformity(encode, tmp_path, split="dev", positive_threshold=4.5)
    only_first = np.sum((unit(VECTORS["a b"]) - unit(VECTORS["c"])) ** 2)
    assert strict["alignment"] == pytest.approx(only_first, abs=1e-6)
    with pytest.raises(ConfigError, match="sts-test.csv"):
        stsb_alignment_uniformity(encode, tmp_path, split="test")


def test_table_widens_long_columns_and_gives_alignment_three_decimals():
    from sparsecse.evaluation.table import format_table

    table = format_table({"after": {"stsb": 81.2, "alignment": 0.2964}, "before": {"stsb": 1.0}})
    header, rule, after, before = table.splitlines()
    assert header == "       |  STS-B | alignment"
    assert after == "after  |  81.20 |     0.296"
    assert before == "before |   1.00 |          "
    assert len(rule) == len(header)


def test_sts_and_alignment_uniformity_encode_each_sentence_once(toy_senteval_dir):
    """Alignment/uniformity reuses the STS-B test vectors the STS tasks made; the numbers are those
    of each evaluated alone."""
    from helpers import hashed_bag_of_words

    from sparsecse.evaluation import evaluate_encoder

    class CountingEncoder:
        def __init__(self):
            self.texts = []

        def encode(self, texts, batch_size=128, show_progress=False):
            self.texts += texts
            return hashed_bag_of_words(texts)

    together = CountingEncoder()
    both = evaluate_encoder(together, toy_senteval_dir, ["sts", "analysis"])
    assert len(together.texts) == len(set(together.texts))
    alone = {**evaluate_encoder(CountingEncoder(), toy_senteval_dir, ["sts"]),
             **evaluate_encoder(CountingEncoder(), toy_senteval_dir, ["analysis"])}  # fmt: skip
    assert both == pytest.approx(alone, abs=1e-6)


def test_an_average_is_shown_only_over_several_tasks():
    from sparsecse.evaluation.table import format_table, headline

    one = format_table({"after": {"stsb": 80.0, "sts_avg": 80.0}})
    assert "STS-B" in one and "STS avg" not in one
    two = format_table({"after": {"stsb": 80.0, "sickr": 70.0, "sts_avg": 75.0}})
    assert "STS avg" in two
    assert headline({"stsb": 80.0, "sickr": 70.0, "sts_avg": 75.0}) == "STS avg 75.00"
    assert headline({"stsb": 80.0, "sts_avg": 80.0}) == "STS-B 80.00"
    assert headline({"mr": 75.5, "cr": 80.0, "transfer_avg": 77.75, "alignment": 0.2}) == (
        "Tr. avg 77.75, alignment 0.200"
    )
