"""`sparsecse-prune`: one-shot sparsification of a trained encoder. See conf/tools/prune.yaml."""

from __future__ import annotations

import time
from functools import partial
from itertools import islice
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsecse.cli import tool_main
from sparsecse.cli.evaluate import model_key, pick_device
from sparsecse.console import say
from sparsecse.console import stage as console_stage
from sparsecse.data import ContrastiveDataModule
from sparsecse.encoder import check_pooler
from sparsecse.errors import ConfigError
from sparsecse.evaluation import check_evaluation, evaluate_encoder, format_table, write_results
from sparsecse.layers import LayerDrop, drop_layers
from sparsecse.loading import load_config
from sparsecse.model_card import base_model, plural, pruning_sentence, recovery_sentence
from sparsecse.model_io import load_encoder, save_sparse_encoder
from sparsecse.onnx_export import OnnxExport, check_onnx_available
from sparsecse.recovery import Recovery, corpus_sentences, recover, teacher_embeddings
from sparsecse.removal import remove_pruned_units
from sparsecse.sparsifier import TARGETS, Sparsifier, event_outcome, one_shot_event
from sparsecse.validation import check_value


def stage(name: str):
    return console_stage("sparsecse-prune", name)


def build_sparsifier(options: dict, model_config):
    """(Sparsifier, its one event), checked against the model before anything loads."""
    names = [name for targets in TARGETS.values() for name in targets]  # of either granularity
    targets = {k: options.pop(k) for k in names if k in options}
    try:
        sparsifier = Sparsifier(**options)
        event = one_shot_event(sparsifier.granularity, **targets)
        sparsifier.check_model(model_config)
        sparsifier.check_reachable(model_config, event)
    except ConfigError as err:
        raise err.under("pruning") from None
    return sparsifier, event


def check_layers(layer_drop: LayerDrop, model_config) -> None:
    try:
        layer_drop.check_model(model_config)
    except ConfigError as err:
        raise err.under("layers") from None


