"""When a run prunes and how much: a pruning event (`PruningEvent`: cumulative sparsities or a speed-up,
at an epoch or step), the one event of a sparsification after training, and the events of a training
run's schedule (`{epoch: E}` or `{step: S}`, each with its own targets, or a ramp to the final ones),
checked against the training's length before and after its data loads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from typing_extensions import TypedDict

from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import STRICT_RECORD, Fraction, NonNegativeInt, Speedup, check_value

GRANULARITIES = ("structured", "unstructured")
Granularity = Literal[GRANULARITIES]
TARGETS = {"structured": ("head_sparsity", "ffn_sparsity"), "unstructured": ("weight_sparsity",)}


def check_granularity(granularity: str) -> str:
    check_value("granularity", granularity, Granularity)
    return granularity


@dataclass(frozen=True)
class PruningEvent:
    """Reach these cumulative sparsities (or this encode speed-up over the dense model, removing
    layers, heads and FFN neurons: sparsecse.pruning.speed_target) when `at` epochs (or steps) are done."""

    unit: str  # "epoch" or "step"
    at: int
    head_sparsity: float = 0.0
    ffn_sparsity: float = 0.0
    weight_sparsity: float = 0.0
    speedup: float | None = None

    @property
    def targets(self) -> tuple[float, float, float]:
        return (self.head_sparsity, self.ffn_sparsity, self.weight_sparsity)


def event_targets(granularity: str, **final: float) -> dict[str, float]:
    """The cumulative targets an event of this granularity takes (`head_sparsity` and `ffn_sparsity`,
    or `weight_sparsity`), each a fraction in [0, 1); a target of the other granularity is refused."""
    check_granularity(granularity)
    for name, value in final.items():
        if name not in TARGETS[granularity] and value:
            other = "unstructured" if granularity == "structured" else "structured"
            raise ConfigError(name, f"applies to {other} pruning, not to granularity={granularity}")
    for name in TARGETS[granularity]:
        check_value(name, final.get(name, 0.0), Fraction)
    return {name: float(final.get(name, 0.0)) for name in TARGETS[granularity]}


def one_shot_event(granularity: str, **targets: float) -> PruningEvent:
    """The single event of a sparsification after training (no schedule): these targets, now."""
    return PruningEvent("step", 0, **event_targets(granularity, **targets))


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
    target_speedup: Speedup


def _target(value, key: str) -> float:
    check_value(key, value, Speedup if key.endswith("target_speedup") else Fraction)
    return float(value)


def _event_time(entry: Mapping, key: str) -> tuple[str, int]:
    units = [u for u in ("epoch", "step") if entry.get(u) is not None]
    if len(units) != 1:
        raise ConfigError(key, f"needs exactly one of `epoch` or `step`, got {dict(entry)}")
    check_value(f"{key}.{units[0]}", entry[units[0]], NonNegativeInt)
    return units[0], entry[units[0]]


def check_speedup_alone(given: Sequence[str]) -> None:
    """`target_speedup` chooses the layers, heads and FFN neurons itself: what it replaces must be left
    off (`given`: those set, as `key=value`)."""
    if given:
        why = f"chooses the layers, heads and FFN neurons itself; leave {', '.join(given)} out"
        raise ConfigError("target_speedup", f"{why} (sparsities 0, layers.keep null)")


def check_structured(granularity: str) -> None:
    """A speed target removes layers, heads and FFN neurons: structured units only."""
    if granularity != "structured":
        raise ConfigError("target_speedup", "removes structured units: it needs granularity=structured")


def build_schedule(
    schedule: Sequence[Mapping], granularity: str, target_speedup: float | None = None, **final: float
) -> list[PruningEvent]:
    """Events from `schedule` entries (`{epoch: E}` or `{step: S}`, optionally with their own
    targets). An entry without a target ramps linearly: event k of K reaches k/K of `final`. With
    `target_speedup` (X) instead of sparsities, the events remove layers, heads and FFN neurons to
    speed-ups: an entry's own `target_speedup`, else a ramp of the encode time, event k of K at
    1 - k/K (1 - 1/X) of the dense model's."""
    final = event_targets(granularity, **final)
    if target_speedup is not None:
        check_value("target_speedup", target_speedup, Speedup)
        check_speedup_alone([f"{name}={value}" for name, value in final.items() if value])
        final = {"target_speedup": float(target_speedup)}
    if not schedule:
        raise ConfigError("schedule", "is empty; give at least one event such as [{epoch: 1}]")
    events, previous = [], {name: 0.0 for name in final}
    for k, entry in enumerate(schedule):
        key = f"schedule[{k}]"
        unknown = set(entry) - {"epoch", "step", *final}
        if unknown:
            raise ConfigError(key, f"unknown field {sorted(unknown)[0]!r} for {granularity} pruning"
                              + (" to a speed-up" if target_speedup else ""))  # fmt: skip
        unit, at = _event_time(entry, key)
        if events and unit != events[0].unit:
            raise ConfigError(f"{key}.{unit}", "mixes epochs and steps; use one kind for every event")
        if events and at <= events[-1].at:
            raise ConfigError(f"{key}.{unit}", f"must come after the previous event ({events[-1].at})")
        targets = {}
        for name, goal in final.items():
            share = (k + 1) / len(schedule)
            ramp = 1 / (1 - share * (1 - 1 / goal)) if name == "target_speedup" else goal * share
            ramp = goal if share == 1 else ramp  # the last event reaches the final target exactly
            targets[name] = _target(entry.get(name, ramp), f"{key}.{name}")
            if targets[name] < previous[name]:
                raise ConfigError(f"{key}.{name}", f"decreases ({previous[name]} -> {targets[name]}); "
                                  "targets are cumulative")  # fmt: skip
        speedup = targets.pop("target_speedup", None)
        events.append(PruningEvent(unit, at, **targets, speedup=speedup))
        previous = targets if speedup is None else {"target_speedup": speedup}
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
