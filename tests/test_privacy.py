"""Differential privacy: the accountant against independent reference values, the statistics' noise against
its budget, and a private encoder that stores nothing exact (bundled real tables)."""
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.special import ndtr

from pipeline.config import BUNDLED_DATA, EncoderConfig, GenerateConfig, load_config
from pipeline.codec import fit_table
from pipeline.errors import UserError
from pipeline.generate.plan import build_plan
from pipeline.privacy import PrivateFit, noise_for_budget, sgd_epsilon, statistics_noise

ORDERS = range(2, 64)


def balle_epsilon(rdp: np.ndarray, orders: np.ndarray, delta: float) -> float:
    """RDP -> (epsilon, delta) by Balle et al. 2020, Theorem 21 (the conversion Opacus states it uses)."""
    return float(np.min(rdp - (math.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)))


def sampled_gaussian_rdp(q: float, sigma: float, alpha: int) -> float:
    """RDP of the Poisson-subsampled Gaussian at an integer order (Mironov, Talwar & Zhang 2019, Sec. 3.3),
    written out independently of Opacus: log of a binomial sum, in log space."""
    terms = [math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
             + (alpha - k) * math.log1p(-q) + (k * math.log(q) if k else 0.0) + (k * k - k) / (2 * sigma ** 2)
             for k in range(alpha + 1)]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


@pytest.mark.parametrize("q, sigma, steps, delta", [(256 / 60_000, 1.1, 60 * 235, 1e-5), (0.01, 0.8, 1000, 1e-6),
                                                    (0.02, 2.0, 5000, 1e-5)])
def test_accountant_matches_the_subsampled_gaussian_reference(q, sigma, steps, delta):
    orders = np.array(ORDERS, dtype=float)
    reference = balle_epsilon(np.array([steps * sampled_gaussian_rdp(q, sigma, a) for a in ORDERS]), orders, delta)
    ours = sgd_epsilon([(sigma, q, steps)], delta)
    # Opacus also tries fractional orders, so it may only be tighter, and only a little
    assert reference * 0.95 <= ours <= reference + 1e-9, (ours, reference)


def test_accountant_matches_the_closed_form_without_subsampling():
    sigma, steps, delta = 3.0, 40, 1e-5
    orders = np.array(ORDERS, dtype=float)
    reference = balle_epsilon(steps * orders / (2 * sigma ** 2), orders, delta)  # the Gaussian's RDP: alpha/(2 s^2)
    assert sgd_epsilon([(sigma, 1.0, steps)], delta) == pytest.approx(reference, rel=0.02)


def test_a_resumed_history_adds_up_and_the_derived_noise_fits_the_budget():
    q, delta = 0.01, 1e-6
    whole = sgd_epsilon([(1.0, q, 600)], delta)
    assert sgd_epsilon([(1.0, q, 200), (1.0, q, 400)], delta) == pytest.approx(whole, rel=1e-9)
    assert sgd_epsilon([(1.0, q, 200)], delta) < whole  # a resumed run does not start from zero
    sigma = noise_for_budget([(1.0, q, 200)], q, 400, epsilon=4.0, delta=delta)
    assert sgd_epsilon([(1.0, q, 200), (sigma, q, 400)], delta) <= 4.0
    assert sgd_epsilon([(1.0, q, 200), (sigma * 0.97, q, 400)], delta) > 4.0  # the least noise that fits, to 1%
    assert noise_for_budget([(0.3, q, 10_000)], q, 100, epsilon=1.0, delta=delta) is None  # already spent


@pytest.mark.parametrize("epsilon, histograms, keyed", [(0.2, 21, 10), (2.0, 3, 1), (1.0, 50, 0)])
def test_statistics_noise_spends_exactly_its_budget(epsilon, histograms, keyed):
    delta = 1e-6
    noise = statistics_noise(epsilon, delta, histograms, keyed, seed=0)
    rho = histograms / (2 * noise.sigma ** 2)  # zCDP of a Gaussian on H histograms of L2 sensitivity 1 each
    delta_gaussian = delta / 2 if keyed else delta
    assert rho + 2 * math.sqrt(rho * math.log(1 / delta_gaussian)) == pytest.approx(epsilon, rel=1e-9)
    if keyed:  # a value one row holds passes the threshold with probability delta/2 over all keyed histograms
        assert keyed * (1 - ndtr((noise.threshold - 1) / noise.sigma)) == pytest.approx(delta / 2, rel=1e-6)


