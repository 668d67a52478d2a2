"""Scheduled sparsification during training: the Lightning glue of the method (`sparsecse.pruning.sparsifier`
and its gates and scores, `sparsecse.pruning.recovery`), and the schedule of its events."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from callbacks.checkpointing import forget_best_checkpoints, restart_early_stopping
from sparsecse.core.console import format_seconds, say
from sparsecse.core.seeding import derived_seed, event_seed, forked_rng
from sparsecse.core.validation import Fraction, PositiveFloat, Speedup, checked, passes_options_to
from sparsecse.export.model_card import plural
from sparsecse.export.onnx_encoder import runtime_encode
from sparsecse.pruning.allocation import kept_shape
from sparsecse.pruning.gates import sparsity_summary
from sparsecse.pruning.latency import LatencyModel
from sparsecse.pruning.layers import check_droppable
from sparsecse.pruning.recovery import (
    LayerTeacher,
    Recovery,
    default_cache_dir,
    recover,
    teacher_embeddings,
)
from sparsecse.pruning.schedule import (
    PruningEvent,
    ScheduleEvent,
    build_schedule,
    check_events_reached,
    check_schedule_fits,
    check_structured,
)
from sparsecse.pruning.sparsifier import Sparsifier, event_outcome
from sparsecse.pruning.speed_target import SpeedRuntime, SpeedTarget


def scoring_batches(trainer: L.Trainer, seed: int):
    """Positive pairs for scoring: this rank's shard of a fresh, seeded pass over the corpus."""
    return iter(trainer.datamodule.scoring_dataloader(seed, trainer.global_rank, trainer.world_size))


def log_metrics(trainer: L.Trainer, metrics: Mapping[str, float]) -> None:
    """Straight to the loggers: `self.log` is not allowed in every hook these run from."""
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=trainer.global_step)
    # as `self.log` would: the trainer's latest metrics, which results.json and monitors read
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})


