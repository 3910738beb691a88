"""The latent mixture's draw, per generation batch: `latent_prior.draw` (rows grouped by component, one matrix
product per component present) beside the per-row gather it replaced (each row's (latent x latent) Cholesky
factor gathered, then one batched product), and beside the decoder's forward pass on the same rows: the draw's
share of the per-row cost. Same process, same threads, interleaved repeats (ratios, not absolute times).

    python bench/draw_bench.py [--rows 65536] [--latent 32] [--components 20] [--combinations 10]

Prints a table; nothing here is a test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from in_process import fastest  # noqa: E402
from pipeline.model import latent_prior  # noqa: E402
from pipeline.model.latent_prior import LatentMixture, draw  # noqa: E402


def gathered(noise: torch.Tensor, component: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """The replaced way: one factor per row, (n, latent, latent), then a batched matrix-vector product."""
    return torch.bmm(scale_tril[component], noise.unsqueeze(-1)).squeeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=65_536)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--components", type=int, default=20, help="per condition combination")
    parser.add_argument("--combinations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    total = args.components * args.combinations
    factors = _covariances(total, args.latent)
    mixture = LatentMixture(keys=torch.randn(args.combinations, 4),
                            owner=torch.arange(args.combinations).repeat_interleave(args.components),
                            weights=torch.full((total,), 1.0 / args.components),
                            means=torch.randn(total, args.latent), scale_tril=factors)
    combination = torch.randint(0, args.combinations, (args.rows,))
    decoder = torch.nn.Sequential(torch.nn.Linear(args.latent + 44, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                  torch.nn.ReLU(), torch.nn.Linear(256, 130))  # Adult's widths at the defaults
    decoder_input = torch.randn(args.rows, args.latent + 44)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        grouped = latent_prior._scaled
        figures = {"draw, rows grouped by component": grouped, "draw, a factor gathered per row (before)": gathered}
        seconds = {}
        for _ in range(2):  # interleaved: both ways see the same machine
            for name, scaling in figures.items():
                latent_prior._scaled = scaling
                seconds[name] = min(seconds.get(name, float("inf")),
                                    fastest(lambda: draw(mixture, combination, generator), args.repeats))
        latent_prior._scaled = grouped
        seconds["decoder forward (Adult widths)"] = fastest(lambda: decoder(decoder_input), args.repeats)
    forward = seconds["decoder forward (Adult widths)"]
    print(f"{args.rows:,} rows, latent {args.latent}, {total} components over {args.combinations} combinations, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'step':<44}{'ms':>9}{'vs decoder forward':>20}")
    for name, value in seconds.items():
        print(f"{name:<44}{value * 1000:>9.1f}{value / forward:>19.0%}")


def _covariances(count: int, latent: int) -> torch.Tensor:
    """`count` random (latent x latent) Cholesky factors of well-conditioned covariances."""
    a = 0.1 * torch.randn(count, latent, latent)
    return torch.linalg.cholesky(torch.eye(latent) + a @ a.transpose(1, 2))


if __name__ == "__main__":
    main()