def _row_gradients(model, x, c, beta):
    """The reference: every row's own gradient, materialised with torch.func (what ghost clipping avoids)."""
    from torch.func import functional_call, grad, vmap
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def row_loss(params, x_row, c_row):
        return functional_call(model, (params, buffers), (x_row[None], c_row[None], beta))["loss"]
    return vmap(grad(row_loss), in_dims=(None, 0, 0))(params, x, c)


@pytest.mark.parametrize("prior, variance", [("conditional", "learned"), ("standard", "fixed")])
def test_ghost_clipping_equals_clipping_each_rows_gradient(monkeypatch, prior, variance):
    """The clipped sum DP-SGD steps with equals the sum of every row's gradient clipped on its own, on Adult rows:
    some rows far above the norm bound, some below."""
    import torch

    from pipeline.config import ModelConfig
    from pipeline.train.dp_sgd import RowNorms, clipped_gradient_sum
    from pipeline.model.cvae import build_model

    table = _training_rows("adult").slice(0, 64)
    encoder = fit_table([table], ["income"], EncoderConfig())
    x, c = (torch.from_numpy(m) for m in encoder.transform(table))
    torch.manual_seed(0)
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans,
                        ModelConfig(hidden=[32, 16], latent_dim=4, prior=prior, variance=variance))
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # the same z in both computations
    beta = 0.7
    reference = _row_gradients(model, x, c, beta)
    norms = torch.cat([g.reshape(len(x), -1) for g in reference.values()], 1).norm(dim=1)
    max_norm = float(norms.median())  # half the rows clipped, half not
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    expected = {name: torch.einsum("n,n...->...", factor, g) for name, g in reference.items()}

    clipped_gradient_sum(model, RowNorms(model), x, c, beta, max_norm)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-4, atol=1e-5), name


def _training_rows(name: str) -> pa.Table:
    return pq.read_table(BUNDLED_DATA / f"{name}.parquet")


def _private(table: pa.Table, conditions: list[str], seed: int, epsilon: float = 1.0, public: tuple = ()):
    return fit_table(table.to_batches(max_chunksize=5_000), conditions, EncoderConfig(),
                            private=PrivateFit(epsilon, 1e-6, seed, public))


@pytest.mark.parametrize("name, conditions, public", [("adult", ["income"], ("sex",)),
                                                      ("pizzaplace", ["type"], ()),
                                                      ("nuclides", ["is_stable"], ())])
def test_a_private_encoder_stores_no_exact_statistic(name, conditions, public):
    """Two noise seeds give different values for every stored statistic of every column not declared public
    (so each passed through noise), a public column is fitted exactly, and no kept category or condition
    combination is rare."""
    table = _training_rows(name)
    exact = fit_table(table.to_batches(max_chunksize=5_000), conditions, EncoderConfig())
    first, second = _private(table, conditions, seed=1, public=public), _private(table, conditions, seed=2, public=public)
    noise = first.privacy
    assert noise["sigma"] > 0 and noise["public"] == list(public)
    checked = 0
    for column in table.column_names:
        a, b = first.codecs[column].to_dict(), second.codecs[column].to_dict()
        if column in public:
            assert a == exact.codecs[column].to_dict() == b
            continue
        if first.codecs[column].kind == "categorical":
            if a["categories"]:
                assert a["frequencies"] != b["frequencies"], column
            counts = dict(zip(*(pc.value_counts(pc.drop_null(table.column(column))).flatten())))
            counts = {value.as_py(): count.as_py() for value, count in counts.items()}
            for value in a["categories"] + a["tail_values"]:  # kept: frequent well beyond chance
                assert counts[value] >= noise["threshold"] - 6 * noise["sigma"], (column, value, counts[value])
            assert a["has_other"]
        elif first.codecs[column].kind in ("integer", "continuous", "list"):
            one_value = all(len(knots["values"]) == 1 for knots in a["knots"])  # only one grid bin passed the noise
            assert a["knots"] != b["knots"] or one_value, column
            assert a["null_rate"] != b["null_rate"] or a["null_rate"] in (0.0, 1.0), column  # 0: noise clipped
        else:
            assert first.codecs[column].kind == "id" and a["prefix"] in (None, "syn-")
            if a["start"] is not None:
                assert a["start"] == 10 ** 18  # from the type, not the training values
        checked += 1
    assert checked == table.num_columns - len(public)
    exact_counts = {tuple(entry["values"]): entry["count"] for entry in exact.condition_distribution}
    noisy_counts = {tuple(entry["values"]): entry["count"] for entry in first.condition_distribution}
    assert noisy_counts and noisy_counts != exact_counts
    assert all(exact_counts[combo] >= noise["threshold"] - 6 * noise["sigma"] for combo in noisy_counts)


