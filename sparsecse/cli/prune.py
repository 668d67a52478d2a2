"""`sparsecse-prune`: one-shot sparsification of a trained encoder. See conf/tools/prune.yaml."""

from __future__ import annotations

import copy
import time
from functools import partial
from itertools import islice
from pathlib import Path

from omegaconf import DictConfig

from sparsecse.cli import resolved, tool_main
from sparsecse.cli.evaluate import model_key, pick_device
from sparsecse.cli.prune_job import TARGET_SPEEDUP, PruneJob, check_job, removes_units, under
from sparsecse.core.console import say
from sparsecse.core.console import stage as console_stage
from sparsecse.core.runs import RESULTS, check_finished_output
from sparsecse.core.writing import written_whole
from sparsecse.evaluation import evaluate_encoder, format_table, write_results
from sparsecse.export.model_card import (
    CardFacts,
    base_model,
    plural,
    pruning_sentence,
    recovery_sentence,
    speed_target_sentence,
)
from sparsecse.export.model_io import check_replaceable, load_encoder, write_card, write_export
from sparsecse.export.onnx_encoder import graph_encoder, token_pooling
from sparsecse.export.onnx_export import INT8_GRAPHS
from sparsecse.pruning.gates import sliced_summary, sparsity_summary
from sparsecse.pruning.layers import drop_layers
from sparsecse.pruning.recovery import (
    LayerTeacher,
    default_cache_dir,
    recover,
    teacher_embeddings,
)
from sparsecse.pruning.removal import remove_pruned_units
from sparsecse.pruning.sparsifier import event_outcome
from sparsecse.training.data import ContrastiveDataModule

# Keys that say where a result is written or read from, not what it computes: a result moved to
# another folder, or computed again with overwrite=true, is the same result.
UNCOMPARED_KEYS = ("output_dir", "data_dir", "overwrite", "recovery.cache_dir")
# the int8 graph's row in the results table (results.json: `int8`), by `onnx=` option
INT8_ROWS = {"int8": "after, int8 ONNX", "openvino-int8": "after, int8 OpenVINO"}


def stage(name: str):
    return console_stage("sparsecse-prune", name)


def prune_to_speed(encoder, data, job: PruneJob, cfg: DictConfig, results: dict) -> None:
    """The latency model (timed once per machine), then layers and units removed to the target."""
    target, sparsifier = job.speed_target, job.sparsifier
    corpus = data.sentences
    with stage(f"latency model of the encoder in {target.runtime} (timed once on this machine, cached)"):
        latency, _ = target.latency(encoder, corpus, default_cache_dir().parent)
    if warning := target.latency_warning(latency, default_cache_dir().parent):
        say(f"sparsecse-prune: {warning}")
    sparsifier.attach(encoder)
    batches = iter(data.scoring_dataloader(sparsifier.seed))
    with stage(f"scoring layers, heads and FFN neurons on {plural(sparsifier.num_batches, 'batch')} of "
               f"{cfg.train_file}, seed {sparsifier.seed}"):  # fmt: skip
        allocation = target.prune(encoder, batches, sparsifier, latency)
    remove_pruned_units(encoder)
    results["layers_kept"] = allocation.layers
    results["sparsity"] = sliced_summary(encoder).metrics()
    results[TARGET_SPEEDUP] = {"asked": target.speedup, "runtime": target.runtime,
                               "predicted": round(allocation.predicted_speedup, 3)}  # fmt: skip
    shape = allocation.shape()
    predicted = allocation.predicted_speedup
    say(f"sparsecse-prune: kept layers {allocation.layers} of {job.dense_layers}, with heads "
        f"{list(shape.heads)} and FFN neurons {list(shape.ffn)}; predicted {predicted:.2f}x")  # fmt: skip


