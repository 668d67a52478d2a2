"""The bad-input catalogue: each mistake, the overrides that make it and the one line that must report
it (test_bad_input runs them through train(); test_schema through the config check alone)."""

from __future__ import annotations

# case -> (overrides, with {tmp} for the test's folder; the expected one-line message)
BAD_INPUTS = {
    "unknown stop signal": (
        ["callbacks.last_checkpoint.signals=[SIGHUP]"],
        "^callbacks.last_checkpoint.signals.0.: must be 'SIGUSR1', 'SIGUSR2', 'SIGTERM' or 'SIGINT', "
        "got 'SIGHUP'$",
    ),
    "unknown key": (
        ["+data.batch_sise=4"],
        r"^data.batch_sise: unknown key for \S+ContrastiveDataModule; did you mean 'batch_size'\?$",
    ),
    "unknown top-level key": (["+sede=1"], r"^sede: unknown key; did you mean 'seed'\?$"),
    "wrong type": (
        ["trainer.max_epochs=1.5"],
        r"^trainer.max_epochs: must be a valid integer, got 1.5$",
    ),
    "out of range": (["model.temperature=0"], r"^model.temperature: must be greater than 0, got 0$"),
    "unknown transfer preset": (
        ["evaluate.transfer_preset=slow"],
        "^evaluate.transfer_preset: must be 'test' or 'fasttest', got 'slow'$",
    ),
    "missing data dir": (
        ["data_dir={tmp}/nowhere"],
        r"^data_dir: no such directory \S+/nowhere \(fetch it with `sparsecse-data download --data-dir ",
    ),
    "senteval files missing": (
        ["data_dir={tmp}"],
        r"^data_dir: \S+ lacks 50 files needed by tasks sts12, sts13",
    ),
    "unknown onnx export": (
        ["onnx=yes"],
        "^onnx: must be 'none', 'fp32', 'int8' or 'openvino-int8', got 'yes'$",
    ),
    "unknown bad-line policy": (
        ["data.on_bad_line=warn"],
        "data.on_bad_line: must be 'fail' or 'skip', got 'warn'",
    ),
    "zero line length": (
        ["data.max_line_length=0"],
        "data.max_line_length: must be greater than or equal to 1, got 0",
    ),
    "missing corpus": (["data.train_file={tmp}/none.txt"], "data.train_file: no such file"),
    "empty corpus": (["data.train_file={tmp}/empty.txt"], "data.train_file: .*empty.txt has no sentences"),
    "malformed csv": (["data.train_file={tmp}/nli.csv"], r"data.train_file: .*nli.csv:3: expected 3"),
    "unknown pooler": (
        ["model.encoder.pooler=mean"],
        "model.encoder.pooler: must be 'cls', .* or 'avg_top2', got 'mean'",
    ),
    "unknown model": (
        ["model.encoder.name_or_path={tmp}/no-model"],
        "model.encoder.name_or_path: cannot load",
    ),
    "zero batch size": (["data.batch_size=0"], "data.batch_size: must be greater than or equal to 1, got 0"),
    "negative batch size": (
        ["data.batch_size=-4"],
        "data.batch_size: must be greater than or equal to 1, got -4",
    ),
    "unknown task": (["evaluate.tasks=[sts99]"], "evaluate.tasks: unknown task 'sts99'"),
    "sparsity of 1": (
        ["pruning.head_sparsity=1.0"],
        r"pruning.head_sparsity: must be less than 1, got 1.0",
    ),
    "negative sparsity": (
        ["pruning.ffn_sparsity=-0.2"],
        "pruning.ffn_sparsity: must be greater than or equal to 0, got -0.2",
    ),
    "decreasing targets": (
        ["pruning.schedule=[{step:10,head_sparsity:0.5},{step:20,head_sparsity:0.25}]"],
        r"pruning.schedule\[1\].head_sparsity: decreases \(0.5 -> 0.25\)",
    ),
    "event after the last epoch": (
        ["pruning.schedule=[{epoch:2}]", "trainer.max_steps=-1", "trainer.max_epochs=1"],
        r"pruning.schedule\[0\].epoch: 2 is after the last epoch of training \(1\)",
    ),
    "event after the last step": (
        ["pruning.schedule=[{step:500}]"],
        r"pruning.schedule\[0\].step: 500 is after",
    ),
    "too many heads kept": (["pruning.min_heads_per_layer=5"], "pruning.min_heads_per_layer: 5 is more than"),
    "unreachable head sparsity": (
        ["pruning.head_sparsity=0.9"],
        "pruning.head_sparsity: 0.9 is out of reach",
    ),
    "unknown score mode": (["pruning.score=taylor"], "pruning.score: must be 'magnitude', .*, got 'taylor'"),
    "unknown granularity": (
        ["pruning.granularity=blocks"],
        "pruning.granularity: must be 'structured' or 'unstructured', got 'blocks'",
    ),
    "target of the other granularity": (
        ["pruning.weight_sparsity=0.5"],
        "pruning.weight_sparsity: applies to unstructured pruning, not to granularity=structured",
    ),
}

# the cases only the data, the model or the schedule reveal: train() finds them after the config check
FOUND_AFTER_THE_CONFIG_CHECK = {
    "missing data dir",
    "senteval files missing",
    "missing corpus",
    "empty corpus",
    "malformed csv",
    "unknown model",
    "unknown task",
    "decreasing targets",
    "event after the last epoch",
    "event after the last step",
    "too many heads kept",
    "unreachable head sparsity",
    "target of the other granularity",
}