def test_a_private_fit_is_reproducible_and_recognises_ids_by_noisy_counts():
    table = _training_rows("pizzaplace")
    assert _private(table, ["type"], seed=3).to_json() == _private(table, ["type"], seed=3).to_json()
    kinds = _private(table, ["type"], seed=3).kinds()
    assert kinds["id"] == "id"  # 21,350 order ids: no value passes the threshold
    assert kinds["name"] == "categorical" and kinds["date"] == "integer" and kinds["time"] == "integer"


def test_a_condition_value_dropped_for_privacy_is_a_one_line_error():
    table = _training_rows("adult")
    encoder = _private(table, ["native-country"], seed=0, epsilon=0.5)
    kept = encoder.codecs["native-country"].categories
    assert "United-States" in kept and "Holand-Netherlands" not in kept  # one row in the table
    plan = GenerateConfig(conditions={"native-country": {"Holand-Netherlands": 10}})
    with pytest.raises(UserError) as raised:
        build_plan(plan, encoder, {})
    message = str(raised.value)
    assert "\n" not in message and "differentially private" in message and "train.privacy.epsilon" in message
    assert build_plan(GenerateConfig(conditions={"native-country": {"United-States": 5}}), encoder, {}).num_rows == 5


def test_privacy_settings_are_validated_at_the_edge():
    with pytest.raises(UserError, match="train.privacy.epsilon: required"):
        load_config(None, ["train.privacy.noise_multiplier=1.0"])
    with pytest.raises(UserError, match="early_stopping_patience: not available"):
        load_config(None, ["train.privacy.epsilon=4", "train.early_stopping_patience=2"])
    with pytest.raises(UserError, match="train.privacy.epsilon"):
        load_config(None, ["train.privacy.epsilon=-1"])


# ---- private training on a real Ray cluster, tracked in MLflow -------------------------------------------------

def _private_config(workdir, *overrides):
    return load_config(None, [f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow.db", "train.num_workers=2",
                              "model.hidden=[64, 64]", "model.latent_dim=8", "train.privacy.noise_multiplier=1.0",
                              "train.privacy.noise_seed=11", *overrides])


def _checkpoint_files(outcome) -> dict:
    from pathlib import Path
    folder = Path(outcome.checkpoint_dir)
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


