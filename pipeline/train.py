"""Training: the per-epoch loop shared by a single process and every Ray Train worker."""
from __future__ import annotations

from typing import Iterable

import torch

from pipeline.config import ModelConfig
from pipeline.model import CVAE

Batch = tuple[torch.Tensor, torch.Tensor]


def beta_for_epoch(config: ModelConfig, epoch: int) -> float:
    """KL weight with a linear warm-up over the first `model.kl_warmup_epochs` epochs."""
    if config.kl_warmup_epochs == 0:
        return config.beta
    return config.beta * min(1.0, (epoch + 1) / config.kl_warmup_epochs)


def run_epoch(model: CVAE, optimizer: torch.optim.Optimizer, batches: Iterable[Batch], beta: float) -> dict[str, float]:
    """One pass of gradient steps; returns row-weighted means of loss, recon and KL."""
    model.train()
    totals = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    rows = 0
    for x, c in batches:
        terms = model(x, c, beta)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        for key in totals:
            totals[key] += terms[key].item() * len(x)
        rows += len(x)
    return {key: value / max(rows, 1) for key, value in totals.items()} | {"rows": rows}


@torch.no_grad()
def validate(model: CVAE, batches: Iterable[Batch], seed: int = 0) -> dict[str, float]:
    """Validation ELBO per row (higher is better), with a fixed noise seed so epochs compare fairly."""
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    recon = kl = 0.0
    rows = 0
    for x, c in batches:
        terms = model(x, c, 1.0)
        recon += terms["recon"].item() * len(x)
        kl += terms["kl"].item() * len(x)
        rows += len(x)
    torch.random.set_rng_state(state)
    rows = max(rows, 1)
    return {"val_elbo": -(recon + kl) / rows, "val_recon": recon / rows, "val_kl": kl / rows}
