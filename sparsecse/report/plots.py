"""Figures of importance scores and sweep results, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from torch import Tensor  # noqa: E402


def head_heatmap(head_scores: Sequence[Tensor], path: str | Path) -> Path:
    """Layers x heads image of head importance; layers with fewer heads are padded with blanks."""
    width = max(len(s) for s in head_scores)
    grid = torch.full((len(head_scores), width), float("nan"))
    for layer, scores in enumerate(head_scores):
        grid[layer, : len(scores)] = scores.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(1 + 0.5 * width, 1 + 0.4 * len(head_scores)))
    image = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis")
    ax.set(xlabel="head", ylabel="layer", title="head importance")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def neuron_histogram(neuron_scores: Sequence[Tensor], path: str | Path, bins: int = 50) -> Path:
    values = torch.cat([s.detach().float().flatten().cpu() for s in neuron_scores])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(values.numpy(), bins=bins)
    ax.set(xlabel="importance", ylabel="FFN neurons", title="neuron importance")
    return _save(fig, path)


Points = Mapping[str, Sequence[tuple[float, float]]]  # group label -> (x, y) of each run


def align_uniform(points: Points, path: str | Path) -> Path:
    """Alignment (y) against uniformity (x), Wang & Isola (2020): a dot per run, a star per group mean."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (label, group) in enumerate(points.items()):
        uniformity, alignment = zip(*group)
        color = f"C{i % 10}"
        ax.scatter(uniformity, alignment, color=color, alpha=0.5, s=20)
        ax.scatter(statistics.fmean(uniformity), statistics.fmean(alignment), color=color, marker="*", s=200,
                   edgecolors="black", label=label)  # fmt: skip
    ax.set(xlabel="uniformity (lower is better)", ylabel="alignment (lower is better)",
           title="alignment vs uniformity: lower left is better")  # fmt: skip
    ax.legend(fontsize="small")
    return _save(fig, path)


def align_uniform_path(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """One run's validations as a path through the alignment-uniformity plane (SimCSE, Fig. 2)."""
    uniformity = [h["val/uniform"] for h in history]
    alignment = [h["val/align"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(uniformity, alignment, "-o", color="C0", markersize=4)
    for entry, x, y in zip(history, uniformity, alignment):
        ax.annotate(f"{entry['step']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set(xlabel="uniformity (lower is better)", ylabel="alignment (lower is better)",
           title="STS-B dev over training (labels: step)")  # fmt: skip
    return _save(fig, path)


def score_vs_sparsity(points: Points, path: str | Path, ylabel: str, xlabel: str = "sparsity") -> Path:
    """A dot per run and each group's mean score with sample-std error bars, against sparsity."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (label, group) in enumerate(points.items()):
        xs, ys = zip(*group)
        color = f"C{i % 10}"
        ax.scatter(xs, ys, color=color, alpha=0.4, s=15)
        std = statistics.stdev(ys) if len(ys) > 1 else None
        ax.errorbar(statistics.fmean(xs), statistics.fmean(ys), yerr=std, fmt="o", capsize=4, color=color,
                    label=label)  # fmt: skip
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel} against sparsity (mean ± std over seeds)")
    ax.legend(fontsize="small")
    return _save(fig, path)


Lines = Mapping[str, Mapping[str, Mapping[float, Sequence[float]]]]  # panel -> line -> x -> values over seeds


def lines_vs_sparsity(
    panels: Lines, path: str | Path, ylabel: str, reference: Sequence[float] = (), xlabel: str = "sparsity p"
) -> Path:
    """One panel per granularity, one line per score mode: the mean over seeds with a ± sample-std band,
    and the dense model as a dashed horizontal line (with its band, if it has several values)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False, sharey=True)
    for ax, (panel, lines) in zip(axes[0], panels.items()):
        if reference:
            mean, std = _mean_std(reference)
            ax.axhline(mean, color="black", linestyle="--", label="dense")
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.1)
        for i, (label, by_x) in enumerate(lines.items()):
            xs = sorted(by_x)
            means, stds = zip(*(_mean_std(by_x[x]) for x in xs))
            color = f"C{i % 10}"
            ax.plot(xs, means, "-o", color=color, markersize=3, label=label)
            ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=color, alpha=0.2)  # fmt: skip
        ax.set_xscale("symlog", linthresh=0.01)  # the fine grid at the low end stays readable
        ax.set(xlabel=xlabel, ylabel=ylabel, title=panel)
        ax.legend(fontsize="small")
    fig.suptitle(f"{ylabel} against sparsity (mean ± std over seeds)")
    return _save(fig, path)


def quality_against_speed(
    lines: Mapping[str, Sequence[tuple[float, float, float, float]]],
    frontier: Sequence[tuple[float, float]],
    path: str | Path,
) -> Path:
    """One line per recipe through its (speed-up, its std, STS avg, its std) points, with error bars;
    the Pareto frontier's (speed-up, STS avg) points joined by a dashed line; the legend beside the
    axes, where it hides no point."""
    return _save(quality_against_speed_figure(lines, frontier), path)


def quality_against_speed_figure(
    lines: Mapping[str, Sequence[tuple[float, float, float, float]]], frontier: Sequence[tuple[float, float]]
):
    fig, ax = plt.subplots(figsize=(11, 5.5))
    styles = zip(line_colors(len(lines)), itertools.cycle(MARKERS))
    for (color, marker), (label, points) in zip(styles, lines.items()):
        x, x_err, y, y_err = zip(*points)
        ax.errorbar(x, y, xerr=x_err, yerr=y_err, fmt=f"-{marker}", color=color, markersize=5, capsize=2,
                    label=label)  # fmt: skip
    ax.plot(*zip(*frontier), "--", color="black", alpha=0.5, label="Pareto frontier")
    speedups = [point[0] for points in lines.values() for point in points]
    if max(speedups) / min(speedups) > LOG_SPAN:  # a static-embedding model at 100x+ squeezes the rest
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.set(xlabel="encode speed-up over dense PyTorch (STS-B dev, batch 64)", ylabel="STS avg (7 tasks)",
           title="quality against speed (mean ± std over seeds)")  # fmt: skip
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig


LOG_SPAN = 20  # speed-ups spanning more than this factor are drawn on a log axis


# Beyond tab10's ten colours, six more that are far from those and from each other (no light and dark
# pair of one hue, as tab20 has): blue, navy, magenta, green, maroon, olive.
EXTRA_COLORS = ("#0000ff", "#000075", "#ff00ff", "#00ff00", "#800000", "#808000")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")  # a second cue beside the colour


def line_colors(count: int) -> list[tuple[float, ...]]:
    """`count` distinct colours, tab10's first (matplotlib's cycle repeats after 10 lines)."""
    palette = [*(plt.get_cmap("tab10")(i) for i in range(10)), *map(to_rgba, EXTRA_COLORS)]
    if count > len(palette):
        raise ValueError(f"{count} lines: at most {len(palette)} distinct colours")
    return palette[:count]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # a legend beside the axes stays in the picture
    plt.close(fig)
    return path
