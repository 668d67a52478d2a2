from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import TEXTS, views
from lightning.pytorch.callbacks import EarlyStopping
from transformers import BertConfig

from callbacks.checkpointing import restart_early_stopping
from callbacks.pruning import ScheduledPruning
from sparsecse.core.errors import ConfigError
from sparsecse.model.encoder import SentenceEncoder
from sparsecse.pruning.gates import effective_parameters, sparsity_summary
from sparsecse.pruning.removal import remove_pruned_units
from sparsecse.pruning.schedule import PruningEvent, build_schedule, check_events_reached, check_schedule_fits
from sparsecse.pruning.sparsifier import Sparsifier


def test_schedule_ramps_linearly_to_the_final_targets():
    events = build_schedule([{"step": 10}, {"step": 20}], "structured", head_sparsity=0.4, ffn_sparsity=0.2)
    assert events == [PruningEvent("step", 10, 0.2, 0.1), PruningEvent("step", 20, 0.4, 0.2)]


def test_schedule_takes_explicit_targets():
    events = build_schedule([{"epoch": 1, "weight_sparsity": 0.3}, {"epoch": 2}], "unstructured",
                            weight_sparsity=0.5)  # fmt: skip
    assert [e.weight_sparsity for e in events] == [0.3, 0.5]


@pytest.mark.parametrize(
    "schedule, targets, message",
    [
        ([{"epoch": 1}], {"head_sparsity": 1.0}, "head_sparsity: must be less than 1, got 1.0"),
        ([{"epoch": 1}], {"head_sparsity": -0.1}, "sparsity: must be greater than or equal to 0, got -0.1"),
        ([{"epoch": 1, "head_sparsity": 0.5}, {"epoch": 2, "head_sparsity": 0.2}], {},
         r"schedule\[1\].head_sparsity: decreases \(0.5 -> 0.2\)"),
        ([{"epoch": 1}, {"step": 5}], {}, r"schedule\[1\].step: mixes epochs and steps"),
        ([{"epoch": 2}, {"epoch": 1}], {}, r"schedule\[1\].epoch: must come after"),
        ([{"epoch": 1, "step": 3}], {}, r"schedule\[0\]: needs exactly one of"),
        ([{"epoch": 1, "weight_sparsity": 0.1}], {}, r"schedule\[0\]: unknown field 'weight_sparsity'"),
        ([], {}, "schedule: is empty"),
        ([{"epoch": 1}], {"weight_sparsity": 0.5}, "weight_sparsity: applies to unstructured"),
    ],
)  # fmt: skip
def test_bad_schedules(schedule, targets, message):
    with pytest.raises(ConfigError, match=message):
        build_schedule(schedule, "structured", **targets)


def test_an_event_after_the_last_epoch_is_rejected():
    events = build_schedule([{"epoch": 1}, {"epoch": 3}], "structured", head_sparsity=0.2)
    check_schedule_fits(events, max_epochs=3, max_steps=-1)
    with pytest.raises(
        ConfigError, match=r"schedule\[1\].epoch: 3 is after the last epoch of training \(2\)"
    ):
        check_schedule_fits(events, max_epochs=2, max_steps=-1)


def test_an_event_after_the_last_step_the_data_allows_is_rejected():
    """max_steps=-1 passes the config check; the data then decides: 4 steps of 2 an epoch."""
    steps = build_schedule([{"step": 2}, {"step": 4}], "structured", head_sparsity=0.2)
    check_events_reached(steps, total_steps=4, steps_per_epoch=2)
    late = r"^schedule\[1\].step: 4 is after the last step training reaches \(3"
    with pytest.raises(ConfigError, match=late):
        check_events_reached(steps, total_steps=3, steps_per_epoch=2)
    epochs = build_schedule([{"epoch": 2}], "structured", head_sparsity=0.2)
    check_events_reached(epochs, total_steps=4, steps_per_epoch=2)  # at the end of epoch 1
    late = r"^schedule\[0\].epoch: 2 is after the last epoch training reaches"
    with pytest.raises(ConfigError, match=late):
        check_events_reached(epochs, total_steps=3, steps_per_epoch=2)  # max_steps stops inside epoch 1
    check_events_reached(steps + epochs, total_steps=float("inf"), steps_per_epoch=2)


def test_model_dependent_checks():
    config = BertConfig(num_attention_heads=4)
    with pytest.raises(ConfigError, match="min_heads_per_layer: 5 is more than the model's 4 heads"):
        Sparsifier(min_heads_per_layer=5).check_model(config)
    with pytest.raises(ConfigError, match="head_sparsity: 0.8 is out of reach"):
        Sparsifier(min_heads_per_layer=1).check_reachable(config, PruningEvent("epoch", 1, 0.8))
    with pytest.raises(ConfigError, match="granularity: must be 'structured' or 'unstructured', got 'chan"):
        Sparsifier(granularity="channels")
    with pytest.raises(ConfigError, match="score: must be 'magnitude', .*, got "):
        Sparsifier(score="taylor")


