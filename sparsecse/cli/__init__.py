"""The command-line tools (`sparsecse-eval`, `-prune`, `-study`, `-report`, `-data`, `-push`) and
what every entry point shares. They live inside the package, so that none installs a generic
top-level module (a top-level `evaluate` would be shadowed by Hugging Face's `evaluate`, or shadow
it). `train.py` is the one top-level entry point, because the layout has users run `python train.py`
from the checkout; its console script `sparsecse-train` imports it under the name `train`, which
tests/test_entry_points.py checks beside stand-in packages of generic names."""

from __future__ import annotations

import inspect
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from sparsecse.core.console import say
from sparsecse.core.errors import ConfigError, Preempted, RunStopped
from sparsecse.core.paths import default_data_dir
from sparsecse.core.validation import unknown_key
from sparsecse.pruning.sparsifier import Sparsifier

# the checkout the package is installed from in editable mode, whose conf/ Hydra reads
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(REPO_ROOT / "conf")
TOOLS_CONFIG_DIR = str(REPO_ROOT / "conf" / "tools")
# `data_dir: ${sparsecse_data_dir:}` in every entry point's config
OmegaConf.register_new_resolver("sparsecse_data_dir", lambda: str(default_data_dir()), replace=True)


def gpus_to_ask(accelerator: str, devices) -> int:
    """GPUs a SLURM job asks for: the trainer's devices when it trains on GPUs, else none (sbatch
    refuses `--gpus-per-node` on a cluster without GPUs)."""
    return int(devices) if accelerator in ("gpu", "cuda") else 0


def halfway(max_steps: int) -> int:
    """The step halfway through a run of `max_steps` (pruning/demo.yaml's event): the demo prunes
    halfway however long the run is, so that `debug=cpu_smoke` or `trainer.max_steps=40` keep it."""
    if int(max_steps) < 2:
        way_out = "set trainer.max_steps >= 2, or pruning.schedule=[{step: N}]"
        raise ConfigError("trainer.max_steps", f"is {max_steps}, and pruning=demo prunes halfway through a "
                          f"bounded run: {way_out}")  # fmt: skip
    return int(max_steps) // 2


OmegaConf.register_new_resolver("sparsecse_halfway", halfway, replace=True)


def resolved(cfg: DictConfig) -> dict:
    """`cfg` as a plain mapping, every interpolation resolved; a ConfigError raised by one of our
    resolvers comes out as itself (OmegaConf wraps it in a message of several lines)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None


# hydra/launcher/slurm.yaml: `gpus_per_node: ${sparsecse_gpus:${trainer.accelerator},${trainer.devices}}`
OmegaConf.register_new_resolver("sparsecse_gpus", gpus_to_ask, replace=True)


def sparsifier_node() -> dict:
    """The config node of the Sparsifier's options, defined once: by its signature (names, defaults;
    hints checked by the config check). Composed as `/sparsifier@...: default` into pruning/ (pruning
    during training), callbacks/with_importance (importance pictures) and tools/prune (sparsecse-prune),
    whose config folders differ; the scoring seed follows the run's."""
    parameters = inspect.signature(Sparsifier).parameters.values()
    return {p.name: p.default for p in parameters} | {"seed": "${seed}"}


ConfigStore.instance().store(group="sparsifier", name="default", node=sparsifier_node())


class JobFailed(RuntimeError):
    """A job of a sweep that failed for a reason its one line (already on stderr) explains: Hydra
    records the job as failed and the sweep goes on to the next (Optuna marks the trial failed)."""


@contextmanager
def exit_on_config_error(program: str, sweep_job: bool = False) -> Iterator[None]:
    """A ConfigError becomes its one line on stderr and exit status 2, a RunStopped (divergence,
    unwritable checkpoint, preemption) its line and its exit status, without a traceback. In a
    `sweep_job` either becomes a JobFailed instead, so that one bad setting does not end the sweep;
    a preemption still stops it (its exit status tells SLURM to requeue)."""
    try:
        yield
    except ConfigError as err:
        say(f"{program}: error: {err}", error=True)
        if sweep_job:
            raise JobFailed(f"{program}: error: {err}") from None
        raise SystemExit(2) from None
    except RunStopped as err:
        say(f"{program}: {err}", error=True)
        if sweep_job and not isinstance(err, Preempted):
            raise JobFailed(f"{program}: {err}") from None
        raise SystemExit(err.exit_code) from None


def command_line_overrides(args: Sequence[str]) -> list[str] | None:
    """The config overrides of a command line, a sweep's first value standing for all of them; None
    when another config is named (`--config-name`) or Hydra will report a syntax error itself."""
    if any(a.startswith(("--config", "-cn", "-cp", "-cd")) for a in args):
        return None
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # Hydra's own message for a malformed override is clear
        return None
    overrides = []
    for override in parsed:
        if override.key_or_group.startswith("hydra"):
            continue
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            overrides.append(f"{override.get_key_element()}={first}")
        else:
            overrides.append(override.input_line)
    return overrides


def unknown_override(err: ConfigCompositionException) -> str | None:
    """The key of an override Hydra rejected because the config has no such key."""
    found = re.match(r"Could not override '([^']+)'\.\nTo append to your config use \+", str(err))
    return found.group(1) if found else None


