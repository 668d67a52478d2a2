"""Scheduled sparsification during training: the Lightning glue of the method (`sparsecse.sparsifier`
and its gates and scores, `sparsecse.recovery`), and the schedule of its events."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import TypedDict

from sparsecse.console import format_seconds, say
from sparsecse.errors import ConfigError
from sparsecse.importance import derived_seed, forked_rng
from sparsecse.model_card import plural
from sparsecse.recovery import Recovery, corpus_sentences, recover, teacher_embeddings
from sparsecse.sparsifier import PruningEvent, Sparsifier, event_outcome, event_targets
from sparsecse.validation import (
    STRICT_RECORD,
    Fraction,
    NonNegativeInt,
    check_value,
    checked,
    passes_options_to,
)


class EventTime(TypedDict, total=False):
    """When: `{epoch: E}` or `{step: S}`."""

    __pydantic_config__ = STRICT_RECORD
    epoch: NonNegativeInt | None
    step: NonNegativeInt | None


class ScheduleEvent(EventTime, total=False):
    """A `schedule` entry: when, and optionally its own cumulative targets."""

    __pydantic_config__ = STRICT_RECORD
    head_sparsity: Fraction
    ffn_sparsity: Fraction
    weight_sparsity: Fraction


def _fraction(value, key: str) -> float:
    check_value(key, value, Fraction)
    return float(value)


def _event_time(entry: Mapping, key: str) -> tuple[str, int]:
    units = [u for u in ("epoch", "step") if entry.get(u) is not None]
    if len(units) != 1:
        raise ConfigError(key, f"needs exactly one of `epoch` or `step`, got {dict(entry)}")
    check_value(f"{key}.{units[0]}", entry[units[0]], NonNegativeInt)
    return units[0], entry[units[0]]


def build_schedule(schedule: Sequence[Mapping], granularity: str, **final: float) -> list[PruningEvent]:
    """Events from `schedule` entries (`{epoch: E}` or `{step: S}`, optionally with their own
    targets). An entry without a target ramps linearly: event k of K reaches k/K of `final`."""
    final = event_targets(granularity, **final)
    if not schedule:
        raise ConfigError("schedule", "is empty; give at least one event such as [{epoch: 1}]")
    events, previous = [], {name: 0.0 for name in final}
    for k, entry in enumerate(schedule):
        key = f"schedule[{k}]"
        unknown = set(entry) - {"epoch", "step", *final}
        if unknown:
            raise ConfigError(key, f"unknown field {sorted(unknown)[0]!r} for {granularity} pruning")
        unit, at = _event_time(entry, key)
        if events and unit != events[0].unit:
            raise ConfigError(f"{key}.{unit}", "mixes epochs and steps; use one kind for every event")
        if events and at <= events[-1].at:
            raise ConfigError(f"{key}.{unit}", f"must come after the previous event ({events[-1].at})")
        targets = {}
        for name, goal in final.items():
            value = entry.get(name, goal * (k + 1) / len(schedule))
            targets[name] = _fraction(value, f"{key}.{name}")
            if targets[name] < previous[name]:
                raise ConfigError(f"{key}.{name}", f"decreases ({previous[name]} -> {targets[name]}); "
                                  "targets are cumulative")  # fmt: skip
        events.append(PruningEvent(unit, at, **targets))
        previous = targets
    return events


def check_schedule_fits(
    events: Sequence[PruningEvent], max_epochs: int | None, max_steps: int | None
) -> None:
    """An event at the last epoch (or step) runs when training ends; one after it never would."""
    for k, event in enumerate(events):
        limit = max_epochs if event.unit == "epoch" else max_steps
        if limit is not None and limit >= 0 and event.at > limit:
            raise ConfigError(f"schedule[{k}].{event.unit}", f"{event.at} is after the last {event.unit} "
                              f"of training ({limit})")  # fmt: skip


def check_events_reached(events: Sequence[PruningEvent], total_steps: float, steps_per_epoch: int) -> None:
    """Once the data is known: an event after the last step (or epoch) that training reaches would
    never run, and the run would report a dense model under a pruning setting. `total_steps` is
    Lightning's estimate (max_steps, or max_epochs of the loaded data; inf when unbounded)."""
    reached = {"step": total_steps, "epoch": total_steps // steps_per_epoch}
    for k, event in enumerate(events):
        if event.at > reached[event.unit]:
            raise ConfigError(f"schedule[{k}].{event.unit}", f"{event.at} is after the last {event.unit} "
                              f"training reaches ({reached[event.unit]:g}: {total_steps:g} steps of "
                              f"{steps_per_epoch} an epoch)")  # fmt: skip


BEFORE_FINAL_PRUNING = "before-final-pruning"  # suffix of the best checkpoints an event made obsolete


def scoring_batches(trainer: L.Trainer, seed: int):
    """Positive pairs for scoring: this rank's shard of a fresh, seeded pass over the corpus."""
    return iter(trainer.datamodule.scoring_dataloader(seed, trainer.global_rank, trainer.world_size))


def log_metrics(trainer: L.Trainer, metrics: Mapping[str, float]) -> None:
    """Straight to the loggers: `self.log` is not allowed in every hook these run from."""
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=trainer.global_step)
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})


