from __future__ import annotations

import copy
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch
from helpers import hashed_bag_of_words
from sklearn.model_selection import StratifiedKFold
from torch import nn
from toy_senteval import TRANSFER_SIZES

import sparsecse.evaluation.classifier as classifier
import sparsecse.evaluation.transfer as transfer
from sparsecse.core.errors import ConfigError
from sparsecse.evaluation import TRANSFER_TASKS, evaluate_encoder, expand_tasks
from sparsecse.evaluation.classifier import ClassifierConfig, Fit, fit_many
from sparsecse.evaluation.transfer import (
    PRESETS,
    REGS,
    Preset,
    evaluate_transfer,
    inner_kfold,
    kfold,
    read_binary,
    read_mrpc,
    read_sst2,
    read_task,
    read_trec,
    split,
)
from sparsecse.export.model_io import load_encoder

# small enough for a plain fit per classifier, big enough for ragged last batches and early stops
SMALL = ClassifierConfig("adam", batch_size=16, tenacity=2, epoch_size=2, max_epoch=12)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The plain fits are thousands of tiny ops: on two threads they crawl while other work shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SentEvalLogReg:
    """SentEval's MLP with nhid=0, written out plainly: one classifier, global seeds, torch optimizers."""

    def __init__(self, dim: int, n_classes: int, l2: float, config: ClassifierConfig):
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.model = nn.Linear(dim, n_classes)
        self.loss_fn = nn.CrossEntropyLoss()  # SentEval's size_average=False after __init__ is ignored
        optim = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[config.optim]
        self.optimizer = optim(self.model.parameters(), weight_decay=l2)
        self.config = config

    def fit(self, x, y, validation_data=None, validation_split=None) -> float:
        if validation_data is None:
            permutation = np.random.permutation(len(x))
            cut = int(validation_split * len(x))
            validation_data = x[permutation[:cut]], y[permutation[:cut]]
            x, y = x[permutation[cut:]], y[permutation[cut:]]
        nepoch, best_accuracy, early_stop_count, stop = 0, -1, 0, False
        while not stop and nepoch <= self.config.max_epoch:
            for _ in range(self.config.epoch_size):
                permutation = np.random.permutation(len(x))
                for i in range(0, len(x), self.config.batch_size):
                    idx = torch.from_numpy(permutation[i : i + self.config.batch_size])
                    loss = self.loss_fn(self.model(x[idx]), y[idx])
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
            nepoch += self.config.epoch_size
            accuracy = self.score(*validation_data)
            if accuracy > best_accuracy:
                best_accuracy, best_model = accuracy, copy.deepcopy(self.model)
            else:
                if early_stop_count >= self.config.tenacity:
                    stop = True
                early_stop_count += 1
        self.model = best_model
        return best_accuracy

    @torch.no_grad()
    def score(self, x, y) -> float:
        return 1.0 * (self.model(x).argmax(1) == y).sum().item() / len(x)


def plain_fit(x, y, n_classes, fit: Fit, config) -> tuple[float, float | None]:
    clf = SentEvalLogReg(x.shape[1], n_classes, fit.l2, config)
    train = torch.from_numpy(fit.train)
    if fit.dev is None:
        dev = clf.fit(x[train], y[train], validation_split=fit.validation_split)
    else:
        dev = clf.fit(x[train], y[train], validation_data=(x[fit.dev], y[fit.dev]))
    return dev, None if fit.test is None else clf.score(x[fit.test], y[fit.test])