def unknown_key_error(cfg: DictConfig, key: str) -> ConfigError:
    """`key` names nothing in `cfg`: the one-line error for its first missing part, with the closest
    key at that level (and the class that node instantiates)."""
    parts, node, depth = key.split("."), cfg, 0
    while depth < len(parts) - 1 and isinstance(node.get(parts[depth]), DictConfig):
        node, depth = node[parts[depth]], depth + 1
    name = ".".join(parts[: depth + 1])
    if parts[depth] in node:  # a value where the key wants a node (e.g. a group set to null)
        return ConfigError(name, f"is {node[parts[depth]]!r} here, which has no key {parts[depth + 1]!r}")
    known = [str(k) for k in node if not str(k).startswith("_")]
    message = unknown_key(parts[depth], known, node.get("_target_", ""))
    if "did you mean" not in message:
        message += f" (+{key}=... adds a key the config does not list)"
    return ConfigError(name, message)


def check_overrides(config_dir: str, config_name: str, args: Sequence[str]) -> None:
    """Hydra rejects a mistyped key on the command line with a message of several lines and exit
    status 1, before our checks run; this finds it first and raises our one-line ConfigError naming
    the key, with "did you mean". Anything else is left for Hydra and the config checks to report."""
    overrides = command_line_overrides(args)
    if not overrides:
        return
    rejected = []
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        while True:
            try:
                cfg = compose(config_name, overrides)
                break
            except ConfigCompositionException as err:
                key = unknown_override(err)
                if key is None:
                    return
                rejected.append(key)
                overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    if rejected:
        raise unknown_key_error(cfg, rejected[0])


def quote_path_values(args: Sequence[str]) -> list[str]:
    """Command-line overrides with a value Hydra's grammar rejects because it holds `=` (the run,
    sweep-job and study folders this project names `seed=1` or `lr=0.1,seed=2`) given as a quoted
    string, so that every path the project writes is accepted as written. Options, well-formed
    overrides and values already quoted are left alone."""
    parser = OverridesParser.create()
    fixed = []
    for arg in args:
        key, _, value = arg.partition("=")
        if arg.startswith("-") or "=" not in value or value[:1] in ("'", '"'):
            fixed.append(arg)
            continue
        try:
            parser.parse_overrides([arg])
            fixed.append(arg)
        except Exception:  # any grammar error: the value is given as a quoted string instead
            quoted = "'" + value.replace("'", "\\'") + "'"  # Hydra escapes only quotes in quotes
            fixed.append(f"{key}={quoted}")
    return fixed


# Third-party notes nobody running this project can act on, each silenced at its source.
NOISE_WARNINGS = (
    # SLURM jobs start through submitit's launcher (hydra/launcher=slurm), not `srun python ...`
    r"The `srun` command is available on your system but is not used",
    # validation holds STS-B dev's 1,500 pairs: the buffer torchmetrics warns of stays small
    r"Metric `SpearmanCorrcoef` will save all targets and predictions",
    # Lightning's own use of a torch API; nothing in this project calls it
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # a resumed run's checkpoint folder holds its own earlier checkpoints: runs.check_run_folder has
    # refused a folder that holds another run's
    r"Checkpoint directory .* exists and is not empty",
)
# Log lines of other packages nobody can act on, by logger: (part of the message, why it is noise).
NOISE_LOGS = {
    "lightning.pytorch.utilities.rank_zero": (
        "litlogger",  # Lightning's advertisement for its cloud logger, at every start
        "to estimate number of stepping batches",  # the scheduler's length, asked of every run
        "Skipping setting a default `ModelSummary`",  # callbacks.ParameterSummary is the default's
    ),
    # the ONNX exporter looks up torchvision's operators, which no encoder uses
    "torch.onnx._internal.exporter._registration": ("torchvision is not installed",),
    # ONNX Runtime's quantiser suggests shape pre-processing for image models; transformer encoders
    # export with their shapes
    "root": ("Please consider to run pre-processing before quantization",),
}


class DropLines(logging.Filter):
    """Drops the records whose message holds one of `parts`."""

    def __init__(self, parts: tuple[str, ...]):
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in self.parts)


def silence_third_party_noise() -> None:
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name, parts in NOISE_LOGS.items():
        logger = logging.getLogger() if name == "root" else logging.getLogger(name)
        if not any(isinstance(f, DropLines) for f in logger.filters):
            logger.addFilter(DropLines(parts))


def run_checked(program: str, config_dir: str, config_name: str, hydra_main: Callable[[], None]) -> None:
    """A Hydra entry point whose command-line typos get our one-line error and exit status 2."""
    silence_third_party_noise()
    sys.argv[1:] = quote_path_values(sys.argv[1:])
    with exit_on_config_error(program):
        check_overrides(config_dir, config_name, sys.argv[1:])
    hydra_main()


def tool_main(program: str, config_name: str, run: Callable[[DictConfig], object]) -> Callable[[], None]:
    """The console-script `main` of a tool configured by conf/tools/<config_name>.yaml."""

    @hydra.main(version_base="1.3", config_path=TOOLS_CONFIG_DIR, config_name=config_name)
    def hydra_main(cfg: DictConfig) -> None:
        with exit_on_config_error(program):
            run(cfg)

    return lambda: run_checked(program, TOOLS_CONFIG_DIR, config_name, hydra_main)
