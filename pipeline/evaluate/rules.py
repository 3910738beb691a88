"""Rule validity: the share of rows that keep every rule the real training rows keep in 100% of rows (found as
training finds them, pipeline/rules/found.py, on the evaluation's training sample), beside the same share for
real rows the model never saw (the ceiling). Any tool's output can be scored: nothing here reads the model.
A fixed combination counts as kept when the training sample holds it."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.rules import RuleSketch
from pipeline.rules.construct import shown
from pipeline.rules.rule import Fixed

K = 5  # rows a found rule needs behind it, as `encoder.min_value_count` by default


def rule_validity(train: pa.Table, holdout: pa.Table | None, synthetic: pa.Table) -> dict[str, Any]:
    """Per rule (as `data.rules` writes it): the share of synthetic (and holdout) rows keeping it; and the share
    keeping all of them."""
    train = train.select([name for name in train.column_names if name in synthetic.column_names])
    sketch = RuleSketch(train.schema)
    sketch.update(train)
    found = sketch.rules(K)
    sides = {"synthetic": synthetic, **({"holdout": holdout} if holdout is not None else {})}
    kept_all = {side: np.ones(table.num_rows, dtype=bool) for side, table in sides.items()}
    rules = {}
    for rule in found:
        allowed = set(zip(*(train.column(c).to_pylist() for c in rule.group))) if isinstance(rule, Fixed) else None
        shares = {}
        for side, table in sides.items():
            broken = rule.broken(table, allowed) if allowed is not None else rule.broken(table)
            kept_all[side] &= ~broken
            shares[side] = float(1.0 - broken.mean()) if len(broken) else None
        rules[shown(rule)] = shares
    return {"rules": rules, **{side: (float(kept.mean()) if len(kept) and found else None)
                               for side, kept in kept_all.items()}}