def plain_inner_kfold(x, y, n_classes, preset):
    """SentEval's InnerKFoldClassifier.run, one classifier at a time."""
    k, config = preset.kfold, preset.classifier
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=1111)
    dev_results, test_results = [], []
    for train_idx, test_idx in skf.split(x, y):
        x_train, y_train = x[train_idx], y[train_idx]
        scores = []
        for reg in REGS:
            reg_scores = []
            for a, b in StratifiedKFold(n_splits=k, shuffle=True, random_state=1111).split(x_train, y_train):
                clf = SentEvalLogReg(x.shape[1], n_classes, reg, config)
                clf.fit(x_train[a], y_train[a], validation_data=(x_train[b], y_train[b]))
                reg_scores.append(clf.score(x_train[b], y_train[b]))
            scores.append(round(100 * np.mean(reg_scores), 2))
        dev_results.append(np.max(scores))
        clf = SentEvalLogReg(x.shape[1], n_classes, REGS[np.argmax(scores)], config)
        clf.fit(x_train, y_train, validation_split=0.05)
        test_results.append(round(100 * clf.score(x[test_idx], y[test_idx]), 2))
    return round(np.mean(dev_results), 2), round(np.mean(test_results), 2)


def plain_kfold(train, test, n_classes, preset):
    """SentEval's KFoldClassifier.run, one classifier at a time."""
    (x, y), (x_test, y_test) = train, test
    config = preset.classifier
    skf = StratifiedKFold(n_splits=preset.kfold, shuffle=True, random_state=config.seed)
    scores = []
    for reg in REGS:
        fold_scores = []
        for a, b in skf.split(x, y):
            clf = SentEvalLogReg(x.shape[1], n_classes, reg, config)
            clf.fit(x[a], y[a], validation_data=(x[b], y[b]))
            fold_scores.append(clf.score(x[b], y[b]))
        scores.append(round(100 * np.mean(fold_scores), 2))
    clf = SentEvalLogReg(x.shape[1], n_classes, REGS[np.argmax(scores)], config)
    clf.fit(x, y, validation_split=0.05)
    return np.max(scores), round(100 * clf.score(x_test, y_test), 2)


def plain_split(train, dev, test, n_classes, preset):
    """SentEval's SplitClassifier.run, one classifier at a time (the chosen one fitted again)."""
    scores = []
    for reg in REGS:
        clf = SentEvalLogReg(train[0].shape[1], n_classes, reg, preset.classifier)
        clf.fit(*train, validation_data=dev)
        scores.append(round(100 * clf.score(*dev), 2))
    clf = SentEvalLogReg(train[0].shape[1], n_classes, REGS[np.argmax(scores)], preset.classifier)
    clf.fit(*train, validation_data=dev)
    return np.max(scores), round(100 * clf.score(*test), 2)


