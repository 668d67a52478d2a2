"""A toy SentEval folder in SentEval's own layout, generated deterministically in code.

Every file the readers, the data module, the training defaults and `sparsecse-data check` open is
there, a few dozen lines each, with the quirks of the real files: STS gold lines left empty (SentEval
drops those pairs), runs of spaces inside sentences, SICK's CRLF line ends, SNLI's trailing spaces,
MRPC's byte-order mark, latin-1 in the binary tasks and TREC. The names are SentEval's, written out
here rather than taken from the library, so that the toy folder checks the library's file lists
instead of echoing them.

The transfer tasks carry words that give the label (a bag of words separates them); the STS pairs
share more words the higher their gold score.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

STS_SUBSETS = {
    "STS12-en-test": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13-en-test": ("FNWN", "headlines", "OnWN"),
    "STS14-en-test": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15-en-test": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16-en-test": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
STS_LINES = 12  # per subset; every 6th gold line is empty, so 10 pairs are scored
STS_PAIRS = STS_LINES - STS_LINES // 6
STSB_ROWS = SICK_ROWS = 40  # per split
SNLI_PREMISES = 12  # per split (dev, test); each with an entailed, a neutral and a contradicting hypothesis
# Each premise also has a second entailed and contradicting hypothesis, shared by all premises of its
# split (SNLI repeats hypotheses such as "A person is outdoors ."), and the first premise a shared
# neutral one. The embedded corpora: the unique sentences (per split, 12 premises, 3 x 12 hypotheses
# of their own and 3 shared) and the (premise, entailed, contradicting) pairs, two per premise.
SNLI_SENTENCES = 2 * (SNLI_PREMISES * 4 + 3)
SNLI_TRIPLETS = 2 * SNLI_PREMISES * 2
TRANSFER_SIZES = {
    "mr": [60],
    "cr": [60],
    "subj": [60],
    "mpqa": [60],
    "sst2": [60, 20, 20],
    "trec": [60, 18],
    "mrpc": [40, 20],
}

NOUNS = "man woman dog cat child horse bird car guitar ball river street kitchen park train".split()
VERBS = "plays rides watches holds chases cleans paints carries finds opens drives throws".split()
ADJECTIVES = "small old red quiet busy green happy wooden dark bright".split()
POSITIVE, NEGATIVE = "good great fine nice superb".split(), "bad awful poor dull weak".split()


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def sentence(rng: random.Random) -> list[str]:
    return ["a", rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(VERBS), "the", rng.choice(NOUNS), "."]


def scored_pair(rng: random.Random) -> tuple[str, str, float]:
    """Two sentences that differ in `changed` of their 3 content words; gold 5 for none, 0 for all."""
    first = sentence(rng)
    second = list(first)
    changed = rng.randrange(4)
    for position in rng.sample([1, 2, 5], changed):
        pool = ADJECTIVES if position == 1 else NOUNS
        second[position] = rng.choice([w for w in pool if w != first[position]])
    gold = round(5.0 * (3 - changed) / 3 + rng.uniform(-0.4, 0.4), 1)
    return " ".join(first), " ".join(second), min(5.0, max(0.0, gold))


def write_sts(root: Path) -> None:
    rng = random.Random(12)
    for folder, subsets in STS_SUBSETS.items():
        for subset in subsets:
            pairs = [scored_pair(rng) for _ in range(STS_LINES)]
            spaced = [a.replace(" ", "  ", 1) if i % 4 == 0 else a for i, (a, _, _) in enumerate(pairs)]
            inputs = [f"{a}\t{b}" for a, (_, b, _) in zip(spaced, pairs)]
            gold = ["" if i % 6 == 5 else f"{g:.3f}" for i, (_, _, g) in enumerate(pairs)]
            write(root / "STS" / folder / f"STS.input.{subset}.txt", "\n".join(inputs) + "\n")
            write(root / "STS" / folder / f"STS.gs.{subset}.txt", "\n".join(gold) + "\n")
    for seed, split in enumerate(("train", "dev", "test")):
        rng = random.Random(100 + seed)
        rows = [
            f"main-captions\tMSRvid\t2012{split}\t{i:04d}\t{g:.3f}\t{a}\t{b}"
            for i, (a, b, g) in enumerate(scored_pair(rng) for _ in range(STSB_ROWS))
        ]
        write(root / "STS" / "STSBenchmark" / f"sts-{split}.csv", "\n".join(rows) + "\n")


def write_sick(root: Path) -> None:
    for seed, name in enumerate(("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt")):
        rng = random.Random(200 + seed)
        rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
        for i in range(SICK_ROWS):
            a, b, gold = scored_pair(rng)
            rows.append(f"{i + 1}\t{a}\t{b}\t{1 + 0.8 * gold:.1f}\t{'ENTAILMENT' if gold > 4 else 'NEUTRAL'}")
        write(root / "SICK" / name, "\r\n".join(rows) + "\r\n")


def write_snli(root: Path) -> None:
    for seed, split in enumerate(("dev", "test")):
        rng = random.Random(300 + seed)
        shared = {
            "entailment": f"A person is outdoors in the {split} set .",
            "neutral": f"Someone is waiting for a friend in the {split} set .",
            "contradiction": f"Nobody is there in the {split} set .",
        }
        rows = []
        for i in range(SNLI_PREMISES):
            premise = " ".join(sentence(rng)[:-1]) + f" in scene {i} of the {split} set ."
            noun = premise.split()[2]
            own = {
                "entailment": f"A {noun} is there in scene {i} of the {split} set .",
                "neutral": f"The {noun} is {rng.choice(ADJECTIVES)} in scene {i} of the {split} set .",
                "contradiction": f"No {noun} is anywhere in scene {i} of the {split} set .",
            }
            rows += [(premise, own[label], label) for label in ("neutral", "entailment", "contradiction")]
            rows += [(premise, shared[label], label) for label in ("contradiction", "entailment")]
        rows.append((rows[0][0], shared["neutral"], "neutral"))
        for index, name in enumerate(("s1", "s2", "labels")):
            trailing = " " if name != "labels" else ""
            write(root / "SNLI" / f"{name}.{split}", "".join(f"{row[index]}{trailing}\n" for row in rows))


def toy_sentences(label: int, n: int, seed: int) -> list[str]:
    rng = np.random.RandomState(seed)
    cue = POSITIVE if label else NEGATIVE
    filler = "the a film plot cast story it is was".split()
    return [
        " ".join(rng.choice(cue, 1 + i % 2).tolist() + rng.choice(filler, 1 + i % 4).tolist())
        for i in range(n)
    ]


def write_transfer(root: Path) -> None:
    """Every transfer task, with words that give the label."""
    for i, (folder, pos, neg) in enumerate(
        [("MR", "rt-polarity.pos", "rt-polarity.neg"), ("CR", "custrev.pos", "custrev.neg"),
         ("SUBJ", "subj.objective", "subj.subjective"), ("MPQA", "mpqa.pos", "mpqa.neg")]
    ):  # fmt: skip
        write(root / folder / pos, "\n".join(toy_sentences(1, 30, i)) + "\n", "latin-1")
        write(root / folder / neg, "\n".join(toy_sentences(0, 30, 10 + i)) + "\n", "latin-1")
    for j, (name, n) in enumerate([("train", 60), ("dev", 20), ("test", 20)]):
        lines = [
            f"{s} \t{label}" for label in (0, 1) for s in toy_sentences(label, n // 2, 20 + 2 * j + label)
        ]
        write(root / "SST" / "binary" / f"sentiment-{name}", "\n".join(lines) + "\n")
    for name, n in [("train_5500.label", 20), ("TREC_10.label", 6)]:
        lines = [
            f"{c}:x {q} {i} ?"
            for i in range(n)
            for c, q in zip(["HUM", "LOC", "NUM"], ["who", "where", "when"])
        ]
        write(root / "TREC" / name, "\n".join(lines) + "\n", "latin-1")
    for name, n in [("train", 40), ("test", 20)]:
        rows = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i, s in enumerate(toy_sentences(1, n, 30)):
            other = s if i % 2 else " ".join(reversed(toy_sentences(0, n, 31)[i].split()))
            rows.append(f"{i % 2}\t{i}\t{i}\t{s}\t{other}")
        write(root / "MRPC" / f"msr_paraphrase_{name}.txt", "\n".join(rows) + "\n")


def write_toy_senteval(root: Path) -> Path:
    """The whole toy folder under `root`; returns `root`."""
    write_sts(root)
    write_sick(root)
    write_snli(root)
    write_transfer(root)
    return root
