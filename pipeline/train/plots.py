"""The training run's figure, logged to MLflow beside its metrics."""
from __future__ import annotations

from typing import Any, Iterator

from pipeline.pyplot import pyplot


def loss_curve(history: list[dict[str, float]]) -> Iterator[tuple[str, Any]]:
    """("loss_curve.png", figure): training loss (beta-weighted) and, with a holdout, its negative ELBO per epoch.
    A private run has no training loss (it is not reported: it would come from training rows without noise)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [int(entry["epoch"]) + 1 for entry in history]
    if all("loss" in entry for entry in history):
        ax.plot(epochs, [entry["loss"] for entry in history], marker="o", label="training loss (recon + beta x KL)")
    if all("val_elbo" in entry for entry in history):
        ax.plot(epochs, [-entry["val_elbo"] for entry in history], marker="o", label="holdout negative ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("per row")
    ax.legend()
    fig.tight_layout()
    yield "loss_curve.png", fig
    plt.close(fig)