def gaussian_blobs(n: int, dim: int, n_classes: int, seed: int, spread: float = 1.5):
    """Overlapping class clusters: accuracies well below 100, so the L2 grid and early stops matter."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(n_classes, size=n)
    centres = rng.randn(n_classes, dim)
    features = centres[labels] + spread * rng.randn(n, dim)
    return torch.tensor(features, dtype=torch.float32), torch.from_numpy(labels)


@pytest.mark.parametrize("optim", ["adam", "rmsprop"])
def test_batched_fits_equal_separate_senteval_fits(monkeypatch, optim):
    monkeypatch.setattr(classifier, "GROUP_STREAMS", 2)  # several groups, each losing streams
    config = replace(SMALL, optim=optim)
    x, y = gaussian_blobs(120, 5, 3, seed=0)
    rows = np.random.RandomState(1).permutation(120)
    fits = [
        Fit(rows[:70], 1e-5, dev=rows[70:95], test=rows[95:]),
        Fit(rows[:63], 1e-2, dev=rows[70:95], test=rows[95:]),  # fewer batches per pass than the first
        Fit(rows[5:85], 1e-3, test=rows[95:]),  # 5% held out at random
        Fit(rows[:49], 1e-4, dev=rows[49:95]),
        Fit(rows[10:90], 1e-5, validation_split=0.2),
        Fit(rows[:70], 1e-2, dev=rows[70:90]),  # shares its batches with the first
        Fit(rows[5:85], 1e-2, test=rows[95:]),  # shares its split and batches with the third
    ]
    batched = fit_many(x, y.numpy(), 3, fits, config)
    for fit, scores in zip(fits, batched):
        assert (scores.dev, scores.test) == plain_fit(x, y, 3, fit, config)


def test_protocols_equal_plain_senteval_protocols():
    preset = Preset(3, SMALL)
    x, y = gaussian_blobs(150, 4, 2, seed=2)
    ours = inner_kfold(x, y.numpy(), 2, preset)
    assert (ours.dev, ours.test) == plain_inner_kfold(x, y, 2, preset)

    train, test = gaussian_blobs(90, 4, 3, seed=3), gaussian_blobs(40, 4, 3, seed=3)
    ours = kfold((train[0], train[1].numpy()), (test[0], test[1].numpy()), 3, preset)
    assert (ours.dev, ours.test) == plain_kfold(train, test, 3, preset)

    parts = [gaussian_blobs(n, 4, 2, seed=4) for n in (80, 30, 30)]
    ours = split(*[(f, labels.numpy()) for f, labels in parts], 2, preset)
    assert (ours.dev, ours.test) == plain_split(*parts, 2, preset)


def test_initial_weights_are_senteval_linear_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    weights = classifier.initial_weights(7, 3, seed=1111)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(1111)
    linear = nn.Linear(7, 3)
    assert torch.equal(weights, torch.cat([linear.weight, linear.bias[:, None]], 1))


def test_unknown_optimizer_is_named():
    with pytest.raises(ConfigError, match="optim: unknown optimizer 'sgd'"):
        ClassifierConfig("sgd")


# --- readers -------------------------------------------------------------------------------------


def write(path, text: str, encoding: str = "utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def test_binary_reader_sorts_by_length_then_label_and_keeps_empty_lines(tmp_path):
    write(tmp_path / "CR" / "custrev.pos", "good  one\n\nnaïve but fine here\nok\n", "latin-1")
    write(tmp_path / "CR" / "custrev.neg", "bad\nnot good\nworst\x85ever\n", "latin-1")
    data = read_binary(tmp_path, "cr")
    # \x85 (NEL) ends a line for str.splitlines(), as in SentEval's reader
    assert data.texts == ["", "bad", "worst", "ever", "ok", "not good", "good one", "naïve but fine here"]
    assert data.labels.tolist() == [1, 0, 0, 0, 1, 0, 1, 1]


def test_subj_objective_is_label_one(tmp_path):
    write(tmp_path / "SUBJ" / "subj.objective", "a b\n")
    write(tmp_path / "SUBJ" / "subj.subjective", "c d\n")
    assert read_binary(tmp_path, "subj").labels.tolist() == [0, 1]


def test_sst2_reader(tmp_path):
    write(tmp_path / "SST" / "binary" / "sentiment-dev", "a fine film \t1\nawful \t0\nso so \t0\n")
    data = read_sst2(tmp_path, "dev")
    assert data.texts == ["awful", "so so", "a fine film"] and data.labels.tolist() == [0, 0, 1]


def test_sst2_line_without_label_is_named(tmp_path):
    write(tmp_path / "SST" / "binary" / "sentiment-train", "good \t1\nno label here\n")
    with pytest.raises(ConfigError, match=r"data_dir: .*sentiment-train:2: expected 2 '\\t'-separated"):
        read_sst2(tmp_path, "train")


def test_trec_reader_keeps_coarse_labels(tmp_path):
    write(
        tmp_path / "TREC" / "TREC_10.label", "NUM:date When did it end ?\nHUM:ind Who ?\nLOC:city Where ?\n"
    )
    data = read_trec(tmp_path, "test")
    assert data.texts == ["Who ?", "Where ?", "When did it end ?"] and data.labels.tolist() == [3, 4, 5]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("no colon here", "expected 2 ':'-separated"),
        ("FOO:bar What ?", "bad label 'FOO'"),
        ("NUM:date", "COARSE:fine"),
    ],
)
def test_malformed_trec_line_is_named(tmp_path, line, message):
    write(tmp_path / "TREC" / "train_5500.label", f"DESC:def What is it ?\n{line}\n")
    with pytest.raises(ConfigError, match=rf"train_5500.label:2: .*{message}"):
        read_trec(tmp_path, "train")


def test_mrpc_reader_skips_header_and_sorts_by_both_lengths(tmp_path):
    rows = [
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        "1\t1\t2\ta b\tc d e",
        "0\t3\t4\ta  b\tc",
        "1\t5\t6\tx\ty",
    ]
    write(tmp_path / "MRPC" / "msr_paraphrase_train.txt", "\n".join(rows) + "\n")
    data = read_mrpc(tmp_path, "train")
    assert data.first == ["x", "a b", "a b"] and data.second == ["y", "c", "c d e"]
    assert data.labels.tolist() == [1, 0, 1]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="data_dir: missing SentEval file .*MRPC/msr_paraphrase_train.txt"):
        read_task(tmp_path, "mrpc")


def sizes(data_dir) -> dict[str, list[int]]:
    """Task -> the number of examples of each of its splits."""
    data = {task: read_task(data_dir, task) for task in TRANSFER_TASKS}
    return {t: [len(p.labels) for p in (d if isinstance(d, tuple) else (d,))] for t, d in data.items()}


def test_the_toy_folder_reads_with_its_sizes(toy_senteval_dir):
    assert sizes(toy_senteval_dir) == TRANSFER_SIZES


def test_senteval_sizes(real_senteval_dir):
    assert sizes(real_senteval_dir) == {"mr": [10662], "cr": [3775], "subj": [10000], "mpqa": [10606],
                      "sst2": [67349, 872, 1821], "trec": [5452, 500], "mrpc": [4076, 1725]}  # fmt: skip


# --- end to end ----------------------------------------------------------------------------------


def bag_of_words_16(texts) -> torch.Tensor:
    return hashed_bag_of_words(texts, dim=16)


def by_protocol(task: str, data, preset: Preset) -> float:
    """SentEval's protocol for `task`, run by hand on bag-of-words features of `data` (read_task's)."""
    if task in ("mr", "cr", "subj", "mpqa"):
        return inner_kfold(bag_of_words_16(data.texts), data.labels, 2, preset).test
    if task == "mrpc":  # the features of a pair: [|a - b|, a * b]
        pairs = [(bag_of_words_16(d.first), bag_of_words_16(d.second), d.labels) for d in data]
        return kfold(*[(torch.cat([(a - b).abs(), a * b], 1), y) for a, b, y in pairs], 2, preset).test
    parts = [(bag_of_words_16(d.texts), d.labels) for d in data]
    return split(*parts, 2, preset).test if task == "sst2" else kfold(*parts, 6, preset).test


def test_evaluate_transfer_end_to_end(toy_senteval_dir):
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return bag_of_words_16(texts)

    results = evaluate_transfer(encode, toy_senteval_dir, TRANSFER_TASKS, preset="fasttest")
    assert list(results) == [*TRANSFER_TASKS, "transfer_avg"]
    assert results["transfer_avg"] == pytest.approx(np.mean([results[t] for t in TRANSFER_TASKS]))
    preset = PRESETS["fasttest"]
    expected = {t: by_protocol(t, read_task(toy_senteval_dir, t), preset) for t in TRANSFER_TASKS}
    assert {t: results[t] for t in TRANSFER_TASKS} == expected
    # the toy words give the label: far above chance (50, TREC 33) unless texts and labels come apart
    assert min(results[t] for t in TRANSFER_TASKS) >= 75, results
    assert len(calls) == 7 and all(len(c) == len(set(c)) for c in calls)  # one call a task, no repeats
    again = evaluate_transfer(bag_of_words_16, toy_senteval_dir, ["trec", "mrpc"], preset="fasttest")
    assert again == {"trec": results["trec"], "mrpc": results["mrpc"],
                     "transfer_avg": (results["trec"] + results["mrpc"]) / 2}  # fmt: skip


def test_unknown_preset_is_named(tmp_path):
    with pytest.raises(ConfigError, match="transfer_preset: must be 'test' or 'fasttest', got 'slow'"):
        evaluate_transfer(hashed_bag_of_words, tmp_path, ["mr"], preset="slow")


def test_task_sets_and_evaluate_encoder(toy_senteval_dir):
    assert expand_tasks(["transfer"]) == TRANSFER_TASKS
    assert expand_tasks(["trec", "sts"])[:2] == ("trec", "sts12")
    with pytest.raises(ConfigError, match="tasks: unknown task 'sst5'"):
        expand_tasks(["sst5"])

    class ToyEncoder:
        def encode(self, texts, batch_size, show_progress):
            return bag_of_words_16(texts)

    results = evaluate_encoder(ToyEncoder(), toy_senteval_dir, ["trec"], 8, transfer_preset="fasttest")
    trec = evaluate_transfer(bag_of_words_16, toy_senteval_dir, ["trec"], preset="fasttest")["trec"]
    assert results == {"trec": trec, "transfer_avg": trec}


@pytest.mark.slow
def test_trec_with_minilm(real_senteval_dir):
    """Real TREC, real MiniLM (avg), SimCSE's test preset: about 20 s on two CPU cores."""
    encoder = load_encoder("minilm", pooler="avg")
    results = evaluate_transfer(partial(encoder.encode, batch_size=128), real_senteval_dir, ["trec"])
    assert results["trec"] == pytest.approx(90.0, abs=1.0)  # 90.00 here; encoder rounding may move it