@pytest.mark.slow
def test_private_training_stops_before_the_target_and_the_guarantee_travels(ray_cluster, workdir):
    """Noise 1.0 on Adult spends 2.28 of the 2.4 DP-SGD epsilon in two epochs and 2.51 in three: training stops
    after two of five. The guarantee is in the model's files, on the run and version as tags, per epoch as the
    `epsilon` metric, and in the manifest of data generated from it."""
    import json

    from mlflow.tracking import MlflowClient

    from pipeline.artifact import privacy_guarantee
    from pipeline.generate.driver import generate
    from pipeline.privacy import sgd_epsilon
    from pipeline.train.driver import train

    config = _private_config(workdir, "train.epochs=5", "train.privacy.epsilon=3", "train.name=dp-stop",
                             "mlflow.model_name=dp-stop")
    outcome = train(config)
    guarantee = privacy_guarantee(_checkpoint_files(outcome))
    history = [tuple(segment) for segment in guarantee["history"]]
    assert len(history) == 2 and guarantee["epsilon"] <= 3.0
    sgd_target = 3.0 - guarantee["statistics_epsilon"]
    assert sgd_epsilon([*history, history[-1]], guarantee["delta"] - guarantee["statistics_delta"]) > sgd_target

    client = MlflowClient(config.mlflow.tracking_uri)
    spent = [m.value for m in sorted(client.get_metric_history(outcome.run_id, "epsilon"), key=lambda m: m.step)]
    assert len(spent) == 2 and spent[0] < spent[1] == pytest.approx(guarantee["epsilon"])
    assert not client.get_metric_history(outcome.run_id, "loss")  # computed from training rows without noise
    run = client.get_run(outcome.run_id)
    version = client.get_model_version("dp-stop", outcome.version)
    for tags in (run.data.tags, version.tags):
        assert float(tags["privacy.epsilon"]) == pytest.approx(guarantee["epsilon"], rel=1e-5)
        assert float(tags["privacy.delta"]) == pytest.approx(guarantee["delta"], rel=1e-5)
        assert tags["privacy.accountant"].startswith("rdp (opacus")
    assert run.data.params["train.privacy.noise_seed"] == "***"

    generate(load_config(None, [f"mlflow.tracking_uri={config.mlflow.tracking_uri}", "generate.num_rows=500",
                                "generate.model_uri=models:/dp-stop/1", f"generate.output={workdir}/dp-out"]))
    manifest = json.loads((workdir / "dp-out" / "_manifest.json").read_text())
    assert manifest["differential_privacy"]["epsilon"] == pytest.approx(guarantee["epsilon"])
    assert manifest["value_protection"]["noisy_statistics"]["sigma"] > 0


PRIVATE_JOB = ("train.keep_checkpoints=10", "model.hidden=[64]", "train.privacy.epsilon=8",
               "train.lr_schedule=constant")  # constant: a job resumed for more epochs steps as one trained for all


@pytest.fixture(scope="module")
def resumed_private_job(ray_cluster, tmp_path_factory):
    """A private job trained for three epochs, then resumed for a fourth: (its folder, the first outcome, the
    resumed one, its MLflow store). The resumed test reads its accounting; the killed-worker test compares its
    weights epoch by epoch."""
    from pipeline.train.driver import train

    workdir = tmp_path_factory.mktemp("dp-resumed")
    def run(epochs):
        return train(_private_config(workdir, *PRIVATE_JOB, f"train.epochs={epochs}", "train.name=dp-a",
                                     "mlflow.model_name=dp-a", f"train.storage_path={workdir}/runs"))

    first = run(3)
    first_files = _checkpoint_files(first)
    resumed = run(4)
    return workdir / "runs" / "dp-a", first, first_files, resumed, f"sqlite:///{workdir}/mlflow.db"


@pytest.mark.slow
def test_a_resumed_private_job_adds_to_its_epsilon(resumed_private_job):
    """Resuming the job for one more epoch continues its accounting (the fourth segment adds to the first three)
    and keeps its encoder (no second statistics spend). That resuming gives the weights an uninterrupted run has
    is proven epoch by epoch in test_a_killed_private_worker_resumes_its_accounting."""
    from mlflow.tracking import MlflowClient

    from pipeline.artifact import privacy_guarantee
    from pipeline.privacy import sgd_epsilon

    _, first, a, resumed, tracking = resumed_private_job
    assert resumed.run_id == first.run_id
    c = _checkpoint_files(resumed)
    assert c["encoder.json"] == a["encoder.json"]  # the job's encoder, fitted once
    once, twice = privacy_guarantee(a), privacy_guarantee(c)
    assert len(once["history"]) == 3 and len(twice["history"]) == 4 and twice["history"][:3] == once["history"]
    sgd_delta = twice["delta"] - twice["statistics_delta"]
    assert twice["sgd_epsilon"] == pytest.approx(sgd_epsilon([tuple(s) for s in twice["history"]], sgd_delta))
    assert twice["epsilon"] > once["epsilon"]
    client = MlflowClient(tracking)
    spent = sorted(client.get_metric_history(first.run_id, "epsilon"), key=lambda m: m.step)
    assert [m.step for m in spent] == [0, 1, 2, 3] and spent[3].value == pytest.approx(twice["epsilon"])
    version_tags = client.get_model_version("dp-a", first.version).tags  # registered from the first checkpoint
    assert float(version_tags["privacy.epsilon"]) == pytest.approx(once["epsilon"], rel=1e-5)
    assert float(client.get_run(first.run_id).data.tags["privacy.epsilon"]) == pytest.approx(twice["epsilon"], rel=1e-5)


