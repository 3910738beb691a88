"""Rules between columns, measured: on one seeded 80/20 split per table, the CVAE trained with the rules it finds
applied (`data.rules_found=apply`, the default) and without (`off`), at the same settings; for each, the share of
generated rows that keep every rule the real training rows keep (pipeline/evaluate/rules.py) beside the real
holdout's own share, and detection as the TabSyn / TabDiff papers report it (gradient-boosted trees telling
held-out real rows from as many synthetic ones, 3-fold ROC AUC, score 2 x (1 - AUC): 1.0 cannot tell them apart).

    python bench/rules_bench.py [--tables adult strings/sp500 nuclides] [--epochs 8] [--sdv]

Also our evaluator's fidelity (SDMetrics QualityReport's definitions) against the holdout, beside the real
training rows' own; with the `bench` extra installed, both judges (mostlyai-qa accuracy and SDMetrics'
QualityReport, bench/judging.py); generation rows/s (100,000 proportional rows, one thread, best of 5, both ways
interleaved) with and without rules (`--rates-only`: just those).
`--sdv`: SDV's GaussianCopula synthesizer given the same found rules as SDV constraints where SDV can express them
(Inequality, FixedCombinations of categorical columns, FixedIncrements) and without: rule validity, detection and
rows/s beside ours. Writes bench/results/rules.jsonl and prints one line per table and variant, and ten real and
ten generated rows.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from in_process import train_and_sample  # noqa: E402
from judging import split  # noqa: E402

from pipeline.config import BUNDLED_DATA  # noqa: E402
from pipeline.evaluate.driver import column_kinds  # noqa: E402
from pipeline.evaluate.metrics import detection, prepare, quality  # noqa: E402
from pipeline.evaluate.rules import rule_validity  # noqa: E402

CONDITIONS = {"adult": ["income"], "strings/sp500": ["volume"], "nuclides": ["is_stable"],
              "strings/gibraltar": ["condition"], "seattle-weather": ["weather"], "linked/flights": ["carrier"]}
RATE_ROWS = 100_000


def generation_rates(table: pa.Table, conditions: list[str], repeats: int = 5) -> dict[str, float]:
    """Rows/s of `synthesize` for RATE_ROWS proportional rows with the found rules applied and without, each the
    best of `repeats` and both ways interleaved in this process (one thread: a generation writer's share): the
    encoder and a default-size model of each way (untrained: the rules' cost is the modelled table's shape and the
    rebuild, not the weights)."""
    import torch

    from pipeline.codec import fit_table
    from pipeline.config import EncoderConfig, GenerateConfig, ModelConfig
    from pipeline.generate.plan import build_plan
    from pipeline.model.cvae import build_model
    from pipeline.model.sampling import synthesize
    from pipeline.rules import RuleSketch, table_rules

    sketch = RuleSketch(table.schema)
    sketch.update(table)
    torch.set_num_threads(1)
    ways = {}
    for mode in ("apply", "off"):
        rules = table_rules(table.schema, conditions, [], mode, 5, sketch)
        encoder = fit_table(table.to_batches(), conditions, EncoderConfig(), rules=rules)
        torch.manual_seed(0)
        model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, ModelConfig())
        plan = build_plan(GenerateConfig(num_rows=RATE_ROWS), encoder).rows(0, RATE_ROWS)
        ways[mode] = (model, encoder, plan)
    best = {mode: float("inf") for mode in ways}
    for _ in range(repeats):
        for mode, (model, encoder, plan) in ways.items():
            started = time.perf_counter()
            synthesize(model, encoder, plan, seed=0)
            best[mode] = min(best[mode], time.perf_counter() - started)
    return {mode: round(RATE_ROWS / seconds) for mode, seconds in best.items()} | {
        "x_dim": {mode: ways[mode][1].x_dim for mode in ways}}


def judged(train: pa.Table, holdout: pa.Table, synthetic: pa.Table, folder: Path, target: str) -> dict:
    """Both external judges where the `bench` extra is installed, and train on synthetic; {} otherwise."""
    try:
        from judging import judge, judge_frame
        return {key: value for key, value in judge(judge_frame(synthetic), judge_frame(train), judge_frame(holdout),
                                                  str(folder), target).items()
                if key.startswith(("qa_", "sdmetrics", "tstr", "trtr"))}
    except ImportError:
        return {}
    except Exception as exc:  # noqa: BLE001 - a judge failing on one table is a finding, not the end of the run
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def sdv_constraints(rules: list, metadata: dict) -> tuple[list, list[str]]:
    """Our found rules as SDV constraints (sdv.cag) where SDV has the kind, and the rules it cannot express."""
    from sdv import cag

    from pipeline.rules.rule import Fixed, Inequality, Step

    kinds = {name: column["sdtype"] for name, column in metadata["columns"].items()}
    constraints, left = [], []
    for rule in rules:
        if isinstance(rule, Inequality) and isinstance(rule.left, str) and isinstance(rule.right, str):
            constraints.append(cag.Inequality(low_column_name=rule.left, high_column_name=rule.right,
                                              strict_boundaries=rule.strict))
        elif isinstance(rule, Fixed) and all(kinds.get(c) in ("categorical", "boolean") for c in rule.group):
            constraints.append(cag.FixedCombinations(column_names=list(rule.group)))
        elif isinstance(rule, Step) and float(rule.step).is_integer():
            constraints.append(cag.FixedIncrements(column_name=rule.column, increment_value=int(rule.step)))
        else:
            left.append(str(rule.config()))
    return constraints, left


def sdv_rows(train: pa.Table, rules: list, rows: int) -> tuple[pa.Table, float, float, list[str]]:
    """SDV's GaussianCopula fitted on the training rows with `rules` as constraints (none when empty): its rows in
    the training schema, fit seconds, sample rows/s and the rules SDV could not be given."""
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    frame = train.to_pandas()
    metadata = Metadata.detect_from_dataframes({"table": frame})
    synthesizer = GaussianCopulaSynthesizer(metadata)
    constraints, left = sdv_constraints(rules, metadata.to_dict()["tables"]["table"])
    if constraints:
        synthesizer.add_constraints(constraints)
    started = time.perf_counter()
    synthesizer.fit({"table": frame})  # SDV 2 takes tables by name, single-table synthesizers too
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    sampled = synthesizer.sample(num_rows=rows)
    sampled = sampled["table"] if isinstance(sampled, dict) else sampled
    rate = rows / (time.perf_counter() - started)
    table = pa.Table.from_pandas(sampled[train.column_names], preserve_index=False)
    table = pa.table([table.column(f.name).cast(f.type, safe=False) for f in train.schema], schema=train.schema)
    return table, fit_s, rate, left


def detected(real: pa.Table, synthetic: pa.Table, fresh: list[str]) -> float | None:
    """The evaluator's detection (pipeline/evaluate/metrics.py: 2 x (1 - AUC) of gradient-boosted trees, 3 folds)
    on every row of both tables, identifiers and personal data left out (`fresh`: what our encoder generates
    fresh; a fresh tail number is not a real one by design, and telling rows apart by it says nothing)."""
    kinds = {name: kind for name, kind in column_kinds(real.schema, {}).items() if kind != "id" and name not in fresh}
    real_sample, synthetic_sample = prepare([real, synthetic], kinds)
    return detection(real_sample, synthetic_sample, seed=0, rows=max(real.num_rows, synthetic.num_rows))


def fidelity(train: pa.Table, holdout: pa.Table, synthetic: pa.Table) -> dict[str, float]:
    """Our evaluator's fidelity (SDMetrics QualityReport's definitions) of the generated rows against the holdout,
    beside the real training rows' own score against it (the ceiling)."""
    kinds = {name: kind for name, kind in column_kinds(train.schema, {}).items() if kind != "id"}
    real, unseen, generated = prepare([train, holdout, synthetic], kinds)
    return {"synthetic": quality(unseen, generated)["overall"], "training_rows": quality(unseen, real)["overall"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", nargs="+", default=list(CONDITIONS))
    parser.add_argument("--epochs", default="8")
    parser.add_argument("--sdv", action="store_true", help="also SDV's GaussianCopula with and without constraints")
    parser.add_argument("--rates-only", action="store_true", help="only generation rows/s with and without rules")
    args = parser.parse_args()
    out = Path(__file__).parent / "results" / "rules.jsonl"
    for name in args.tables:
        table = pq.read_table(BUNDLED_DATA / f"{name}.parquet")
        train, holdout = split(table)
        rates = {"table": name, "system": "cvae", "generation_rows_per_s": generation_rates(train, CONDITIONS[name])}
        print(json.dumps(rates), flush=True)
        with out.open("a") as handle:
            handle.write(json.dumps(rates) + "\n")
        if args.rates_only:
            continue
        fresh = fresh_columns(train, CONDITIONS[name])
        work = Path(tempfile.mkdtemp(prefix="rules-bench-"))
        pq.write_table(train, work / "train.parquet")
        for mode in ("apply", "off"):
            overrides = [f"data.path={work / 'train.parquet'}", f"data.conditions={CONDITIONS[name]}",
                         "data.holdout_fraction=0.0", f"data.rules_found={mode}", f"train.epochs={args.epochs}",
                         f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db", f"train.storage_path={work}/runs",
                         f"train.name=rules-{mode}", f"mlflow.model_name=rules-{mode}"]
            started = time.perf_counter()
            trained = train_and_sample(overrides, holdout.num_rows)
            rules = rule_validity(train, holdout, trained.synthetic)
            record = {"table": name, "system": "cvae", "rules_found": mode, "epochs": args.epochs,
                      "fit_s": round(trained.fit_s, 1),
                      "rule_validity": rules["synthetic"], "rule_validity_holdout": rules["holdout"],
                      "rules_judged": len(rules["rules"]),
                      "detection": detected(holdout, trained.synthetic, fresh),
                      "quality": fidelity(train, holdout, trained.synthetic),
                      "detection_train_rows": detected(holdout, train, fresh),
                      "judges": judged(train, holdout, trained.synthetic, work, CONDITIONS[name][0]),
                      "worst_rules": sorted(((r, s["synthetic"]) for r, s in rules["rules"].items()),
                                            key=lambda item: item[1])[:3],
                      "wall_s": round(time.perf_counter() - started, 1)}
            print(json.dumps(record), flush=True)
            with out.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            if mode == "apply":
                found = trained_rules(trained.files)
                with pd.option_context("display.width", 250, "display.max_columns", 30):
                    print("real (holdout):\n", holdout.slice(0, 10).to_pandas().to_string(max_colwidth=18))
                    print("generated:\n", trained.synthetic.slice(0, 10).to_pandas().to_string(max_colwidth=18))
        for given in (("found", "none") if args.sdv else ()):
            synthetic, fit_s, rate, left = sdv_rows(train, found if given == "found" else [], holdout.num_rows)
            rules = rule_validity(train, holdout, synthetic)
            record = {"table": name, "system": "sdv-gaussiancopula", "constraints": given, "fit_s": round(fit_s, 1),
                      "rule_validity": rules["synthetic"], "rule_validity_holdout": rules["holdout"],
                      "rules_judged": len(rules["rules"]), "not_expressible": left if given == "found" else [],
                      "detection": detected(holdout, synthetic, fresh),
                      "quality": fidelity(train, holdout, synthetic), "rows_per_s": round(rate),
                      "judges": judged(train, holdout, synthetic, work, CONDITIONS[name][0]),
                      "worst_rules": sorted(((r, s["synthetic"]) for r, s in rules["rules"].items()),
                                            key=lambda item: item[1])[:3]}
            print(json.dumps(record), flush=True)
            with out.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def fresh_columns(table: pa.Table, conditions: list[str]) -> list[str]:
    """The columns our encoder generates fresh (identifiers, personal data) on this table."""
    from pipeline.codec import fit_table
    from pipeline.config import EncoderConfig

    encoder = fit_table(table.to_batches(), conditions, EncoderConfig())
    return encoder.id_columns + encoder.personal_columns


def trained_rules(files: dict[str, bytes]) -> list:
    """The rules a trained model applies, read back from its encoder."""
    from pipeline.artifact import load_artifact_files

    _, encoder = load_artifact_files(files)
    return encoder.rules.applied


if __name__ == "__main__":
    main()