@pytest.mark.parametrize(
    "score", ["magnitude", "signed", "alignment", "uniformity", "random", "weight_magnitude"]
)
def test_each_event_removes_exactly_the_requested_counts(make_encoder, score):
    encoder = make_encoder("avg")  # 2 layers x 4 heads, 2 x 64 neurons
    sparsifier = Sparsifier(score=score, num_batches=2, min_heads_per_layer=1)
    sparsifier.attach(encoder)
    batches = [views(encoder)] * 2
    for event, heads_left, neurons_left in ((PruningEvent("step", 1, 0.25, 0.5), 6, 64),
                                            (PruningEvent("step", 2, 0.75, 0.75), 2, 32)):  # fmt: skip
        summary = sparsifier.apply(encoder, event, sparsifier.importance(encoder, iter(batches)))
        counts = encoder.gates.counts()
        assert sum(counts["heads"]) == heads_left and sum(counts["neurons"]) == neurons_left
        assert min(counts["heads"]) >= 1
        assert summary.head_sparsity == pytest.approx(1 - heads_left / 8)
    assert counts["heads"] == [1, 1], "at 75% of 8 heads with a minimum of 1, each layer keeps one"


def test_unstructured_event_masks_exactly_the_requested_weights(make_encoder):
    encoder = make_encoder("avg")
    sparsifier = Sparsifier(granularity="unstructured", num_batches=1)
    sparsifier.attach(encoder)
    event = PruningEvent("epoch", 1, weight_sparsity=0.3)
    summary = sparsifier.apply(encoder, event, sparsifier.importance(encoder, iter([views(encoder)])))
    total = sum(m.numel() for m in (encoder.masks.mask(k) for k in encoder.masks.linears))
    assert summary.weight_sparsity == pytest.approx(round(0.3 * total) / total)
    masked = sum(int((~encoder.masks.mask(k).bool()).sum()) for k in encoder.masks.linears)
    assert masked == round(0.3 * total)
    zeros = sum(int((lin.weight == 0).sum()) for lin in encoder.masks.linears.values())
    assert zeros == masked, "the masked weights are zero, and a random init has no other zero"


def test_effective_parameters_match_the_physically_pruned_model(make_encoder):
    encoder = make_encoder("avg").eval()
    sparsifier = Sparsifier(num_batches=1)
    sparsifier.attach(encoder)
    sparsifier.apply(
        encoder, PruningEvent("step", 1, 0.5, 0.5), sparsifier.importance(encoder, iter([views(encoder)]))
    )
    predicted = effective_parameters(encoder)
    before = encoder.encode(TEXTS)
    remove_pruned_units(encoder)
    assert encoder.gates is None
    assert effective_parameters(encoder) == predicted
    assert sparsity_summary(encoder).parameters == predicted
    torch.testing.assert_close(encoder.encode(TEXTS), before, atol=1e-5, rtol=1e-5)


def scores_of(sparsifier: Sparsifier, encoder, batches, **options) -> list[torch.Tensor]:
    importance = sparsifier.importance(encoder, iter(batches), **options)
    return [t for kind in sorted(importance) for t in importance[kind]]


def test_scores_ignore_the_callers_random_state_and_autocast(make_encoder):
    """Dropout is drawn from (seed, event, rank) and scores are computed in float32: a run resumed
    before an event, and training under bf16 autocast, score as `sparsecse-prune` does."""
    encoder = make_encoder("avg")  # dropout 0.1: the views differ
    sparsifier = Sparsifier(num_batches=2, seed=7)
    sparsifier.attach(encoder)
    batches = [views(encoder)] * 2
    torch.manual_seed(1)
    reference = scores_of(sparsifier, encoder, batches, scoring=3, rank=1)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = scores_of(sparsifier, encoder, batches, scoring=3, rank=1)
    assert all(torch.equal(a, b) for a, b in zip(reference, again))
    other_event = scores_of(sparsifier, encoder, batches, scoring=4, rank=1)
    assert not all(torch.equal(a, b) for a, b in zip(reference, other_event)), "fresh dropout per event"


def test_random_scores_depend_on_the_event_and_not_on_the_rank(make_encoder):
    encoder = make_encoder("avg")
    sparsifier = Sparsifier(score="random", seed=7)
    sparsifier.attach(encoder)
    first = scores_of(sparsifier, encoder, [], scoring=1, rank=0)
    assert all(
        torch.equal(a, b) for a, b in zip(first, scores_of(sparsifier, encoder, [], scoring=1, rank=1))
    )
    assert not torch.equal(first[0], scores_of(sparsifier, encoder, [], scoring=2, rank=0)[0])


