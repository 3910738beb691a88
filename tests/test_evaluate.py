"""`cvae evaluate` and `cvae run` on a real local Ray cluster with MLflow: the report, plots, gate and bad input."""
import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.config import BUNDLED_DATA, load_config
from pipeline.evaluate.driver import evaluate
from pipeline.generate.driver import generate
from tests.test_bad_input import fails

pytestmark = pytest.mark.slow


def cli(command: str, *overrides: str) -> int:
    return main([command, *sum([["--set", o] for o in overrides], [])])


@pytest.fixture(scope="module")
def adult_dataset(trained_adult, tmp_path_factory):
    """A finished synthetic dataset from the session's Adult model, as `cvae generate` writes it."""
    base, _ = trained_adult
    output = tmp_path_factory.mktemp("evaluate") / "synthetic"
    overrides = base + [f"generate.output={output}", "generate.num_rows=6000", "generate.rows_per_part=2500"]
    outcome = generate(load_config(None, overrides), overwrite=False)
    return overrides, outcome


def artifacts(client: MlflowClient, run_id: str, path: str) -> set[str]:
    return {entry.path for entry in client.list_artifacts(run_id, path)}


def test_report_metrics_and_plots_reach_mlflow_and_a_rerun_repeats_them(adult_dataset, capsys):
    overrides, generated = adult_dataset
    config = load_config(None, overrides)
    first = evaluate(config)
    out = capsys.readouterr().out
    assert "quality" in out and "per income" in out and "utility (income" in out and "privacy" in out

    report = first.report
    assert report["reference"] == "holdout" and 0.5 < report["quality"]["overall"] <= 1
    assert report["quality"]["real_holdout_vs_training"] > 0.95  # the ceiling a model could reach
    assert report["rows"]["synthetic"] == 6000 and report["rows"]["sampled_synthetic"] == 6000
    assert set(report["columns"]) == set(pq.read_schema(BUNDLED_DATA / "adult.parquet").names)
    assert [e["value"] for e in report["conditions"]["income"]] == ["<=50K", ">50K"]
    assert report["utility"]["target"] == "income" and 0 < report["utility"]["tstr"]["accuracy"] <= 1
    assert report["privacy"]["synthetic_rows"] == 5000 and "share_closer_than_holdout_p5" in report["privacy"]
    # a classifier telling our rows from held-out real ones, beside real training rows told from them (the ceiling)
    assert 0 <= report["detection"]["synthetic"] < report["detection"]["training_rows"] <= 1
    assert f"detection {report['detection']['synthetic']:.3f} (1 = a classifier cannot tell" in out
    assert report["validity"]["invalid_values"] == 0  # the decoder clips to the training bounds and categories
    # Adult's 9 string columns are categories: each generated value has a shape real training values have
    assert len(report["formats"]["columns"]) == 9 and report["formats"]["synthetic"] >= 0.99
    assert "format validity" in out and report["formats"]["holdout"] >= 0.99
    assert report["model_version_uri"] == generated.model_uri

    client = MlflowClient(config.mlflow.tracking_uri)
    run = client.get_run(first.run_id)
    assert run.data.metrics["quality_overall"] == pytest.approx(report["quality"]["overall"])
    assert {"shape.age", "utility_tstr_macro_f1", "privacy_share_closer_than_holdout_p5", "format_validity",
            "format_validity_holdout", "format.education", "detection", "detection_training_rows"} <= set(
        run.data.metrics)
    assert run.data.tags["cvae.model_uri"] == generated.model_uri
    assert run.info.experiment_id == client.get_run(generated.run_id).info.experiment_id
    assert artifacts(client, first.run_id, "evaluation") >= {"evaluation/report.json", "evaluation/associations.png",
                                                             "evaluation/histograms"}
    assert len(artifacts(client, first.run_id, "evaluation/histograms")) == 15
    logged = mlflow.artifacts.load_dict(f"runs:/{first.run_id}/evaluation/report.json")
    assert logged["quality"] == report["quality"]
    name, version = generated.model_uri.removeprefix("models:/").split("/")
    assert client.get_model_version(name, version).tags["cvae.quality"] == f"{report['quality']['overall']:.4f}"

    page = (Path(generated.output) / "_evaluation.html").read_text()
    assert page == mlflow.artifacts.load_text(f"runs:/{first.run_id}/evaluation/report.html")
    assert f"report to look at: {generated.output}/_evaluation.html" in out
    seen = PageImages()
    seen.feed(page)
    # one histogram per column, each a PNG inlined in the page (it opens offline), and the association heatmap
    assert {alt.split(":")[0] for alt in seen.images} >= set(report["columns"]) | {"associations"}
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in seen.images.values())
    assert {"Columns", "Pairs of columns", "Per income", "Utility: train on synthetic, test on real",
            "Values in their formats", "Privacy"} <= set(seen.headings)
    assert f"Quality {report['quality']['overall']:.4f}" in page and "Promotion gate: none" in page
    assert f"Detection {report['detection']['synthetic']:.3f}" in page
    capsys.readouterr()
    again = evaluate(config)
    assert again.run_id == first.run_id  # the same evaluation: no second run, and no second pass over the rows
    assert "evaluated before with these settings" in capsys.readouterr().err
    assert json.dumps(again.report, sort_keys=True) == json.dumps(report, sort_keys=True)
    named = evaluate(load_config(None, [*overrides, f"evaluate.synthetic={generated.output}"]))
    assert named.run_id == first.run_id  # the same table named outright (as `cvae run` does): the same evaluation
    other = evaluate(load_config(None, [*overrides, "evaluate.sample_rows=3000"]))  # other settings: scored again
    assert other.run_id != first.run_id and other.report["rows"]["sampled_synthetic"] < 6000


