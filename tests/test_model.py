import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pipeline.config import BUNDLED_DATA, EncoderConfig, ModelConfig
from pipeline.codec import TableEncoder, fit_table
from pipeline.model.sampling import synthesize
from pipeline.model.cvae import CVAE, CVAEConfig, build_model, kl_diag_gaussians
from pipeline.train.worker import beta_for_epoch, run_epoch, validate

CONDITIONS = ["income", "race", "native-country"]


def test_kl_closed_form_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(64, 8, generator=gen), torch.randn(64, 8, generator=gen)
    logvar_q, logvar_p = torch.randn(64, 8, generator=gen), torch.randn(64, 8, generator=gen)
    expected = kl_divergence(Normal(mu_q, (0.5 * logvar_q).exp()), Normal(mu_p, (0.5 * logvar_p).exp())).sum(-1)
    torch.testing.assert_close(kl_diag_gaussians(mu_q, logvar_q, mu_p, logvar_p), expected)


def test_conditional_kl_reduces_to_standard_kl_under_the_standard_prior():
    gen = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(32, 4, generator=gen), torch.randn(32, 4, generator=gen)
    standard = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(-1)
    zeros = torch.zeros_like(mu)
    torch.testing.assert_close(kl_diag_gaussians(mu, logvar, zeros, zeros), standard)
    model = CVAE(CVAEConfig(x_dim=3, c_dim=2, spans=[{"column": "a", "kind": "gaussian", "start": i, "width": 1}
                                                     for i in range(3)], prior="standard"))
    prior_mu, prior_logvar = model.prior(torch.ones(5, 2))
    assert not prior_mu.any() and not prior_logvar.any()


def test_kl_warmup_ramps_beta():
    config = ModelConfig(beta=2.0, kl_warmup_epochs=4)
    assert [beta_for_epoch(config, e) for e in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def loader(x, c, batch_size=500, seed=None):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) if seed is not None else torch.arange(len(x))
    return [(x[order[i:i + batch_size]], c[order[i:i + batch_size]]) for i in range(0, len(x), batch_size)]


@pytest.fixture(scope="module")
def fitted(adult):
    """A short single-process fit on Adult; returns what the tests below inspect."""
    torch.manual_seed(0)
    order = np.random.default_rng(0).permutation(adult.num_rows)
    train, holdout = adult.take(order[5000:]), adult.take(order[:5000])
    encoder = fit_table(train.to_batches(), CONDITIONS, EncoderConfig())
    x, c = map(torch.from_numpy, encoder.transform(train))
    xv, cv = map(torch.from_numpy, encoder.transform(holdout))
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, ModelConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = [validate(model, loader(xv, cv))["val_elbo"]]
    for epoch in range(3):
        run_epoch(model, optimizer, loader(x, c, seed=epoch), beta=1.0)
        history.append(validate(model, loader(xv, cv))["val_elbo"])
    return model, encoder, history


def test_short_fit_raises_the_validation_elbo(fitted):
    _, _, history = fitted
    assert all(later > earlier for earlier, later in zip(history, history[1:])), history


def condition_rows(n, income="<=50K", race="White", country="United-States"):
    return pa.table({"income": [income] * n, "race": [race] * n, "native-country": [country] * n})


@pytest.mark.parametrize("column,value", [("income", ">50K"), ("race", "Amer-Indian-Eskimo"),
                                          ("native-country", "Holand-Netherlands")])
def test_samples_hold_rare_conditions_in_every_row(fitted, adult, column, value):
    model, encoder, _ = fitted
    requested = condition_rows(2000, **{{"native-country": "country"}.get(column, column): value})
    rows = synthesize(model, encoder, requested, seed=3)
    assert rows.schema == adult.schema
    assert rows.num_rows == 2000
    assert pc.all(pc.equal(rows.column(column), value)).as_py()


def test_condition_moves_the_generated_distribution(fitted, adult):
    """Real >50K earners have ~2 more years of education; the samples must show the same direction."""
    model, encoder, _ = fitted
    rich = synthesize(model, encoder, condition_rows(5000, income=">50K"), seed=1)
    poor = synthesize(model, encoder, condition_rows(5000, income="<=50K"), seed=1)
    gap = pc.mean(rich["education-num"]).as_py() - pc.mean(poor["education-num"]).as_py()
    assert gap > 0.8, gap


def test_sampling_is_deterministic_per_seed(fitted):
    model, encoder, _ = fitted
    first = synthesize(model, encoder, condition_rows(300), seed=7)
    assert first.equals(synthesize(model, encoder, condition_rows(300), seed=7))
    assert not first.equals(synthesize(model, encoder, condition_rows(300), seed=8))


def test_weights_and_hyperparameters_reload_without_pickle(fitted):
    model, encoder, _ = fitted
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    hparams = json.loads(json.dumps(model.config.to_dict()))
    clone = CVAE(CVAEConfig(**hparams))
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    expected = synthesize(model, encoder, condition_rows(100), seed=2)
    assert synthesize(clone, TableEncoder.from_json(encoder.to_json()), condition_rows(100), seed=2).equals(expected)