def test_scoring_leaves_the_global_random_state_alone(make_encoder):
    encoder = make_encoder("avg")
    sparsifier = Sparsifier(num_batches=1)
    sparsifier.attach(encoder)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    sparsifier.importance(encoder, iter([views(encoder)]))
    assert torch.equal(torch.get_rng_state(), state)


def test_unsupervised_cls_is_scored_on_the_embedding_it_is_evaluated_on(make_encoder):
    """With `mlp_only_train`, SimCSE evaluates and exports [CLS] without the MLP: score that, not the
    MLP's output that is thrown away."""
    encoder = make_encoder("cls", mlp_only_train=True)
    plain = SentenceEncoder(encoder.backbone, encoder.tokenizer, "cls_before_pooler")
    scores = []
    for model in (encoder, plain):
        sparsifier = Sparsifier(num_batches=1)
        sparsifier.attach(model)
        scores.append(scores_of(sparsifier, model, [views(model)]))
        model.detach_gates()
    assert all(torch.equal(a, b) for a, b in zip(*scores))


def test_an_unsupported_architecture_is_one_line_naming_it_and_the_supported_ones(tmp_path):
    from transformers import ElectraConfig, GPT2Config

    from sparsecse.model.loading import load_config

    for config, name in ((ElectraConfig(), "electra"), (GPT2Config(), "gpt2")):
        with pytest.raises(ConfigError, match=f"^model: 'the model' is a '{name}' model; supported: "
                                              "bert, roberta, distilbert, mpnet, modernbert$"):  # fmt: skip
            Sparsifier().check_model(config)
    # loading is where a command line meets it first, naming the model
    config = GPT2Config(n_layer=1, n_embd=8, n_head=2)
    config.save_pretrained(tmp_path)
    with pytest.raises(
        ConfigError, match=f"^name_or_path: '{tmp_path}' is a 'gpt2' model; supported: bert, "
    ):
        load_config(str(tmp_path))


def test_an_event_restarts_early_stopping_at_the_pruned_model():
    """Otherwise the dense model's STS-B dev score stops training `patience` validations later."""
    stopping = [EarlyStopping(monitor="val/stsb_spearman", mode="max", patience=2),
                EarlyStopping(monitor="val/loss", mode="min")]  # fmt: skip
    stopping[0].wait_count, stopping[0].best_score = 1, torch.tensor(85.0)
    stopping[1].wait_count, stopping[1].best_score = 1, torch.tensor(0.5)
    restart_early_stopping(SimpleNamespace(early_stopping_callbacks=stopping))
    assert [c.wait_count for c in stopping] == [0, 0]
    assert stopping[0].best_score == -torch.inf and stopping[1].best_score == torch.inf
    should_stop, _ = stopping[0]._evaluate_stopping_criteria(torch.tensor(70.0))
    assert not should_stop and stopping[0].best_score == 70.0, "the first pruned score is the new best"


def test_the_pruning_state_round_trips_and_reads_the_earlier_key():
    pruning = ScheduledPruning(schedule=[{"epoch": 1}, {"epoch": 2}], head_sparsity=0.5)
    pruning.events_done, pruning.earlier_best = 1, ["a.ckpt"]
    resumed = ScheduledPruning(schedule=[{"epoch": 1}, {"epoch": 2}], head_sparsity=0.5)
    resumed.load_state_dict(pruning.state_dict())
    assert (resumed.events_done, resumed.earlier_best) == (1, ["a.ckpt"])
    resumed.load_state_dict({"done": 2})  # the key checkpoints of earlier versions hold
    assert resumed.events_done == 2


def test_a_speed_schedule_ramps_the_time_saved_to_the_target():
    """Event k of K predicts 1 - k/K (1 - 1/X) of the dense time: halfway to 4x saves 37.5% (1.6x)."""
    events = build_schedule([{"step": 2}, {"step": 4}], "structured", target_speedup=4.0)
    assert [e.speedup for e in events] == [pytest.approx(1.6), pytest.approx(4.0)]
    assert all(e.targets == (0.0, 0.0, 0.0) for e in events)
    own = build_schedule([{"step": 2, "target_speedup": 1.5}, {"step": 4}], "structured", target_speedup=3)
    assert [e.speedup for e in own] == [1.5, 3.0]


