"""DP-SGD on a Ray Train worker: Poisson-sampled steps over the worker's shard, each row's gradient clipped, Gaussian
noise added once per global step (Opacus's DP optimizer), accounted by pipeline/privacy.py.

Clipping without per-row gradients ("ghost clipping", Li et al. 2022; Bu et al. 2023): the CVAE is Linear layers
on (rows, features) inputs plus `log_sigma`, and a Linear layer's gradient for row i is the outer product of the
gradient at its output b_i and its input a_i, whose norm is |b_i| |a_i| (its bias's: |b_i|). So one backward
to the Linear outputs gives every row's gradient norm; a second backward of the loss weighted by each row's clip
factor min(1, C / norm_i) gives the clipped sum itself. Two backwards instead of a (rows x parameters) tensor of
per-row gradients; `tests/test_privacy.py` checks the sum against per-row gradients computed with torch.func.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pipeline.model.cvae import CVAE
from pipeline.privacy import History, DpSgdSettings, guarantee


class RowNorms:
    """Keeps each Linear layer's input and output, and each row's copy of log_sigma, during one forward."""

    def __init__(self, model: CVAE):
        self.model = model
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False  # a Linear output that ReLU overwrote could not be differentiated against
        self.layers = [module for module in model.modules() if isinstance(module, nn.Linear)]
        covered = {id(p) for layer in self.layers for p in layer.parameters()} | {id(model.log_sigma)}
        uncovered = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
        if uncovered:
            raise ValueError(f"DP-SGD clips Linear layers and log_sigma only; the model also trains {uncovered}")
        self.handles = [layer.register_forward_hook(self._keep) for layer in self.layers]
        self.seen: list[nn.Linear] = []
        self.inputs: list[torch.Tensor] = []   # each Linear layer's input a, (rows, in)
        self.outputs: list[torch.Tensor] = []  # its output, whose gradient is b, (rows, out)
        self.row_parameters: list[torch.Tensor] = []  # each row's copy of log_sigma: its gradient is the row's own
        model.on_row_log_sigma = self.row_parameters.append

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if module in self.seen or inputs[0].dim() != 2:  # the norm below holds for one (rows, features) use each
            raise ValueError("DP-SGD's clipping needs each Linear layer used once per forward on (rows, features)")
        self.seen.append(module)
        self.inputs.append(inputs[0].detach())
        self.outputs.append(output)

    def squared(self, losses: torch.Tensor) -> torch.Tensor:
        """(rows,) squared norm of each row's gradient of its own loss, over every trainable parameter."""
        grads = torch.autograd.grad(losses.sum(), [*self.outputs, *self.row_parameters], retain_graph=True,
                                    allow_unused=True)  # a layer the loss does not use has no gradient
        total = losses.new_zeros(len(losses))
        for layer, a, b in zip(self.seen, self.inputs, grads[: len(self.outputs)]):
            if b is not None:  # weight: |b| |a|; bias: |b|
                total += b.pow(2).sum(1) * (a.pow(2).sum(1) + (1.0 if layer.bias is not None else 0.0))
        for g in grads[len(self.outputs):]:
            if g is not None:
                total += g.pow(2).sum(1)
        return total

    def clear(self) -> None:
        self.seen.clear()
        self.inputs.clear()
        self.outputs.clear()
        self.row_parameters.clear()


def clipped_gradient_sum(model: CVAE, norms: RowNorms, x: torch.Tensor, c: torch.Tensor, beta: float,
                         max_norm: float) -> None:
    """p.grad = sum over rows of each row's gradient clipped to `max_norm` (no noise, no averaging yet)."""
    norms.clear()
    recon, kl = model.row_terms(x, c)
    losses = recon + beta * kl
    factor = (max_norm / (norms.squared(losses).sqrt() + 1e-6)).clamp(max=1.0)
    norms.clear()
    model.zero_grad(set_to_none=True)
    (losses * factor.detach()).sum().backward()


