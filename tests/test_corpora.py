from __future__ import annotations

import pickle

import pytest

from sparsecse.corpora import TextLines, load_corpus, read_nli_csv, snli_sentences, snli_triplets
from sparsecse.errors import ConfigError


def test_text_lines_skips_empty_lines_and_reads_by_offset(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first sentence\n\n  \nsecond one ü\nthird\n", encoding="utf-8")
    lines = TextLines(path)
    assert len(lines) == 3 and lines.empty_lines == 2
    assert [lines[i] for i in (2, 0, 1)] == ["third", "first sentence", "second one ü"]
    clone = pickle.loads(pickle.dumps(lines))  # DataLoader workers receive a pickled copy
    assert clone[1] == "second one ü"


def test_text_lines_errors_name_file_and_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="empty.txt has no sentences"):
        TextLines(empty)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(ConfigError, match=r"bad.txt:2: not valid UTF-8"):
        TextLines(bad)
    with pytest.raises(ConfigError, match="train_file: no such file"):
        TextLines(tmp_path / "missing.txt")


def test_nli_csv_reads_triplets_and_pairs(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text('sent0,sent1,hard_neg\n"a, b",c,d\ne,f,g\n')
    assert read_nli_csv(path) == [("a, b", "c", "d"), ("e", "f", "g")]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sent0,sent1\nx,y\n")
    assert read_nli_csv(pairs) == [("x", "y")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("premise,hypothesis\na,b\n", r"nli.csv:1: expected the header"),
        ("sent0,sent1,hard_neg\na,b,c\nd,e\n", r"nli.csv:3: expected 3 non-empty fields"),
        ("sent0,sent1,hard_neg\na,,c\n", r"nli.csv:2: expected 3 non-empty fields"),
        ("sent0,sent1,hard_neg\n", r"nli.csv has no examples"),
    ],
)
def test_nli_csv_malformed_input(tmp_path, content, message):
    path = tmp_path / "nli.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_nli_csv(path)


def test_load_corpus_dispatches_on_name_and_suffix(tmp_path):
    (tmp_path / "c.txt").write_text("one\ntwo\n")
    (tmp_path / "c.csv").write_text("sent0,sent1\na,b\n")
    assert len(load_corpus(str(tmp_path / "c.txt"), tmp_path)) == 2
    assert load_corpus(str(tmp_path / "c.csv"), tmp_path) == [("a", "b")]


def test_embedded_snli_defaults(data_dir):
    sentences = snli_sentences(data_dir)
    assert len(sentences) == len(set(sentences)) == 25741
    triplets = snli_triplets(data_dir)
    assert len(triplets) == 5883 and all(len(t) == 3 and t[1] != t[2] for t in triplets)