def forget_best_checkpoints(trainer: L.Trainer) -> list[str]:
    """After the last event, only checkpoints at the final sparsity may be "best": a denser one
    scores higher on STS-B dev and would otherwise undo the pruning when it is reloaded. The earlier
    best files are renamed `<name>-before-final-pruning.ckpt`, so that the final best takes the name
    users reach for (`best.ckpt`); returns their new paths."""
    renamed = []
    # ModelCheckpoint has no public reset: these are the attributes its state_dict saves and restores
    for callback in trainer.checkpoint_callbacks:
        for path in map(Path, callback.best_k_models):
            earlier = path.with_name(f"{path.stem}-{BEFORE_FINAL_PRUNING}{path.suffix}")
            if trainer.is_global_zero and path.is_file():
                path.replace(earlier)
            renamed.append(str(earlier))
        callback.best_k_models = {}
        callback.best_model_path = callback.kth_best_model_path = ""
        callback.best_model_score = None
        callback.kth_value = torch.tensor(float("inf") if callback.mode == "min" else float("-inf"))
    trainer.strategy.barrier("forget_best_checkpoints")  # no rank saves before the renames are done
    return renamed


def restart_early_stopping(trainer: L.Trainer) -> None:
    """After an event, early stopping compares the pruned model with pruned models only, as the best
    checkpoint does: a denser model's score would otherwise end training a few validations later."""
    for callback in trainer.early_stopping_callbacks:  # no public reset either: its state_dict's attributes
        callback.wait_count = 0
        callback.best_score = torch.tensor(float("inf") if callback.mode == "min" else float("-inf"))