@pytest.mark.parametrize(
    "schedule, targets, message",
    [
        ([{"epoch": 1}], {"target_speedup": 2, "head_sparsity": 0.3},
         "target_speedup: chooses the layers, heads and FFN neurons itself; leave head_sparsity=0.3 out"),
        ([{"epoch": 1}], {"target_speedup": 1.0}, "target_speedup: must be greater than 1"),
        ([{"epoch": 1, "target_speedup": 3}, {"epoch": 2, "target_speedup": 2}], {"target_speedup": 2},
         r"schedule\[1\].target_speedup: decreases \(3.0 -> 2.0\)"),
        ([{"epoch": 1, "head_sparsity": 0.2}], {"target_speedup": 2},
         r"schedule\[0\]: unknown field 'head_sparsity' for structured pruning to a speed-up"),
    ],
)  # fmt: skip
def test_bad_speed_schedules(schedule, targets, message):
    with pytest.raises(ConfigError, match=message):
        build_schedule(schedule, "structured", **targets)


def test_a_speed_target_needs_structured_pruning_and_a_model_that_can_lose_layers():
    with pytest.raises(ConfigError, match="target_speedup: removes structured units"):
        ScheduledPruning(schedule=[{"epoch": 1}], target_speedup=2.0, granularity="unstructured")
    pruning = ScheduledPruning(schedule=[{"epoch": 1}], target_speedup=2.0)
    from transformers import DistilBertConfig

    config = DistilBertConfig(n_layers=2, n_heads=4, dim=32, hidden_dim=64)
    with pytest.raises(ConfigError, match="target_speedup: dropping layers of distilbert models"):
        pruning.check(config, max_epochs=1, max_steps=-1)


def test_the_latency_model_travels_in_the_pruning_state():
    from sparsecse.pruning.latency import LatencyModel, Shape

    pruning = ScheduledPruning(schedule=[{"epoch": 1}], target_speedup=2.0)
    dense = Shape((4, 4), (64, 64))
    pruning.latency = LatencyModel(0.1, 0.05, 0.02, 0.001, dense, {"2x4h64f": 1.0}, {"cpu": "x"})
    resumed = ScheduledPruning(schedule=[{"epoch": 1}], target_speedup=2.0)
    resumed.load_state_dict(pruning.state_dict())
    assert resumed.latency == pruning.latency
    resumed.load_state_dict({"events_done": 0})  # a checkpoint from before speed targets
    assert resumed.latency is None


def test_reset_best_forgets_every_best_checkpoint_and_returns_their_files(tmp_path):
    from callbacks.checkpointing import BestCheckpoint, reset_best

    callback = BestCheckpoint(dirpath=tmp_path, monitor="val/stsb_spearman", mode="max", save_top_k=2)
    a, b = str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")
    callback.best_k_models = {a: torch.tensor(0.8), b: torch.tensor(0.7)}
    callback.best_model_path, callback.best_model_score = a, torch.tensor(0.8)
    callback.kth_value = torch.tensor(0.7)
    assert reset_best(callback) == [tmp_path / "a.ckpt", tmp_path / "b.ckpt"]
    assert callback.best_k_models == {} and callback.best_model_path == ""
    assert callback.best_model_score is None and callback.kth_value == float("-inf"), "any later is better"
    assert reset_best(callback) == []


def test_an_encoder_carries_gates_or_masks_and_detaching_gates_unhooks_them(make_encoder):
    encoder = make_encoder("avg")
    Sparsifier(granularity="unstructured").attach(encoder)
    with pytest.raises(ValueError, match="carries weight masks"):
        Sparsifier().attach(encoder)
    encoder.detach_masks()
    Sparsifier().attach(encoder)
    batch = encoder.tokenize(["a cat sat", "a dog ran far"])
    with torch.no_grad():
        dense = encoder(**batch)
        encoder.gates.heads[0].zero_()
        gated = encoder(**batch)
        encoder.detach_gates()
        assert encoder.gates is None
        torch.testing.assert_close(encoder(**batch), dense)
    assert not torch.allclose(gated, dense)


def test_only_the_events_at_the_final_targets_or_speedup_reset_the_best_checkpoints():
    ramp = ScheduledPruning([{"step": 1}, {"step": 2}], head_sparsity=0.5, ffn_sparsity=0.5)
    assert [ramp.reaches_final(event) for event in ramp.events] == [False, True]
    speed = ScheduledPruning([{"step": 1}, {"step": 2}], target_speedup=2.0)
    assert [speed.reaches_final(event) for event in speed.events] == [False, True]


def test_the_seeds_a_run_derives_are_those_its_published_runs_drew():
    from sparsecse.core.seeding import derived_seed, event_seed, step_seed

    assert step_seed(3, 10, world_size=2, rank=1) == (3 * 1_000_003 + 10) * 2 + 1
    assert event_seed(7, 0) == 7 and event_seed(7, 2) == 9
    assert derived_seed(1, 0) == derived_seed(1, 0) != derived_seed(1, 1)
    assert derived_seed(1, 0, 0) == 8693881032660462901  # sha256 of "(1, 0, 0)": drawn as before