def prune_units(encoder, data, job: PruneJob, cfg: DictConfig, results: dict) -> None:
    """Drop layers, then score and remove units (scoring skipped when the event removes none)."""
    if job.speed_target is not None:
        return prune_to_speed(encoder, data, job, cfg, results)
    sparsifier, event = job.sparsifier, job.event
    if job.layer_drop.keep is not None:
        batches = islice(data.scoring_dataloader(sparsifier.seed), sparsifier.num_batches)
        with sparsifier.scoring_randomness(encoder):  # the layers' dropout, as every scoring's
            kept = job.layer_drop.kept(encoder, batches, sparsifier.scorer)
        under("layers", drop_layers, encoder, kept)
        results["layers_kept"] = kept
        say(f"sparsecse-prune: kept layers {kept} of {job.dense_layers} ({job.layer_drop.choose})")
    sparsifier.attach(encoder)
    if removes_units(event):
        scoring = (
            f"scoring {plural(sparsifier.num_batches, 'batch')} of {cfg.train_file}, seed {sparsifier.seed}"
        )
        with stage(scoring):
            importance = sparsifier.importance(encoder, iter(data.scoring_dataloader(sparsifier.seed)))
        reached = sparsifier.apply(encoder, event, importance)
        results["sparsity"] = reached.metrics()
        say(f"sparsecse-prune: {event_outcome(event, reached, sparsifier.ffn_multiple(encoder))}")
    else:
        results["sparsity"] = sparsity_summary(encoder).metrics()
    remove_pruned_units(encoder)


def provenance(cfg: DictConfig, job: PruneJob, results: dict) -> list[str]:
    """The model card's account: the layers kept, the units removed, the distillation."""
    base = base_model(str(cfg.model))
    lines = []
    if TARGET_SPEEDUP in results:
        lines.append(speed_target_sentence(base, results[TARGET_SPEEDUP], results["layers_kept"],
                                           job.dense_layers, job.sparsifier.scorer.mode))  # fmt: skip
    elif "layers_kept" in results:
        lines.append(f"Transformer layers kept: {results['layers_kept']} of the {job.dense_layers} of "
                     f"`{base}` (chosen {job.layer_drop.choose}).")  # fmt: skip
    if removes_units(job.event):
        when = f"after training from `{base}` (sparsecse-prune, one event)"
        scored_on = f"{plural(job.sparsifier.num_batches, 'batch')} of `{cfg.train_file}`"
        lines.append(pruning_sentence(when, job.sparsifier.scorer.mode, job.sparsifier.granularity,
                                      results["sparsity"], scored_on))  # fmt: skip
    if job.recovery.steps:
        teacher = f"`{base}` as it was before anything was removed"
        lines.append(recovery_sentence(job.recovery, cfg.train_file, teacher))
    return lines


def score_int8_graph(encoder, directory: Path, job: PruneJob, cfg: DictConfig, data_dir: Path) -> dict | None:
    """The scores of the int8 graph just written to `directory`, in the runtime it serves in (None,
    with a line saying why, when the encoder's pooler needs more than the graph's last layer)."""
    if token_pooling(encoder.pooler, encoder.mlp_only_train) is None:
        say(f"sparsecse-prune: the int8 graph is not scored: its pooler, {encoder.pooler}, needs more than "
            "the graph's last layer")  # fmt: skip
        return None
    with stage(f"evaluation of the int8 graph ({INT8_GRAPHS[cfg.onnx]})"):
        graph = graph_encoder(directory, INT8_GRAPHS[cfg.onnx])
        return evaluate_encoder(graph, data_dir, job.tasks, cfg.eval_batch_size, cfg.transfer_preset)


def write_output(encoder, cfg: DictConfig, job: PruneJob, results: dict, data) -> None:
    """The model, its graphs, card and results.json, written whole into output_dir (or not at all)."""
    out = Path(cfg.output_dir)
    what = "the model" + ("" if cfg.onnx == "none" else " and its graphs")
    calibration = data.sentences if cfg.onnx == "openvino-int8" else ()
    with stage(f"writing {what} to {out}"), written_whole(out) as temporary:
        graphs = write_export(encoder, temporary, cfg.onnx, calibration)
        row = INT8_ROWS.get(cfg.onnx)
        if row and job.tasks:
            if (scores := score_int8_graph(encoder, temporary, job, cfg, data.data_dir)) is not None:
                results["int8"] = scores
                print(format_table({row: scores}))
        rows = {name: results[name] for name in ("before", "after") if results.get(name)}
        rows |= {row: results["int8"]} if "int8" in results else {}
        facts = CardFacts(provenance(cfg, job, results), rows, dense_layers=job.dense_layers)
        write_card(encoder, temporary, out.name, facts, graphs)
        write_results(temporary / RESULTS, results)