@pytest.mark.slow
def test_a_killed_private_worker_resumes_its_accounting(ray_cluster, workdir, monkeypatch, capsys,
                                                        resumed_private_job):
    """SIGKILL a worker of a private run after two epochs. Ray Train records the failed attempt and starts a new
    worker group, which continues from the last checkpoint: the user is told once; each epoch is computed, logged
    and accounted once (no reset, no double count of the epoch the kill cut short), the total stays within the
    target, and the weights after every epoch equal those of the same job run without a kill (the noise and the
    sampling of each epoch are drawn again as before): the new workers started from the checkpoint's weights and
    optimizer state. (The same job without privacy resumes by the same code: one test proves both.)"""
    from mlflow.tracking import MlflowClient
    from test_train import checkpoints, kill_a_worker_after, same_weights, train_attempts, weights

    from pipeline.privacy import sgd_epsilon
    from pipeline.train.driver import train

    monkeypatch.setenv("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    config = _private_config(workdir, *PRIVATE_JOB, "train.epochs=4", "train.max_failures=2", "train.name=dp-fault",
                             "mlflow.model_name=dp-fault")
    client = MlflowClient(config.mlflow.tracking_uri)
    killed = {}
    killer = kill_a_worker_after(client, "dp-fault", "epsilon", 2, killed)
    outcome = train(config)
    killer.join()

    assert killed and 2 <= len(killed["steps"]) < 4, killed  # the kill landed mid-training
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: training worker")]
    assert len(said) == 1 and "restarts from the last checkpoint" in said[0], said  # the user is told, once
    assert not Path(f"/proc/{killed['pid']}").exists()
    attempts = train_attempts("dp-fault")
    assert [a.status for a in attempts] == ["ERRORED", "FINISHED"], [(a.status, a.status_detail) for a in attempts]
    assert killed["pid"] in {w.pid for w in attempts[0].workers}
    assert killed["pid"] not in {w.pid for w in attempts[1].workers}
    saved = checkpoints(workdir / "runs" / "train" / "dp-fault")
    assert [progress["epoch"] for _, progress, _ in saved] == [0, 1, 2, 3]
    restarted = attempts[1].start_time_ns  # the second worker group computed the epochs after the last checkpoint
    first = sum(written < restarted for _, _, written in saved)
    assert all(written >= restarted for _, _, written in saved[first:]), [(p["epoch"], w) for _, p, w in saved]
    assert len(killed["steps"]) <= first < 4, (killed, first)
    assert saved[-1][1]["history"][:first] == saved[first - 1][1]["history"]  # carried over, not redone
    assert sorted(m.step for m in client.get_metric_history(outcome.run_id, "epoch_seconds")) == [0, 1, 2, 3]
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert [str(v.version) for v in client.search_model_versions("name = 'dp-fault'")] == ["1"]
    for _, progress, _ in saved:  # each checkpoint accounts for exactly the epochs it holds
        assert len(progress["privacy_history"]) == progress["epoch"] + 1
    final = privacy_guarantee_of(saved[-1][0])
    sgd_delta = final["delta"] - final["statistics_delta"]
    assert final["sgd_epsilon"] == pytest.approx(sgd_epsilon([tuple(s) for s in final["history"]], sgd_delta))
    assert len(final["history"]) == 4 and final["epsilon"] <= 8.0
    spent = sorted(client.get_metric_history(outcome.run_id, "epsilon"), key=lambda m: m.step)
    assert [m.step for m in spent] == [0, 1, 2, 3] and spent[-1].value == pytest.approx(final["epsilon"])

    reference = {p["epoch"]: folder for folder, p, _ in checkpoints(resumed_private_job[0])}
    assert sorted(reference) == [0, 1, 2, 3]
    for folder, progress, _ in saved:
        assert same_weights(weights(folder), weights(reference[progress["epoch"]])), progress["epoch"]
    # two jobs, one seed and noise seed: the same private encoder from the distributed fit, noisy counts included
    assert (saved[-1][0] / "encoder.json").read_text() == (reference[3] / "encoder.json").read_text()


def privacy_guarantee_of(folder) -> dict:
    import json
    return json.loads((folder / "privacy.json").read_text())
