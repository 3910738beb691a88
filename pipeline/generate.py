"""Generation: condition rows -> synthetic rows in the training schema."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from pipeline.encoding import TableEncoder
from pipeline.model import CVAE


@torch.no_grad()
def synthesize(model: CVAE, encoder: TableEncoder, conditions: pa.Table, seed: int) -> pa.Table:
    """One synthetic row per condition row; the same (model, conditions, seed) always gives the same rows."""
    model.eval()
    c = torch.from_numpy(encoder.encode_conditions(conditions))
    generator = torch.Generator().manual_seed(seed)
    x = model.sample(c, generator).numpy()
    return encoder.inverse_transform(x, conditions, np.random.default_rng(seed))
