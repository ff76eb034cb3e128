"""PNG plots of the benchmark reports (matplotlib, Agg backend, imported only when a plot is drawn)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stacked_latency_bar(path: Path, bars: Mapping[str, Mapping[str, float]], title: str) -> Path:
    """One stacked bar per run: the p50 latency of each stage of a window.

    Args:
        path: Output PNG.
        bars: Bar label -> stage -> p50 ms (stages stacked in the given order).
        title: Plot title.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    stages: list[str] = []
    for per in bars.values():
        stages += [s for s in per if s not in stages]
    labels = list(bars)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(labels) + 3.5), 4.5))
    bottoms = [0.0] * len(labels)
    cmap = plt.get_cmap("tab10")
    for i, stage in enumerate(stages):
        heights = [float(bars[label].get(stage, 0.0)) for label in labels]
        ax.bar(labels, heights, bottom=bottoms, label=stage, color=cmap(i % 10), width=0.6)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_ylabel("p50 latency per window (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _save(fig, plt, path)


def grouped_bars(path: Path, groups: Mapping[str, Mapping[str, float]], title: str, ylabel: str, log: bool = True) -> Path:
    """Grouped bars: one group per stage, one bar per variant.

    Args:
        path: Output PNG.
        groups: Group (stage) -> variant -> value.
        title: Plot title.
        ylabel: Y axis label.
        log: Logarithmic y axis (stages differ by orders of magnitude).

    Returns:
        ``path``.
    """
    plt = _pyplot()
    variants: list[str] = []
    for per in groups.values():
        variants += [v for v in per if v not in variants]
    names = list(groups)
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 4.5))
    for j, variant in enumerate(variants):
        xs = [i + (j - (len(variants) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [float(groups[n].get(variant, 0.0)) for n in names], width=width, label=variant)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def curves(path: Path, panels: Sequence[Mapping[str, Any]], title: str) -> Path:
    """Scaling curves, one panel each.

    Args:
        path: Output PNG.
        panels: Each ``{"title", "xlabel", "ylabel", "series": {label: (xs, ys)}}``.
        title: Figure title.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, (xs, ys) in panel["series"].items():
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.grid(alpha=0.3)
        if len(panel["series"]) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path
