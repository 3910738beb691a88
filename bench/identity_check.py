"""Refactoring guard: the fitted encoder JSON and generated Parquet bytes of every bundled table (and two CSV-export
tables when ../shared is there), exact and private fits, written as SHA-256 digests to a JSON file; `--compare`
checks another run against it.

    python bench/identity_check.py --out before.json            # on the old code
    python bench/identity_check.py --out after.json --compare before.json

Per table: the encoder fitted in-process from 4,096-row batches with deterministic row hashes (the path the
Ray fit takes per block), once exactly and once under a private fit; a small model with fixed torch weights
(the decoder need not be trained: the bytes test the codecs' decode); 3,000 proportional rows synthesized in
two parts (row offsets 0 and 1,500, as two generation parts would) and written as generation writes a part.
Also the saved encoder read back and written again (the file format round-trips). Nothing here is a test.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "pipeline" / "data"
SHARED = ROOT.parent / "shared" / "datasets"
TABLES = {  # table -> (conditions, column kinds)
    "adult": (["income"], {}),
    "digits": (["digit"], {"digit": "categorical"}),
    "pizzaplace": (["type"], {}),
    "airports": (["state"], {}),
    "nuclides": (["is_stable"], {}),
    "penguins-raw": (["Species"], {}),
    "seattle-weather": (["weather"], {}),
    "sf-temps": (["date"], {}),
    "strings/peeps": (["gender"], {}),
    "strings/gibraltar": (["condition"], {}),
}
BATCH_ROWS = 4096
ROWS = 3000


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def fit(table: pa.Table, conditions: list[str], kinds: dict[str, str], private: bool):
    """Sketches keyed by row hash, updated block by block, finalized (two passes when private)."""
    from pipeline.codec import EncoderSketch, FineHistograms
    from pipeline.config import EncoderConfig
    from pipeline.privacy import PrivateFit

    row_hash = (np.arange(table.num_rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(12345)
    merged = EncoderSketch(table.schema, conditions, EncoderConfig(), kinds, 3, private)
    for start in range(0, table.num_rows, BATCH_ROWS):
        merged.update(table.slice(start, BATCH_ROWS), row_hash[start: start + BATCH_ROWS])
    if not private:
        return merged.finalize()
    noise = merged.statistics_noise(PrivateFit(2.0, 1e-5, 7))
    fine = FineHistograms(merged.private_grids(noise))
    for start in range(0, table.num_rows, BATCH_ROWS):
        fine.update(table.slice(start, BATCH_ROWS))
    return merged.finalize([], noise, fine)


def generated(encoder, saved: Path | None = None) -> bytes:
    """Proportional rows of a fixed small model; with `saved`, the model is written there as a model artifact
    first (when absent) and then read back from it: an artifact written by older code generates the same bytes."""
    from pipeline.artifact import load_artifact, save_artifact
    from pipeline.config import GenerateConfig, ModelConfig
    from pipeline.model.cvae import build_model
    from pipeline.generate.part_writer import parquet_bytes
    from pipeline.generate.plan import build_plan
    from pipeline.model.sampling import synthesize
    torch.manual_seed(0)
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans,
                        ModelConfig(hidden=[32], latent_dim=4, latent_mixture=0))
    if saved is not None:
        if not saved.exists():
            save_artifact(saved, model, encoder.to_json())
        model, encoder = load_artifact(saved)
    plan = build_plan(GenerateConfig(num_rows=ROWS, seed=5), encoder)
    half = ROWS // 2
    parts = [synthesize(model, encoder, plan.rows(start, start + half), seed=11 + start, row_offset=start)
             for start in (0, half)]
    return b"".join(parquet_bytes(part) for part in parts)


def main() -> int:
    from pipeline.codec import TableEncoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare")
    parser.add_argument("--artifacts", help="a folder of model artifacts: written where absent, else read")
    args = parser.parse_args()
    digests = {}
    for name, (conditions, kinds) in TABLES.items():
        path = (SHARED / f"{name}.parquet") if "/" in name else DATA / f"{name}.parquet"
        if not path.exists():
            print(f"{name}: not here, skipped", file=sys.stderr)
            continue
        table = pq.read_table(path)
        for private in (False, True):
            encoder = fit(table, conditions, kinds, private)
            text = encoder.to_json()
            key = f"{name}/{'private' if private else 'exact'}"
            digests[key] = {"encoder": digest(text), "reread": digest(TableEncoder.from_json(text).to_json()),
                            "rows": digest(generated(encoder)) if encoder.condition_distribution else None}
            if args.artifacts and encoder.condition_distribution:
                digests[key]["artifact_rows"] = digest(generated(encoder, Path(args.artifacts) / key))
            print(key, digests[key]["encoder"][:12], (digests[key]["rows"] or "-")[:12], flush=True)
    Path(args.out).write_text(json.dumps(digests, indent=1))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        differ = [f"{key}.{what}" for key in before for what in before[key]
                  if digests.get(key, {}).get(what) != before[key][what]]
        print(f"{len(before)} fits compared, {len(differ)} digests differ: {', '.join(differ) or 'none'}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