class ScheduledPruning(L.Callback):
    """Sparsify the encoder at scheduled epochs or steps (METHOD.md section 5): heads and FFN neurons
    (`granularity: structured`) or single weights (`unstructured`).

    `schedule` holds cumulative events, `{epoch: E}` or `{step: S}`, each optionally with its own
    targets; without them, event k of K reaches k/K of `head_sparsity`/`ffn_sparsity` (or
    `weight_sparsity` for `granularity: unstructured`). Scores are computed on the current model
    just before each event; between events the gates stay fixed. An event at the last epoch (or
    step) runs when training ends.

    `recovery` (METHOD.md section 7): after each event, the encoder is trained for
    `recovery.steps` steps to give the embeddings the encoder before the event gave on the training
    corpus, before training goes on; the teacher's embeddings are cached on disk by digest.
    """

    @checked
    @passes_options_to(Sparsifier)  # granularity, score, lambda, batches, ... (Sparsifier's arguments)
    def __init__(
        self,
        schedule: Sequence[ScheduleEvent],
        head_sparsity: Fraction = 0.0,
        ffn_sparsity: Fraction = 0.0,
        weight_sparsity: Fraction = 0.0,
        recovery: Recovery | None = None,
        **options,
    ):
        self.sparsifier = Sparsifier(**options)
        self.recovery = recovery if recovery is not None and recovery.steps else None
        targets = {
            "head_sparsity": head_sparsity,
            "ffn_sparsity": ffn_sparsity,
            "weight_sparsity": weight_sparsity,
        }
        self.events = build_schedule(schedule, self.sparsifier.granularity, **targets)
        self.events_done = 0  # events carried out; saved in checkpoints
        self.earlier_best: list[str] = []  # best checkpoints from before the last event, renamed
        self.last_importance: dict[str, list[torch.Tensor]] = {}
        self.recoveries: list[dict] = []  # one record per recovery; saved in checkpoints

    def check(self, model_config, max_epochs: int | None, max_steps: int | None) -> None:
        """Before any compute: settings against the model's config and the training length."""
        self.sparsifier.check_model(model_config)
        check_schedule_fits(self.events, max_epochs, max_steps)
        self.sparsifier.check_reachable(model_config, self.events[-1])

    def attach(self, encoder) -> None:
        """All-ones gates (or masks) on the encoder, where a checkpoint's or rank 0's gate and mask
        buffers can be loaded (idempotent)."""
        self.sparsifier.attach(encoder)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.attach(pl_module.encoder)  # before a checkpoint is restored

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the first step: how long training runs is known only once the data is loaded.
        if trainer.fast_dev_run:  # a smoke test of a few batches, whose numbers nobody reports
            return
        steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        check_events_reached(self.events, trainer.estimated_stepping_batches, max(steps_per_epoch, 1))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run_due(trainer, pl_module, "epoch", trainer.current_epoch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._run_due(trainer, pl_module, "step", trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if pl_module.encoder.masks is not None:
            pl_module.encoder.masks.apply_masks()  # undo what the optimizer step put back

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        self._run_due(trainer, pl_module, self.events[0].unit, now[self.events[0].unit])
        if self.events_done < len(self.events):
            rank_zero_warn(f"training ended before pruning event {self.events[self.events_done]} could run")

    def _run_due(self, trainer, pl_module, unit: str, now: int) -> None:
        while self.events_done < len(self.events) and self.events[self.events_done].unit == unit:
            if self.events[self.events_done].at > now:
                return
            self._run(trainer, pl_module, self.events[self.events_done])

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule, event: PruningEvent) -> None:
        encoder, index = pl_module.encoder, self.events_done
        self.events_done += 1
        if not any(self.sparsifier.removals(encoder, event).values()):
            return  # a no-op: nothing scored, and the best checkpoint stands (a sparsity-0 baseline)
        if self.recovery is not None:  # the encoder before the event is the teacher
            sentences = corpus_sentences(trainer.datamodule.train_set)
            teacher = teacher_embeddings(
                encoder, sentences, self.recovery.max_length, self.recovery.cache_dir
            )
        when = f"pruning at {event.unit} {event.at}"
        if trainer.is_global_zero:
            say(f"{when}: scoring {plural(self.sparsifier.num_batches, 'batch')} ...")
        started = time.perf_counter()
        batches = scoring_batches(trainer, self.sparsifier.seed + index)
        importance = self.sparsifier.importance(encoder, batches, scoring=index, rank=trainer.global_rank)
        self.last_importance = importance  # for inspection and tests
        summary = self.sparsifier.apply(encoder, event, importance)
        log_metrics(trainer, summary)
        if trainer.is_global_zero:
            outcome = event_outcome(event, summary, self.sparsifier.ffn_alignment(encoder))
            say(f"{when}: {outcome} ({format_seconds(time.perf_counter() - started)})")
        if self.recovery is not None:
            self._recover(trainer, encoder, sentences, teacher, index)
        restart_early_stopping(trainer)
        if event.targets == self.events[-1].targets:  # the final sparsity is reached
            self.earlier_best = forget_best_checkpoints(trainer)

    def _recover(self, trainer: L.Trainer, encoder, sentences: list[str], teacher: torch.Tensor, index: int):
        """Distil the pruned encoder towards `teacher` in place; every rank ends with rank 0's weights."""
        start = time.perf_counter()
        masks = encoder.masks
        # Dropout draws from (seed, event), not from the process's random state, as scoring does: a
        # run resumed before the event recovers exactly as the uninterrupted one.
        shown = trainer.is_global_zero and trainer.progress_bar_callback is not None
        with forked_rng(encoder.device):
            torch.manual_seed(derived_seed(self.recovery.seed, index))
            losses = recover(encoder, sentences, teacher, self.recovery, seed=self.recovery.seed + index,
                             after_step=masks.apply_masks if masks is not None else None,
                             show_progress=shown)  # fmt: skip
        if trainer.world_size > 1:  # dropout draws differ between ranks; DDP needs equal replicas
            for tensor in encoder.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
        record = {"event": index, "steps": self.recovery.steps, "first_loss": losses[0],
                  "last_loss": losses[-1], "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        self.recoveries.append(record)
        log_metrics(trainer, {f"recovery/{k}": record[k] for k in ("first_loss", "last_loss", "seconds")})
        if trainer.is_global_zero:
            say(f"recovery after event {index + 1}: {record['steps']} steps of distillation in "
                  f"{record['seconds']:.0f} s, loss {losses[0]:.5f} -> {losses[-1]:.5f}")  # fmt: skip

    def state_dict(self) -> dict:
        state = {"events_done": self.events_done, "earlier_best": self.earlier_best}
        return {**state, "recoveries": self.recoveries}

    def load_state_dict(self, state_dict: dict) -> None:
        # "done": the same count, as checkpoints of earlier versions name it
        self.events_done = state_dict["events_done"] if "events_done" in state_dict else state_dict["done"]
        self.earlier_best = list(state_dict.get("earlier_best", []))
        self.recoveries = list(state_dict.get("recoveries", []))