@dataclass
class EventTeacher:
    """What recovery after an event distils from, taken before it: the corpus's (N, H) embeddings and,
    for layer-wise distillation, a copy of the encoder."""

    sentences: list[str]
    embeddings: torch.Tensor
    before: nn.Module | None = None


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
        target_speedup: Speedup | None = None,
        speed_runtime: SpeedRuntime | None = None,
        head_weight: PositiveFloat | None = None,
        **options,
    ):
        self.sparsifier = Sparsifier(**options)
        self.recovery = recovery if recovery is not None and recovery.steps else None
        targets = {
            "head_sparsity": head_sparsity,
            "ffn_sparsity": ffn_sparsity,
            "weight_sparsity": weight_sparsity,
        }
        self.events = build_schedule(schedule, self.sparsifier.granularity, target_speedup, **targets)
        self.speed = None
        if target_speedup is not None:
            check_structured(self.sparsifier.granularity)
            cache_dir = recovery.cache_dir if recovery is not None else None
            self.speed = SpeedTarget(target_speedup, speed_runtime or "PyTorch", cache_dir=cache_dir,
                                     serve=runtime_encode, head_weight=head_weight)  # fmt: skip
        self.latency: LatencyModel | None = None  # measured at the first speed-up event; saved in checkpoints
        self.events_done = 0  # events carried out; saved in checkpoints
        self.earlier_best: list[str] = []  # best checkpoints from before the last event, renamed
        self.last_importance: dict[str, list[torch.Tensor]] = {}
        self.recoveries: list[dict] = []  # one record per recovery; saved in checkpoints

    def check(self, model_config, max_epochs: int | None, max_steps: int | None) -> None:
        """Before any compute: settings against the model's config and the training length."""
        self.sparsifier.check_model(model_config)
        if self.speed is not None:
            check_droppable(model_config, "target_speedup")
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
        if event.speedup is None and not any(self.sparsifier.removals(encoder, event).values()):
            return  # a no-op: nothing scored, and the best checkpoint stands (a sparsity-0 baseline)
        teacher = self._teacher(trainer, encoder)  # the encoder before the event, for recovery
        self._prune(trainer, encoder, event, index)
        if teacher is not None:
            self._recover(trainer, encoder, teacher, index)
        restart_early_stopping(trainer)
        if self.reaches_final(event):
            self.earlier_best = forget_best_checkpoints(trainer)

    def reaches_final(self, event: PruningEvent) -> bool:
        """Whether `event` reaches the schedule's final sparsities (or speed-up)."""
        last = self.events[-1]
        return (event.targets, event.speedup) == (last.targets, last.speedup)

    def _teacher(self, trainer: L.Trainer, encoder) -> EventTeacher | None:
        """What recovery distils from, taken before the event: the corpus's embeddings, and a copy of
        the encoder where layer-wise distillation runs it for its hidden states."""
        if self.recovery is None:
            return None
        sentences = trainer.datamodule.sentences
        embeddings = teacher_embeddings(encoder, sentences, self.recovery.max_length, self.recovery.cache_dir)
        before = copy.deepcopy(encoder) if self.recovery.layer_weight else None
        return EventTeacher(sentences, embeddings, before)

    def _prune(self, trainer: L.Trainer, encoder, event: PruningEvent, index: int) -> None:
        """Score and remove what the event asks, log it, and say so on rank 0."""
        when = f"pruning at {event.unit} {event.at}"
        if trainer.is_global_zero:
            say(f"{when}: scoring {plural(self.sparsifier.num_batches, 'batch')} ...")
        started = time.perf_counter()
        batches = scoring_batches(trainer, event_seed(self.sparsifier.seed, index))
        if event.speedup is not None:
            summary, outcome = self._prune_to_speed(trainer, encoder, event, batches, index)
        else:
            importance = self.sparsifier.importance(encoder, batches, scoring=index, rank=trainer.global_rank)
            self.last_importance = importance  # for inspection and tests
            reached = self.sparsifier.apply(encoder, event, importance)
            summary = reached.metrics()
            outcome = event_outcome(event, reached, self.sparsifier.ffn_multiple(encoder))
        log_metrics(trainer, summary)
        if trainer.is_global_zero:
            say(f"{when}: {outcome} ({format_seconds(time.perf_counter() - started)})")

    def _prune_to_speed(self, trainer: L.Trainer, encoder, event: PruningEvent, batches, index: int):
        """The layers, heads and FFN neurons the event's speed-up removes, gated off (METHOD.md section
        8); the latency model is measured at the first such event. (summary, what was done)."""
        if self.latency is None:
            self.latency = self._measure_latency(trainer, encoder)
        allocation = self.speed.prune(encoder, batches, self.sparsifier, self.latency, event.speedup, index,
                                      trainer.global_rank)  # fmt: skip
        shape = allocation.shape()
        summary = {
            **sparsity_summary(encoder).metrics(),
            "prune/predicted_speedup": allocation.predicted_speedup,
        }
        outcome = (f"kept layers {allocation.layers} of {len(encoder.gates.layers)}, heads "
                   f"{list(shape.heads)}, FFN neurons {list(shape.ffn)}: {event.speedup:.2f}x asked, "
                   f"{allocation.predicted_speedup:.2f}x predicted in {self.speed.runtime}")  # fmt: skip
        return summary, outcome

    def _measure_latency(self, trainer: L.Trainer, encoder) -> LatencyModel:
        """Timed by rank 0 (once per machine and runtime: cached) and sent to every rank, so that every
        rank allocates alike."""
        latency = None
        if trainer.is_global_zero:
            say(f"latency model of the encoder in {self.speed.runtime} (timed once per machine, cached) ...")
            corpus = trainer.datamodule.sentences
            latency, _ = self.speed.latency(encoder, corpus, default_cache_dir().parent)
            if warning := self.speed.latency_warning(latency, default_cache_dir().parent):
                say(warning)
        if trainer.world_size > 1:
            sent = [latency.to_json() if latency is not None else None]
            torch.distributed.broadcast_object_list(sent, src=0)
            latency = LatencyModel.from_json(sent[0])
        return latency

    def _recover(self, trainer: L.Trainer, encoder, teacher: EventTeacher, index: int):
        """Distil the pruned encoder towards `teacher` in place; every rank ends with rank 0's weights."""
        start = time.perf_counter()
        masks = encoder.masks
        layers = None
        if teacher.before is not None:
            kept = encoder.gates.kept_layers() if encoder.gates is not None else None
            layers = LayerTeacher(teacher.before, kept, kept)
        # Dropout draws from (seed, event), not from the process's random state, as scoring does: a
        # run resumed before the event recovers exactly as the uninterrupted one.
        shown = trainer.is_global_zero and trainer.progress_bar_callback is not None
        with forked_rng(encoder.device):
            torch.manual_seed(derived_seed(self.recovery.seed, index))
            losses = recover(encoder, teacher.sentences, teacher.embeddings, self.recovery,
                             seed=event_seed(self.recovery.seed, index),
                             after_step=masks.apply_masks if masks is not None else None,
                             show_progress=shown, layer_teacher=layers)  # fmt: skip
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

    def speed_record(self, encoder) -> dict:
        """For results.json, where the events pruned to a speed-up: what was asked and what the latency
        model predicts for the encoder as it ends, the layers kept and the base model's count."""
        if self.speed is None or self.latency is None or encoder.gates is None:
            return {}
        gates = encoder.gates
        kept = gates.kept_layers()
        shape = kept_shape(kept, gates.heads, gates.neurons)
        speed = {"asked": self.events[-1].speedup, "runtime": self.speed.runtime,
                 "predicted": round(self.latency.speedup(shape), 3)}  # fmt: skip
        return {"target_speedup": speed, "layers_kept": kept, "dense_layers": gates.num_layers}

    def state_dict(self) -> dict:
        state = {"events_done": self.events_done, "earlier_best": self.earlier_best}
        latency = self.latency.to_json() if self.latency is not None else None
        return {**state, "recoveries": self.recoveries, "latency": latency}

    def load_state_dict(self, state_dict: dict) -> None:
        # "done": the same count, as checkpoints of earlier versions name it
        self.events_done = state_dict["events_done"] if "events_done" in state_dict else state_dict["done"]
        self.earlier_best = list(state_dict.get("earlier_best", []))
        self.recoveries = list(state_dict.get("recoveries", []))
        latency = state_dict.get("latency")
        self.latency = LatencyModel.from_json(latency) if latency else None