def test_the_report_page_renders_in_headless_chromium(adult_dataset, tmp_path):
    """The page as a person's browser shows it: Debian's Chromium, headless, draws the verdict, tables and the
    inlined figures (on a page of broken images 0.01% of the pixels are coloured, on this one several percent)."""
    from PIL import Image

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium package is not installed (make test installs it where apt-get runs as root)")
    overrides, generated = adult_dataset
    evaluate(load_config(None, overrides))  # the stored evaluation, or a first one: either writes the page beside
    page, shot = Path(generated.output) / "_evaluation.html", tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,4000", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    assert image.size == (1200, 4000)
    assert (pixels.min(axis=1) < 200).mean() > 0.05  # ink: text, tables, bars (a blank page is white)
    assert (pixels.max(axis=1) - pixels.min(axis=1) > 60).mean() > 0.01  # colour: histograms drawn, not icons


class PageImages(HTMLParser):
    """The report page's inlined images (alt text -> base64 PNG) and section headings."""

    def __init__(self):
        super().__init__()
        self.images, self.headings, self._heading = {}, [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
            self.images[attrs["alt"]] = attrs["src"].removeprefix("data:image/png;base64,")
        self._heading = tag == "h2"

    def handle_data(self, data):
        if self._heading:
            self.headings.append(data)
            self._heading = False


def test_promotion_gate_moves_the_alias_only_when_quality_clears_it(adult_dataset, capsys):
    overrides, generated = adult_dataset
    name, version = generated.model_uri.removeprefix("models:/").split("/")
    client = MlflowClient(load_config(None, overrides).mlflow.tracking_uri)
    assert cli("evaluate", *overrides, "evaluate.promote_alias=gated", "evaluate.min_quality=0.999") == 0
    assert "not promoted" in capsys.readouterr().out
    assert "gated" not in client.get_registered_model(name).aliases
    assert cli("evaluate", *overrides, "evaluate.promote_alias=gated", "evaluate.min_quality=0.1") == 0
    assert "promoted models:/" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias(name, "gated").version) == version


def test_digits_report_holds_image_grids_and_pixel_correlations(trained_digits, tmp_path):
    base, _ = trained_digits
    overrides = base + [f"generate.output={tmp_path / 'digits'}"]
    generate(load_config(None, overrides), overwrite=False)
    config = load_config(None, overrides)
    outcome = evaluate(config)
    assert set(outcome.report["columns"]) == {"pixels", "digit"}
    assert len(outcome.report["conditions"]["digit"]) == 10
    client = MlflowClient(config.mlflow.tracking_uri)
    assert artifacts(client, outcome.run_id, "evaluation") >= {"evaluation/images_pixels.png",
                                                               "evaluation/correlations_pixels.png"}


def test_the_holdout_is_the_one_the_model_never_saw_whatever_the_config_says(adult_dataset, capsys):
    overrides, generated = adult_dataset
    outcome = evaluate(load_config(None, overrides + ["data.holdout_fraction=0.5", "train.seed=7"]))
    assert "evaluating on that holdout, not the config's" in capsys.readouterr().err
    split = outcome.report["split"]
    assert (split["holdout_fraction"], split["seed"]) == (0.1, 0)
    assert split["from"].startswith("training run")
    assert outcome.report["rows"]["sampled_holdout"] < 0.15 * 48842


def test_a_plain_parquet_table_from_another_tool_can_be_scored(adult_dataset, tmp_path, adult):
    overrides, _ = adult_dataset
    pq.write_table(adult.slice(0, 3000), tmp_path / "other-tool.parquet")
    outcome = evaluate(load_config(None, overrides + [f"evaluate.synthetic={tmp_path / 'other-tool.parquet'}"]))
    assert outcome.report["model_version_uri"] is None and not outcome.promoted
    assert outcome.report["quality"]["overall"] > 0.9  # real rows score like real rows
    assert outcome.report["privacy"]["synthetic_exact_copy_share"] > 0.5  # ... and are flagged as copies


@pytest.mark.parametrize("extra,expected", [
    (["evaluate.target=salary"], "evaluate.target 'salary' is not a scalar column"),
    (["evaluate.promote_alias=champion"], "evaluate.min_quality: required when evaluate.promote_alias is set"),
])
def test_bad_evaluation_settings(adult_dataset, capsys, workdir, extra, expected):
    overrides, _ = adult_dataset
    assert expected in fails(capsys, workdir, "evaluate", *overrides, *extra)


def test_missing_unfinished_and_foreign_synthetic_tables(adult_dataset, capsys, workdir, adult):
    overrides, _ = adult_dataset
    err = fails(capsys, workdir, "evaluate", *overrides, f"evaluate.synthetic={workdir}/nothing-here")
    assert "evaluate.synthetic" in err and "does not exist" in err

    unfinished = workdir / "unfinished"
    unfinished.mkdir()
    (unfinished / "_generation.json").write_text("{}")
    pq.write_table(adult.slice(0, 10), unfinished / "part-00000.parquet")
    err = fails(capsys, workdir, "evaluate", *overrides, f"evaluate.synthetic={unfinished}")
    assert "unfinished cvae dataset" in err and "rerun the same cvae generate" in err

    pq.write_table(adult.drop_columns(["age"]).slice(0, 10), workdir / "narrow.parquet")
    err = fails(capsys, workdir, "evaluate", *overrides, f"evaluate.synthetic={workdir}/narrow.parquet")
    assert "lacks the real table's column(s) age" in err

    pq.write_table(adult.slice(0, 10), workdir / "plain.parquet")
    err = fails(capsys, workdir, "evaluate", *overrides, f"evaluate.synthetic={workdir}/plain.parquet",
                "evaluate.promote_alias=champion", "evaluate.min_quality=0.5")
    assert "needs a cvae dataset with a manifest" in err
