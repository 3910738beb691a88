"""Sampling: condition rows -> synthetic rows. Shared by the pyfunc's predict and the generation actors,
so both give identical rows for the same seed and part."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import torch

from pipeline.codec import TableEncoder
from pipeline.model.cvae import CVAE

SAMPLE_BATCH = 65536


def part_seed(seed: int, part: int) -> int:
    """Part k's own seed: its rows never depend on other parts, worker count or scheduling."""
    return int.from_bytes(hashlib.sha256(f"cvae:{seed}:{part}".encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def synthesize(model: CVAE, encoder: TableEncoder, conditions: pa.Table, seed: int,
               device: str | torch.device = "cpu", precision: str = "float32", row_offset: int = 0) -> pa.Table:
    """One synthetic row per condition row; the same (model, conditions, seed, precision) always gives the same rows.

    `precision="bfloat16"` runs the networks' matrix products in bf16 (about 2x faster on CPUs with
    AVX512-BF16 or AMX, and on GPUs); sampling and decoding stay in float32. `row_offset` is the first
    row's index in the whole dataset, from which fresh identifiers count.
    """
    model.eval()
    device = torch.device(device)
    generator = torch.Generator(device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    pieces = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        for start in range(0, max(conditions.num_rows, 1), SAMPLE_BATCH):
            chunk = conditions.slice(start, SAMPLE_BATCH)
            c = torch.from_numpy(encoder.encode_conditions(chunk)).to(device)
            x = model.sample(c, generator).cpu().numpy()
            pieces.append(encoder.inverse_transform(x, chunk, rng, row_offset + start))
    return pa.concat_tables(pieces)