@pytest.mark.parametrize(
    ("preset", "k", "settings"),
    [
        ("test", 10, ClassifierConfig("adam", batch_size=64, tenacity=5, epoch_size=4)),
        ("fasttest", 5, ClassifierConfig("rmsprop", batch_size=128, tenacity=3, epoch_size=2)),
    ],
)
def test_presets_run_simcse_evaluation_protocols(preset, k, settings, toy_senteval_dir, monkeypatch):
    """SimCSE's evaluation.py --mode test / fasttest, as the preset runs MR: k outer folds, each choosing
    its L2 weight by k inner folds, every classifier trained with SimCSE's settings (and SentEval's
    200 epochs at most, seed 1111)."""
    runs = []

    def spy(features, labels, n_classes, fits, config, done=None):
        runs.append((fits, config))
        return [classifier.Scores(dev=0.5, test=0.5)] * len(fits)

    monkeypatch.setattr(transfer, "fit_many", spy)
    evaluate_transfer(bag_of_words_16, toy_senteval_dir, ["mr"], preset=preset)
    (inner, _), (outer, _) = runs
    assert len(inner) + len(outer) == transfer.fit_count("mr", transfer.PRESETS[preset])  # the bar's total
    assert (
        {config for _, config in runs} == {settings} and settings.max_epoch == 200 and settings.seed == 1111
    )
    assert len(inner) == k * len(REGS) * k and {fit.l2 for fit in inner} == set(REGS)
    assert len(outer) == k and sorted(np.concatenate([fit.test for fit in outer]).tolist()) == list(range(60))


def test_transfer_progress_is_labelled_with_the_task(toy_senteval_dir, monkeypatch):
    """`MR encode` and `MR fits n/n`: the fits of a task run for minutes on a CPU."""
    labels, bars = [], []

    def encode(texts, show_progress=False):
        labels.append(show_progress)
        return bag_of_words_16(texts)

    class Bar:  # records what tqdm would draw
        def __init__(self, total, desc, disable, leave):
            self.shown, self.desc, self.total, self.n = not disable, desc, total, 0
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def update(self, n):
            self.n += n

    monkeypatch.setattr(transfer, "tqdm", Bar)
    evaluate_transfer(encode, toy_senteval_dir, ["mr", "trec"], preset="fasttest", show_progress=True)
    assert labels == ["MR encode", "TREC encode"]
    totals = [transfer.fit_count(task, transfer.PRESETS["fasttest"]) for task in ("mr", "trec")]
    assert [(b.shown, b.desc, b.total, b.n) for b in bars] == [
        (True, "MR fits", totals[0], totals[0]),
        (True, "TREC fits", totals[1], totals[1]),
    ]
    evaluate_transfer(bag_of_words_16, toy_senteval_dir, ["mr"], preset="fasttest")  # plain callable: no bar
    assert not bars[-1].shown
