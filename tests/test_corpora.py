from __future__ import annotations

import pickle

import pytest
from toy_senteval import SNLI_SENTENCES, SNLI_TRIPLETS

import sparsecse.data.checked_lines
from sparsecse.core.errors import ConfigError
from sparsecse.data.corpora import TextLines, load_corpus, read_nli_csv, snli_sentences, snli_triplets


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


def test_embedded_snli_defaults(toy_senteval_dir):
    """SNLI dev+test: the unique sentences in first-seen order; (premise, entailed, contradicting) pairs
    in file order, a premise with two of each giving two."""
    sentences = snli_sentences(toy_senteval_dir)
    assert len(sentences) == len(set(sentences)) == SNLI_SENTENCES
    assert sentences[:6] == [
        "a bright horse cleans the man in scene 0 of the dev set .",  # a premise, stripped
        "The horse is wooden in scene 0 of the dev set .",
        "A horse is there in scene 0 of the dev set .",
        "No horse is anywhere in scene 0 of the dev set .",
        "Nobody is there in the dev set .",
        "A person is outdoors in the dev set .",
    ]
    triplets = snli_triplets(toy_senteval_dir)
    assert len(triplets) == SNLI_TRIPLETS
    assert triplets[:2] == [
        (sentences[0], sentences[2], sentences[3]),
        (sentences[0], sentences[5], sentences[4]),
    ]


def test_embedded_snli_defaults_on_the_real_data(real_senteval_dir):
    sentences = snli_sentences(real_senteval_dir)
    assert len(sentences) == len(set(sentences)) == 25741
    triplets = snli_triplets(real_senteval_dir)
    assert len(triplets) == 5883 and all(len(t) == 3 and t[1] != t[2] for t in triplets)


def write(tmp_path, name: str, content: bytes | str):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# content -> the one-line error (after `train_file: `), with max_line_length=20
BAD_TEXT = {
    "not UTF-8": (b"ok\n\xff\xfe broken\n", r"c.txt:2: not valid UTF-8$"),
    "over-long line": (
        "ok\n\n" + "x" * 21 + "\n",
        r"c.txt:3: line of 21 characters exceeds max_line_length=20$",
    ),
    "over-long, counted in characters": (
        "é" * 90,
        r"c.txt:1: line of 90 characters exceeds max_line_length=20$",
    ),
    "binary without newlines": (b"ok\n" + bytes(range(128, 256)) * 40, r"c.txt:2: not valid UTF-8$"),
}


def test_text_lines_keeps_lines_of_exactly_max_line_length(tmp_path):
    path = write(tmp_path, "c.txt", "😀" * 20 + "\r\n" + "é" * 20 + "\nlast")  # 4 and 2 bytes a character
    lines = TextLines(path, max_line_length=20)
    assert [lines[i] for i in range(3)] == ["😀" * 20, "é" * 20, "last"] and lines.bad_lines == 0


def test_text_lines_skip_mode_skips_and_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(sparsecse.data.checked_lines, "_CHUNK", 7)  # chunks that split characters
    content = b"one\n\xff\n\n" + "é".encode() * 50 + b"\ntwo\n" + bytes(range(128, 256)) * 3 + b"\n \nthree"
    path = write(tmp_path, "c.txt", content)
    lines = TextLines(path, on_bad_line="skip", max_line_length=20)
    assert [lines[i] for i in range(len(lines))] == ["one", "two", "three"]
    assert (lines.bad_lines, lines.empty_lines) == (3, 2)
    assert lines.report.first_bad == [
        f"{path}:2: not valid UTF-8",
        f"{path}:4: line of 50 characters exceeds max_line_length=20",
        f"{path}:6: not valid UTF-8",
    ]
    assert (
        lines.report.bad_summary()
        == f"train_file: skipped 3 bad lines of {path} (first: {path}:2: not valid UTF-8)"
    )
    assert lines.report.empty_summary() == f"train_file: skipped 2 empty lines of {path}"


def test_text_lines_all_skipped_is_an_empty_corpus(tmp_path):
    path = write(tmp_path, "c.txt", b"\xff\n\n" + b"y" * 100)
    with pytest.raises(ConfigError, match=r"c.txt has no sentences \(empty corpus\)"):
        TextLines(path, on_bad_line="skip", max_line_length=20)


@pytest.mark.parametrize("reader", [TextLines, read_nli_csv])
def test_readers_check_their_switches(tmp_path, reader):
    path = write(tmp_path, "c.csv", "sent0,sent1\na,b\n")
    with pytest.raises(ConfigError, match=r"^on_bad_line: must be 'fail' or 'skip', got 'warn'$"):
        reader(path, on_bad_line="warn")
    with pytest.raises(ConfigError, match=r"^max_line_length: must be greater than or equal to 1, got 0$"):
        reader(path, max_line_length=0)