def prune(cfg: DictConfig) -> dict:
    """Score, sparsify, evaluate before and after; returns {"before", "after", "sparsity"}."""
    if OmegaConf.is_missing(cfg, "output_dir"):
        raise ConfigError("output_dir", "is required: where to write the sparsified model")
    tasks = check_evaluation(cfg.tasks, cfg.transfer_preset) if cfg.tasks else ()
    check_pooler(cfg.pooler)
    check_value("onnx", cfg.onnx, OnnxExport)
    if cfg.onnx != "none":
        check_onnx_available()
    with model_key():
        model_config = load_config(cfg.model) if not str(cfg.model).endswith(".ckpt") else None
    options = OmegaConf.to_container(cfg.pruning, resolve=True)
    try:
        recovery = Recovery(**OmegaConf.to_container(cfg.recovery, resolve=True))
    except ConfigError as err:
        raise err.under("recovery") from None
    try:
        layer_drop = LayerDrop(**OmegaConf.to_container(cfg.layers, resolve=True))
    except ConfigError as err:
        raise err.under("layers") from None
    sparsifier, event = build_sparsifier(options, model_config) if model_config else (None, None)
    if model_config is not None:
        check_layers(layer_drop, model_config)
    with model_key():
        data = ContrastiveDataModule(cfg.model, cfg.data_dir, cfg.train_file, cfg.batch_size, cfg.max_length,
                                     seed=options["seed"])  # fmt: skip
        encoder = load_encoder(cfg.model, cfg.pooler).to(pick_device(cfg.device))
    if sparsifier is None:  # a checkpoint: its config is known only now
        sparsifier, event = build_sparsifier(options, encoder.backbone.config)
        check_layers(layer_drop, encoder.backbone.config)
    evaluate = partial(
        evaluate_encoder, encoder, data.data_dir, tasks, cfg.eval_batch_size, cfg.transfer_preset
    )
    # One seed draws the scoring batches, their dropout and random scores, as sparsecse-study's
    # `seeds` and a training run's pruning.seed do: the same seed gives the same ranking in each tool.
    results = {"seed": sparsifier.seed, "before": {}}
    if cfg.evaluate_before and tasks:
        with stage("evaluation before pruning"):
            results["before"] = evaluate()
    if recovery.steps:  # the encoder before the event is the teacher
        sentences = corpus_sentences(data.train_set)
        with stage(f"teacher embeddings of {len(sentences)} sentences (cached)"):
            teacher = teacher_embeddings(encoder, sentences, recovery.max_length, recovery.cache_dir)
    if layer_drop.keep is not None:
        batches = islice(data.scoring_dataloader(sparsifier.seed), sparsifier.num_batches)
        results["layers_kept"] = layer_drop.kept(encoder, batches, sparsifier.scorer.mode,
                                                 sparsifier.scorer.uniformity_weight)  # fmt: skip
        try:
            drop_layers(encoder, results["layers_kept"])
        except ConfigError as err:
            raise err.under("layers") from None
        say(f"sparsecse-prune: kept layers {results['layers_kept']} ({layer_drop.choose})")
    sparsifier.attach(encoder)
    with stage(
        f"scoring {plural(sparsifier.num_batches, 'batch')} of {cfg.train_file}, seed {sparsifier.seed}"
    ):
        importance = sparsifier.importance(encoder, iter(data.scoring_dataloader(sparsifier.seed)))
    results["sparsity"] = sparsifier.apply(encoder, event, importance)
    say(f"sparsecse-prune: {event_outcome(event, results['sparsity'], sparsifier.ffn_alignment(encoder))}")
    remove_pruned_units(encoder)
    if recovery.steps:
        if tasks:
            with stage("evaluation of the pruned model, before recovery"):
                results["pruned"] = evaluate()
        start = time.perf_counter()
        with stage(f"recovery, {recovery.steps} steps of distillation from the encoder before pruning"):
            losses = recover(encoder, sentences, teacher, recovery)
        results["recovery"] = {"steps": recovery.steps, "seconds": round(time.perf_counter() - start, 1),
                               "first_loss": losses[0], "last_loss": losses[-1]}  # fmt: skip
        say(f"sparsecse-prune: distillation loss {losses[0]:.5f} -> {losses[-1]:.5f}")
    results["after"] = {}
    if tasks:
        with stage("evaluation of the " + ("recovered" if recovery.steps else "pruned") + " model"):
            results["after"] = evaluate()
        shown = ("before", "pruned", "after") if recovery.steps else ("before", "after")
        print(format_table({name: results[name] for name in shown if results.get(name)}))
    when = f"after training from `{base_model(str(cfg.model))}` (sparsecse-prune, one event)"
    scored_on = f"{plural(sparsifier.num_batches, 'batch')} of `{cfg.train_file}`"
    score, granularity = sparsifier.scorer.mode, sparsifier.granularity
    provenance = [pruning_sentence(when, score, granularity, results["sparsity"], scored_on)]
    if "layers_kept" in results:
        kept = f"Transformer layers kept: {results['layers_kept']} (chosen {layer_drop.choose})."
        provenance.insert(0, kept)
    if recovery.steps:
        provenance.append(recovery_sentence(recovery, cfg.train_file))
    rows = {name: results[name] for name in ("before", "after") if results[name]}
    what = "the model" + {"none": "", "fp32": " and its ONNX graph", "int8": " and its ONNX graphs"}[cfg.onnx]
    with stage(f"writing {what} to {cfg.output_dir}"):
        save_sparse_encoder(encoder, Path(cfg.output_dir), provenance, rows, onnx=cfg.onnx)
        write_results(Path(cfg.output_dir) / "results.json", results)
    return results


main = tool_main("sparsecse-prune", "prune", prune)

if __name__ == "__main__":
    main()
