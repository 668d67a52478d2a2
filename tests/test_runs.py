from __future__ import annotations

from sparsecse.runs import differences, flatten


def test_differences_name_dotted_keys_and_leave_out_how_a_run_is_watched():
    old = {"model": {"lr": 3e-5, "pooler": "cls"}, "logger": {"wandb": {"offline": True}}, "resume": True,
           "data": {"num_workers": 1, "batch_size": 64}, "pruning": {"schedule": [{"step": 5}]}}  # fmt: skip
    new = {"model": {"lr": 1e-5, "pooler": "cls"}, "logger": {"csv": {}}, "resume": False, "seed": 1,
           "data": {"num_workers": 4, "batch_size": 64}, "pruning": {"schedule": [{"step": 6}]}}  # fmt: skip
    assert differences(old, new) == [
        "model.lr: 3e-05 -> 1e-05",
        "pruning.schedule: [{'step': 5}] -> [{'step': 6}]",
        "seed: '(absent)' -> 1",
    ]
    assert differences(old, old) == []


def test_flatten_keeps_lists_and_empty_nodes_as_values():
    assert flatten({"a": {"b": [1, 2], "c": {}}, "d": None}) == {"a.b": [1, 2], "a.c": {}, "d": None}