def prune(cfg: DictConfig) -> dict:
    """Score, sparsify, evaluate before and after; returns {"before", "after", "sparsity"}. An
    output_dir that holds this config's result is reported finished; one of another config is
    refused unless `overwrite`."""
    job = check_job(cfg)
    config = {k: v for k, v in resolved(cfg).items() if k != "hydra"}
    out = Path(cfg.output_dir)
    check_replaceable(out)
    if (finished := check_finished_output(out, config, cfg.overwrite, UNCOMPARED_KEYS)) is not None:
        print(f"{out} already finished with this config; its results are in {out / RESULTS} "
              "(overwrite=true computes it again)")  # fmt: skip
        return finished
    with model_key():
        data = ContrastiveDataModule(cfg.model, cfg.data_dir, cfg.train_file, cfg.batch_size, cfg.max_length,
                                     seed=job.options["seed"])  # fmt: skip
        encoder = load_encoder(cfg.model, cfg.pooler).to(pick_device(cfg.device))
    if job.sparsifier is None:  # a checkpoint: its config is known only now
        job.check_model(encoder.backbone.config)
    evaluate = partial(
        evaluate_encoder, encoder, data.data_dir, job.tasks, cfg.eval_batch_size, cfg.transfer_preset
    )
    # One seed draws the scoring batches, their dropout and random scores, as sparsecse-study's
    # `seeds` and a training run's pruning.seed do: the same seed gives the same ranking in each tool.
    results = {"seed": job.sparsifier.seed, "config": config, "before": {}}
    if cfg.evaluate_before and job.tasks:
        with stage("evaluation before pruning"):
            results["before"] = evaluate()
    if job.recovery.steps:  # the encoder before anything is removed is the teacher
        sentences = data.sentences
        with stage(f"teacher embeddings of {len(sentences)} sentences (cached)"):
            teacher = teacher_embeddings(encoder, sentences, job.recovery.max_length, job.recovery.cache_dir)
    # the encoder as given: the speed-up is timed against it, and layer-wise recovery distils its layers
    dense = copy.deepcopy(encoder) if job.speed_target or job.recovery.layer_weight else None
    prune_units(encoder, data, job, cfg, results)
    if job.recovery.steps:
        if job.tasks:
            with stage("evaluation of the pruned model, before recovery"):
                results["pruned"] = evaluate()
        start = time.perf_counter()
        with stage(f"recovery, {job.recovery.steps} steps of distillation from the encoder before pruning"):
            mapped = results.get("layers_kept", range(job.dense_layers))  # where each kept layer came from
            layers = LayerTeacher(dense, mapped) if job.recovery.layer_weight else None
            losses = recover(
                encoder, sentences, teacher, job.recovery, show_progress=True, layer_teacher=layers
            )
        results["recovery"] = {"steps": job.recovery.steps, "seconds": round(time.perf_counter() - start, 1),
                               "first_loss": losses[0], "last_loss": losses[-1]}  # fmt: skip
        say(f"sparsecse-prune: distillation loss {losses[0]:.5f} -> {losses[-1]:.5f}")
    if job.speed_target is not None:
        with stage(f"the speed-up reached, in {job.speed_target.runtime}"):
            measured, watched = job.speed_target.measured(dense, encoder, data.sentences)
        results[TARGET_SPEEDUP] |= {"measured": round(measured, 3), "contention": watched.share}
        say(f"sparsecse-prune: asked {job.speed_target.speedup:g}x, predicted "
            f"{results[TARGET_SPEEDUP]['predicted']:.2f}x, measured {measured:.2f}x")  # fmt: skip
        if warning := watched.warning("the speed-up"):
            say(f"sparsecse-prune: {warning}")
    results["after"] = {}
    if job.tasks:
        with stage("evaluation of the " + ("recovered" if job.recovery.steps else "pruned") + " model"):
            results["after"] = evaluate()
        shown = ("before", "pruned", "after") if job.recovery.steps else ("before", "after")
        print(format_table({name: results[name] for name in shown if results.get(name)}))
    write_output(encoder, cfg, job, results, data)
    return results


main = tool_main("sparsecse-prune", "prune", prune)

if __name__ == "__main__":
    main()
