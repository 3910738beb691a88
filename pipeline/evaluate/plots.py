"""The evaluation report's figures: real-vs-synthetic histograms, association heatmaps, generated image grids."""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from pipeline.codec.arrow import written
from pipeline.evaluate.metrics import NUMERIC_BINS, Sample, association_matrix, condition_groups
from pipeline.pyplot import pyplot

MAX_BARS = 20
IMAGES_PER_CONDITION = 8
MAX_IMAGE_CONDITIONS = 10


def report_figures(real_sample: Sample, synthetic_sample: Sample, kinds: dict[str, str], conditions: list[str],
                   report: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(artifact path, figure) pairs for the samples the report scored; each figure is closed once the caller moves on."""
    plt = pyplot()
    for name, kind in kinds.items():
        figure = _histogram(plt, real_sample, synthetic_sample, name, kind, report["columns"].get(name))
        yield f"histograms/{name}.png", figure
        plt.close(figure)
    scalars = [name for name, kind in kinds.items() if kind != "list"]
    if len(scalars) > 1:
        figure = _heatmaps(plt, real_sample, synthetic_sample, scalars, "associations (Pearson r; Cramér's V with a category)")
        yield "associations.png", figure
        plt.close(figure)
    for name, kind in kinds.items():
        if kind != "list":
            continue
        elements = real_sample.of({name})
        figure = _heatmaps(plt, real_sample, synthetic_sample, elements, f"{name}: correlations between elements")
        yield f"correlations_{name}.png", figure
        plt.close(figure)
        side = math.isqrt(len(elements))
        if side * side == len(elements) and conditions:
            figure = _image_grid(plt, real_sample, synthetic_sample, name, elements, side, conditions[0])
            yield f"images_{name}.png", figure
            plt.close(figure)


def _histogram(plt: Any, real: Any, synthetic: Any, name: str, kind: str, score: float | None) -> Any:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if kind == "categorical":
        real_counts = np.bincount(real.columns[name], minlength=len(real.labels[name])) / max(real.rows, 1)
        synthetic_counts = np.bincount(synthetic.columns[name], minlength=len(real.labels[name])) / max(synthetic.rows, 1)
        top = np.argsort(-(real_counts + synthetic_counts), kind="stable")[:MAX_BARS]
        positions = np.arange(len(top))
        axis.bar(positions - 0.2, real_counts[top], 0.4, label="real")
        axis.bar(positions + 0.2, synthetic_counts[top], 0.4, label="synthetic")
        axis.set_xticks(positions, [real.labels[name][i][:18] for i in top], rotation=60, ha="right", fontsize=7)
        axis.set_ylabel("share of rows")
    else:
        columns = real.of({name})
        real_values = np.concatenate([real.columns[c] for c in columns])
        synthetic_values = np.concatenate([synthetic.columns[c] for c in columns])
        real_values, synthetic_values = real_values[~np.isnan(real_values)], synthetic_values[~np.isnan(synthetic_values)]
        edges = np.histogram_bin_edges(real_values, bins=5 * NUMERIC_BINS) if len(real_values) else 5 * NUMERIC_BINS
        axis.hist(real_values, bins=edges, density=True, alpha=0.55, label="real")
        axis.hist(synthetic_values, bins=edges, density=True, alpha=0.55, label="synthetic")
        axis.set_ylabel("density")
        if name in real.temporal:  # dates and times read as such on the axis, not as their day or second counts
            axis.xaxis.set_major_formatter(lambda value, _: written([value], real.temporal[name])[0])
            axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    axis.set_title(f"{name}" + (f"  (shape score {score:.3f})" if score is not None else ""))
    axis.legend()
    figure.tight_layout()
    return figure


def _heatmaps(plt: Any, real: Any, synthetic: Any, columns: list[str], title: str) -> Any:
    matrices = [association_matrix(real, real, columns), association_matrix(synthetic, real, columns)]
    size = max(4.0, min(14.0, 0.45 * len(columns) + 2))
    figure, axes = plt.subplots(1, 3, figsize=(3 * size, size))
    panels = [(matrices[0], "real", -1, 1), (matrices[1], "synthetic", -1, 1),
              (np.abs(matrices[0] - matrices[1]), "|real - synthetic|", 0, 1)]
    labeled = len(columns) <= 30
    for axis, (matrix, label, low, high) in zip(axes, panels):
        image = axis.imshow(matrix, cmap="coolwarm" if low < 0 else "viridis", vmin=low, vmax=high)
        axis.set_title(label)
        if labeled:
            axis.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
            axis.set_yticks(range(len(columns)), columns, fontsize=7)
        else:
            axis.set_xticks([])
            axis.set_yticks([])
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _image_grid(plt: Any, real: Any, synthetic: Any, name: str, elements: list[str], side: int, condition: str) -> Any:
    """One row per condition value: generated images, the first one framed by a real image of the same value."""
    groups = [group for group in condition_groups(real, synthetic, condition) if group[2].any()][:MAX_IMAGE_CONDITIONS]
    figure, axes = plt.subplots(max(len(groups), 1), IMAGES_PER_CONDITION + 1,
                                figsize=(IMAGES_PER_CONDITION + 1, max(len(groups), 1)), squeeze=False)
    for row, (label, real_mask, synthetic_mask) in enumerate(groups):
        real_images = np.stack([real.columns[e][real_mask] for e in elements], axis=1)
        synthetic_images = np.stack([synthetic.columns[e][synthetic_mask] for e in elements], axis=1)
        shown = [real_images[:1], synthetic_images[:IMAGES_PER_CONDITION]]
        for column, image in enumerate(np.concatenate(shown)):
            axes[row, column].imshow(image.reshape(side, side), cmap="gray_r")
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0, 0].set_title("real", fontsize=8)
    axes[0, 1].set_title(f"generated, by {condition}", fontsize=8, loc="left")
    figure.tight_layout()
    return figure
