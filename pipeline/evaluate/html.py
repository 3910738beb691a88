"""The evaluation as one self-contained HTML page: what a person opens to compare a synthetic table with the real
one by looking. Every figure is the report's own PNG (pipeline/evaluate/plots.py, matplotlib) inlined as data, so
the page opens anywhere, offline, from MLflow's artifact view or beside the dataset.

Sections: the verdict (quality beside what real unseen rows score, detection, the promotion gate), each column (its score
and real-vs-synthetic histogram), the strongest and weakest pairs and the association heatmaps, the per-condition
breakdown, utility, format validity and rule shares where the table has them, and the privacy figures."""
from __future__ import annotations

import base64
import html
from typing import Any

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:.5em}.grid figure{margin:0;width:340px}.grid img{width:100%}
.wide figure{width:100%}
figcaption{font-size:.85em;color:#555}.verdict{font-size:1.1em;padding:.6em;background:#f6f8fa}"""
PAIRS_SHOWN = 10


def render(report: dict[str, Any], figures: dict[str, bytes], gate: str) -> str:
    """The page for `report` (as evaluation/report.json holds it); `figures`: artifact path -> PNG bytes;
    `gate`: the promotion gate's verdict in words."""
    q = report["quality"]
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>cvae evaluation: "
             f"{_e(report.get('synthetic', ''))}</title><style>{STYLE}</style></head><body>",
             f"<h1>Synthetic vs real: {_e(report.get('synthetic', ''))}</h1>",
             f"<p>Real table {_e(report.get('real', ''))}; model {_e(report.get('model_version_uri') or 'unknown')}; "
             f"scored against the {_e(report['reference'])}.</p>",
             "<div class=verdict>" + _verdict(q, gate, report.get("detection") or {}) + "</div>"]
    parts += ["<h2>Columns</h2>", _table(["column", "shape score (1 = same distribution)"],
                                         sorted(report["columns"].items(), key=lambda item: item[1]))]
    parts.append(_grid({path: caption for path, caption in
                        ((f"histograms/{name}.png", f"{name}: {score:.3f}") for name, score in
                         sorted(report["columns"].items(), key=lambda item: item[1]))}, figures))
    related = sorted((pair for pair in report.get("pairs", []) if pair.get("related_pairs")),
                     key=lambda pair: pair["score"])  # the pairs associated in the real rows: what pair trends average
    if related:
        shown = related if len(related) <= 2 * PAIRS_SHOWN else related[:PAIRS_SHOWN] + related[-PAIRS_SHOWN:]
        parts += ["<h2>Pairs of columns</h2>",
                  f"<p>{len(related)} pairs associated in the real rows (|Pearson r| &gt; 0.5 or Cram&eacute;r's V "
                  f"&gt; 0.3), scored 1 when the synthetic rows associate them alike"
                  f"{f'; the weakest and the best {PAIRS_SHOWN}' if len(shown) < len(related) else ''}:</p>",
                  _table(["pair", "score"], [(" & ".join(pair["columns"]), pair["score"]) for pair in shown])]
    parts.append(_grid({path: path.removesuffix(".png").replace("_", " ") for path in figures
                        if not path.startswith("histograms/")}, figures, wide=True))  # heatmaps: full width
    for column, entries in report.get("conditions", {}).items():
        parts += [f"<h2>Per {_e(column)}</h2>",
                  _table(["value", "quality", "synthetic rows", "real rows"],
                         [(e.get("value"), e.get("overall"), e.get("synthetic_rows"), e.get("real_rows"))
                          for e in entries])]
    parts += ["<h2>Utility: train on synthetic, test on real</h2>", _utility(report.get("utility", {}))]
    formats = report.get("formats") or {}
    if formats.get("columns"):
        parts += ["<h2>Values in their formats</h2>",
                  _table(["column", "synthetic valid", "real holdout valid"],
                         [(name, c.get("synthetic"), c.get("holdout")) for name, c in formats["columns"].items()])]
    rules = report.get("rules") or {}
    if rules.get("rules"):
        parts += ["<h2>Rules between columns</h2>",
                  _table(["rule (as data.rules writes it)", "synthetic rows keeping it", "real holdout rows"],
                         [(rule, shares.get("synthetic"), shares.get("holdout")) for rule, shares in
                          rules["rules"].items()])]
    parts += ["<h2>Privacy</h2>", _table(["figure", "value"], sorted(report.get("privacy", {}).items()))]
    guarantee = report.get("differential_privacy")
    parts.append(f"<p>Differential privacy: ({guarantee['epsilon']:.3g}, {guarantee['delta']:.2g})-DP.</p>"
                 if guarantee else "<p>Differential privacy: none (the model was not trained with "
                                   "train.privacy).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _verdict(q: dict[str, Any], gate: str, detection: dict[str, Any]) -> str:
    baseline = q.get("real_holdout_vs_training")
    text = (f"<b>Quality {q['overall']:.4f}</b> (column shapes {q['column_shapes']:.4f}, pair trends "
            f"{q['column_pair_trends']:.4f})")
    if baseline is not None:
        text += f"; real unseen rows against the training rows score {baseline:.4f}, the ceiling"
    if detection.get("synthetic") is not None:
        text += (f". <b>Detection {detection['synthetic']:.3f}</b> (1: a classifier cannot tell the synthetic rows "
                 "from real ones, 0: always can"
                 + (f"; real training rows {detection['training_rows']:.3f})" if detection.get("training_rows")
                    is not None else ")"))
    return f"{text}. Promotion gate: {_e(gate)}."


def _utility(utility: dict[str, Any]) -> str:
    rows = [(side, key, value) for side in ("trtr", "tstr") for key, value in utility.get(side, {}).items()]
    label = {"trtr": "trained on real", "tstr": "trained on synthetic"}
    return (f"<p>Target {_e(utility.get('target', ''))} ({_e(utility.get('task', ''))}, "
            f"{_e(utility.get('model', ''))}, {utility.get('test_rows', 0):,} real test rows).</p>"
            + _table(["model", "score", "value"], [(label[side], key, value) for side, key, value in rows]))


def _table(header: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"<td class=n>{value:.4f}</td>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"<td class=n>{value:,}</td>"
    return f"<td>{_e('' if value is None else value)}</td>"


def _grid(captions: dict[str, str], figures: dict[str, bytes], wide: bool = False) -> str:
    shown = [f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,"
             f"{base64.b64encode(figures[path]).decode()}'><figcaption>{_e(caption)}</figcaption></figure>"
             for path, caption in captions.items() if path in figures]
    return f"<div class='grid{' wide' if wide else ''}'>{''.join(shown)}</div>" if shown else ""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