@pytest.mark.parametrize("prior,variance", [("standard", "fixed"), ("standard", "learned"), ("conditional", "fixed")])
def test_every_prior_and_variance_trains(adult, prior, variance):
    torch.manual_seed(0)
    table = adult.slice(0, 4000)
    encoder = fit_table(table.to_batches(), ["income"], EncoderConfig())
    x, c = map(torch.from_numpy, encoder.transform(table))
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans,
                        ModelConfig(prior=prior, variance=variance, hidden=[64], latent_dim=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = validate(model, loader(x, c))["val_elbo"]
    for epoch in range(2):
        metrics = run_epoch(model, optimizer, loader(x, c, seed=epoch), beta=1.0)
    assert np.isfinite(metrics["loss"])
    assert validate(model, loader(x, c))["val_elbo"] > before


def test_categories_are_drawn_with_their_softmax_probabilities_in_every_span():
    """All spans drawn at once must still follow each span's own softmax, whatever the other spans' logits
    (here one span sits 100 below the others: weights are per span, nothing underflows)."""
    spans = [{"column": "a", "kind": "gaussian", "start": 0, "width": 1},
             {"column": "b", "kind": "softmax", "start": 1, "width": 3},
             {"column": "c", "kind": "softmax", "start": 4, "width": 5},
             {"column": "d", "kind": "bernoulli", "start": 9, "width": 1},
             {"column": "e", "kind": "softmax", "start": 10, "width": 2}]
    model = CVAE(CVAEConfig(x_dim=12, c_dim=2, spans=spans, latent_dim=4, hidden=[8]))
    rows = 200_000
    out = torch.zeros(rows, 12)
    out[:, 1:4] = torch.tensor([0.0, 1.0, 2.0])
    out[:, 4:9] = torch.tensor([50.0, 49.0, 48.0, -30.0, 10.0])
    out[:, 10:12] = torch.tensor([-100.0, -101.0])
    drawn = model.draw_categories(out, torch.Generator().manual_seed(0))
    for j, (start, width) in enumerate(model.softmax_spans):
        share = torch.bincount(drawn[:, j] - start, minlength=width).double() / rows
        expected = torch.softmax(out[0, start:start + width].double(), dim=0)
        assert len(share) == width  # never a column outside the span
        assert ((share - expected).abs() <= 5 * (expected * (1 - expected) / rows).sqrt() + 1e-9).all(), (share, expected)


def test_a_timestamp_condition_brings_its_daily_and_seasonal_cycles():
    """sf-temps (hourly San Francisco temperatures, one year) conditioned on its timestamp: rows generated for
    held-out hours are warmer in the afternoon than at night and in late summer than in winter, as the real ones."""
    table = pq.read_table(BUNDLED_DATA / "sf-temps.parquet")
    order = np.random.default_rng(0).permutation(table.num_rows)
    train, holdout = table.take(order[1500:]), table.take(order[:1500])
    torch.manual_seed(0)
    encoder = fit_table(train.to_batches(), ["date"], EncoderConfig())
    x, c = map(torch.from_numpy, encoder.transform(train))
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, ModelConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(40):
        run_epoch(model, optimizer, loader(x, c, seed=epoch), beta=1.0)
    generated = synthesize(model, encoder, holdout.select(["date"]), seed=0).to_pandas()
    real = holdout.to_pandas()
    for cycle in ("hour", "month"):
        real_profile = real.groupby(getattr(real["date"].dt, cycle))["temp"].mean()
        generated_profile = generated.groupby(getattr(generated["date"].dt, cycle))["temp"].mean()
        assert np.corrcoef(real_profile, generated_profile)[0, 1] > 0.9, (cycle, real_profile, generated_profile)
        assert (generated_profile - real_profile).abs().mean() < 1.5, (cycle, real_profile, generated_profile)


def test_a_numeric_element_with_no_value_adds_nothing_to_the_loss_or_its_gradients():
    """A null or point-mass row is NaN in its Gaussian element: the loss must skip it (so sigma fits only the
    values the column has) and no NaN may reach a gradient."""
    spans = [{"column": name, "kind": "gaussian", "start": i, "width": 1} for i, name in enumerate("ab")]
    model = CVAE(CVAEConfig(x_dim=2, c_dim=1, spans=spans, hidden=[8], latent_dim=2))
    x = torch.tensor([[float("nan"), 1.0], [0.5, float("nan")]])
    out = torch.randn(2, 2, requires_grad=True)
    nll = model.reconstruction(out, x)
    sigma = model.sigma()
    expected = torch.stack([(0.5 * ((x[i, j] - out[i, j]) / sigma[j]) ** 2 + sigma[j].log()
                             + 0.5 * np.log(2 * np.pi)) for i, j in ((0, 1), (1, 0))])
    torch.testing.assert_close(nll, expected)
    nll.sum().backward()
    assert out.grad[0, 0] == 0 and out.grad[1, 1] == 0 and torch.isfinite(out.grad).all()
    model.zero_grad()
    model(x, torch.zeros(2, 1))["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