def private_step(model: CVAE, norms: RowNorms, optimizer: Any, x: torch.Tensor, c: torch.Tensor, beta: float,
                 max_norm: float) -> None:
    """One DP-SGD step on a Poisson-sampled batch, possibly empty (the step still adds its noise, so it counts)."""
    if len(x):
        clipped_gradient_sum(model, norms, x, c, beta, max_norm)
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
    optimizer.step()  # + noise (rank 0), / expected batch, all-reduce over workers, then Adam
    optimizer.zero_grad(set_to_none=True)


def private_epoch(model: CVAE, optimizer: torch.optim.Optimizer, shard: Any, plan: DpSgdSettings, history: History,
                  noise_multiplier: float, beta: float, epoch: int, rank: int) -> dict[str, float]:
    """One epoch of DP-SGD; appends its segment to `history` and returns this worker's sampled rows and the
    epoch's privacy metrics (`epsilon` spent so far, statistics included). Noise and sampling come from the
    secret seed, per epoch (a resumed epoch draws what it drew before) and per rank (sampling)."""
    device = next(model.parameters()).device
    private = private_optimizer(optimizer, plan, noise_multiplier, secret_generator(plan, device, epoch, -1))
    sampler = secret_generator(plan, torch.device("cpu"), epoch, rank)
    sampled = sampled_steps(model, private, shard, plan, beta, device, sampler)
    history.append((noise_multiplier, plan.sample_rate, plan.steps_per_chunk))
    spent = guarantee(plan, history, noise_multiplier)
    return sampled | {"epsilon": spent["epsilon"], "noise_multiplier": noise_multiplier, "dp_steps": spent["steps"]}


def sampled_steps(model: CVAE, optimizer: Any, shard: Any, plan: DpSgdSettings, beta: float, device: torch.device,
                  sampler: torch.Generator) -> dict[str, float]:
    """Every chunk of `plan.chunk_rows` rows of this worker's shard gets `plan.steps_per_chunk` steps, each taking
    every row of the chunk with probability `plan.sample_rate`. Every worker has as many chunks (equal shards), so
    DDP steps stay in lock-step. No loss is reported: it would be computed from training rows without noise."""
    model.train()
    norms = RowNorms(model)
    rows = 0
    try:
        for block in shard.iter_torch_batches(batch_size=plan.chunk_rows, dtypes=torch.float32, device=device):
            x, c = block["x"], block["c"]
            for _ in range(plan.steps_per_chunk):
                taken = (torch.rand(len(x), generator=sampler) < plan.sample_rate).to(device)
                private_step(model, norms, optimizer, x[taken], c[taken], beta, plan.max_grad_norm)
                rows += int(taken.sum())
    finally:
        for handle in norms.handles:
            handle.remove()
        model.on_row_log_sigma = None
    return {"rows": rows}


def private_optimizer(optimizer: torch.optim.Optimizer, plan: DpSgdSettings, noise_multiplier: float,
                      noise: torch.Generator) -> Any:
    """Opacus's DP optimizer for already-clipped sums around `optimizer`; the distributed one when there are
    several workers (noise on rank 0 only, then an all-reduce: the noise enters once per global step)."""
    from opacus.optimizers import DistributedDPOptimizerFastGradientClipping, DPOptimizerFastGradientClipping
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    kind = DistributedDPOptimizerFastGradientClipping if distributed else DPOptimizerFastGradientClipping
    return kind(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=plan.max_grad_norm,
                expected_batch_size=plan.expected_batch, loss_reduction="mean", generator=noise)


def secret_generator(plan: DpSgdSettings, device: torch.device, *stream: int) -> torch.Generator:
    """A generator from the secret noise seed: Poisson sampling and the noise must stay unpredictable."""
    return torch.Generator(device).manual_seed(hash((plan.seed, *stream)) & 0x7FFF_FFFF_FFFF_FFFF)