# content -> the one-line error (after `train_file: `), with max_line_length=20
BAD_CSV = {
    "no header": (
        "a,b\nc,d\n",
        r"nli.csv:1: expected the header sent0,sent1\[,hard_neg\], got \['a', 'b'\]$",
    ),
    "empty file": ("", r"nli.csv:1: expected the header sent0,sent1\[,hard_neg\], got None$"),
    "header not UTF-8": (
        b"sent0,\xffsent1\n",
        r"nli.csv:1: expected the header sent0,sent1\[,hard_neg\], got a bad line \(not valid UTF-8\)$",
    ),
    "row not UTF-8": (b"sent0,sent1\na,b\n\xe9t\xe9,c\n", r"nli.csv:3: not valid UTF-8$"),
    "too few fields": (
        "sent0,sent1,hard_neg\na,b,c\n\nd,e\n",
        r"nli.csv:4: expected 3 non-empty fields, got \['d', 'e'\]$",
    ),
    "empty field": ("sent0,sent1\na, \n", r"nli.csv:2: expected 2 non-empty fields, got \['a', ' '\]$"),
    "over-long line": (
        "sent0,sent1\n" + "a" * 21 + ",b\n",
        r"nli.csv:2: line of 23 characters exceeds max_line_length=20$",
    ),
    "over-long field": (
        'sent0,sent1\n"' + "a" * 12 + "\n" + "b" * 12 + '",c\n',
        r"nli.csv:2: field of 25 characters exceeds max_line_length=20$",
    ),
}


# (reader, file name, its table of bad contents -> message)
READERS = {"txt": (TextLines, "c.txt", BAD_TEXT), "csv": (read_nli_csv, "nli.csv", BAD_CSV)}


@pytest.mark.parametrize(("kind", "case"), [(kind, case) for kind in READERS for case in READERS[kind][2]])
def test_bad_line_fails_with_file_and_line(tmp_path, kind, case):
    reader, name, table = READERS[kind]
    content, message = table[case]
    path = write(tmp_path, name, content)
    with pytest.raises(ConfigError, match=rf"^train_file: {tmp_path}/{message}") as err:
        reader(path, max_line_length=20)
    assert "\n" not in str(err.value)


def test_nli_csv_skip_mode_skips_and_counts(tmp_path):
    content = b'sent0,sent1\na,b\n\n\xff,x\nc\n"d\n\xff",e\nf,g\n  \n' + b"z" * 30 + b",y\nh,i"
    path = write(tmp_path, "nli.csv", content)
    rows = read_nli_csv(path, on_bad_line="skip", max_line_length=12)
    assert rows == [("a", "b"), ("f", "g"), ("h", "i")]
    assert (rows.report.bad, rows.report.empty) == (4, 2)
    assert rows.report.first_bad == [
        f"{path}:4: not valid UTF-8",
        f"{path}:5: expected 2 non-empty fields, got ['c']",
        f"{path}:7: not valid UTF-8",  # inside the quoted field opened on line 6: the record goes with it
    ]
    assert rows.report.bad_summary().startswith(
        f"train_file: skipped 4 bad lines of {path} (first: {path}:4:"
    )


def test_nli_csv_skips_and_counts_empty_lines(tmp_path):
    rows = read_nli_csv(write(tmp_path, "nli.csv", "sent0,sent1\n\r\na,b\n \n"))
    assert rows == [("a", "b")] and rows.report.empty == 2 and rows.report.bad == 0


def test_nli_csv_all_skipped_is_an_empty_corpus(tmp_path):
    path = write(tmp_path, "nli.csv", b"sent0,sent1\n\xff,b\nc\n")
    with pytest.raises(ConfigError, match=r"nli.csv has no examples \(empty corpus\)"):
        read_nli_csv(path, on_bad_line="skip")


def test_load_corpus_passes_the_switches_to_files_only(tmp_path, toy_senteval_dir):
    txt = write(tmp_path, "c.txt", b"one\n\xff\ntwo\n")
    csv_file = write(tmp_path, "c.csv", b"sent0,sent1\na,b\n\xff,c\n")
    assert len(load_corpus(str(txt), tmp_path, on_bad_line="skip")) == 2
    assert load_corpus(str(csv_file), tmp_path, "skip") == [("a", "b")]
    with pytest.raises(ConfigError, match="c.txt:2: not valid UTF-8"):
        load_corpus(str(txt), tmp_path)
    assert load_corpus("snli_sentences", toy_senteval_dir, "skip", max_line_length=1) == snli_sentences(
        toy_senteval_dir
    )


def test_nli_csv_parser_error_names_file_and_line(tmp_path):
    field = "a" * 70_000 + "\n" + "a" * 70_000  # over csv's own field limit (131072)
    path = write(tmp_path, "nli.csv", f'sent0,sent1\nb,c\n"{field}",d\ne,f\n')
    with pytest.raises(ConfigError, match=r"nli.csv:4: field larger than field limit \(131072\)$"):
        read_nli_csv(path, max_line_length=200_000)
    assert read_nli_csv(path, on_bad_line="skip", max_line_length=200_000) == [("b", "c"), ("e", "f")]
