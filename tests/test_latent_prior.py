"""The latent mixture fitted after training (pipeline/model/latent_prior.py) and the training plan's defaults
(auto epochs, cosine learning rate): what a user sees in generated rows and in a saved model."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline.artifact import load_artifact, save_artifact
from pipeline.config import load_config
from pipeline.model.latent_prior import collect_codes, fit_mixture, keep_row
from pipeline.model.cvae import CVAE, CVAEConfig, combination_of
from pipeline.model.sampling import synthesize
from pipeline.train.driver import AUTO_MIN_EPOCHS, EpochSchedule, epoch_schedule
from pipeline.train.worker import lr_for_epoch

SPANS = [{"column": "a", "kind": "gaussian", "start": 0, "width": 1},
         {"column": "b", "kind": "gaussian", "start": 1, "width": 1}]


def clusters(seed=0):
    """Codes of three condition combinations: 600 rows around +5, 300 around -5 (two tight halves), 50 rows."""
    rng = np.random.default_rng(seed)
    conditions = np.repeat(np.eye(3), [600, 300, 50], axis=0)
    means = np.concatenate([rng.normal(5, 1, (600, 4)),
                            np.concatenate([rng.normal(-7, 0.3, (150, 4)), rng.normal(-3, 0.3, (150, 4))]),
                            rng.normal(0, 1, (50, 4))])
    return conditions, means, np.full_like(means, 0.01)


def model_with(mixture) -> CVAE:
    torch.manual_seed(0)
    return CVAE(CVAEConfig(x_dim=2, c_dim=3, spans=SPANS, latent_dim=4, hidden=[8])).with_mixture(mixture)


def test_codes_are_drawn_where_each_combination_put_them():
    """Rows of a combination get codes from its own components (both halves of a bimodal one, nothing between);
    a combination with fewer rows than a component needs keeps the prior p(z|c)."""
    model = model_with(fit_mixture(*clusters(), max_components=4, seed=0))
    c = torch.from_numpy(np.repeat(np.eye(3), 20_000, axis=0)).float()
    z = model.latent(c, torch.Generator().manual_seed(1)).detach()
    first, second, small = z[:20_000, 0], z[20_000:40_000, 0], z[40_000:, 0]
    assert abs(first.mean() - 5) < 0.1 and abs(first.std() - 1) < 0.1
    assert abs((second < -5).double().mean() - 0.5) < 0.03  # both modes, equally often
    assert ((second > -5.5) & (second < -4.5)).double().mean() < 0.01  # not the gap between them
    mu_p, logvar_p = model.prior(c[40_000:41_000])
    assert combination_of(c[40_000:41_000], model.mixture_keys).eq(-1).all()
    assert abs(small.mean() - mu_p[:, 0].mean()) < 0.1  # from p(z|c)


def test_a_large_combination_gets_a_cluster_per_hundred_rows_that_follows_its_codes():
    """12,000 codes on a ring (a shape 20 EM components would smooth): one component per 100 rows, draws on the
    ring at the codes' density, none in its empty middle."""
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, 12_000)
    means = np.stack([np.cos(angle), np.sin(angle), rng.normal(0, 0.05, 12_000), rng.normal(0, 0.05, 12_000)], 1)
    mixture = fit_mixture(np.zeros((12_000, 1)), means, np.full_like(means, 1e-4), max_components=20, seed=0)
    assert mixture.components == 120
    model = CVAE(CVAEConfig(x_dim=2, c_dim=1, spans=SPANS, latent_dim=4, hidden=[8])).with_mixture(mixture)
    z = model.latent(torch.zeros(50_000, 1), torch.Generator().manual_seed(0)).detach().numpy()
    radius = np.hypot(z[:, 0], z[:, 1])
    assert np.abs(radius - 1).mean() < 0.1 and (radius < 0.5).mean() < 0.002
    assert np.abs(np.histogram(np.arctan2(z[:, 1], z[:, 0]), 8)[0] / 50_000 - 1 / 8).max() < 0.01


def test_no_component_sits_on_a_few_rows():
    """Ten outlying rows among a thousand: no component is fitted to them, and no draw lands near them."""
    rng = np.random.default_rng(0)
    means = np.concatenate([rng.normal(0, 1, (1000, 4)), rng.normal(50, 0.1, (10, 4))])
    mixture = fit_mixture(np.zeros((1010, 1)), means, np.full_like(means, 0.01), max_components=10, seed=0)
    assert mixture is not None and (mixture.means.abs() < 10).all()
    z = CVAE(CVAEConfig(x_dim=2, c_dim=1, spans=SPANS, latent_dim=4, hidden=[8])).with_mixture(mixture).latent(
        torch.zeros(50_000, 1), torch.Generator().manual_seed(0))
    assert z.abs().max() < 25


def test_the_fit_does_not_depend_on_row_order_or_batches():
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(x_dim=2, c_dim=3, spans=SPANS, latent_dim=4, hidden=[8]))
    x = torch.randn(3000, 2)
    c = torch.from_numpy(np.repeat(np.eye(3), 1000, axis=0)).float()
    order = torch.randperm(3000)
    fits = []
    for rows, size in ((torch.arange(3000), 500), (order, 777)):
        batches = [(x[rows[i:i + size]], c[rows[i:i + size]]) for i in range(0, 3000, size)]
        fits.append(fit_mixture(*collect_codes(model, batches, rows=3000, seed=0), max_components=5, seed=0))
    for name in ("keys", "owner", "weights", "means", "scale_tril"):
        torch.testing.assert_close(getattr(fits[0], name), getattr(fits[1], name))


def test_a_large_table_is_sampled_evenly():
    """Past MAX_CODES rows the fit keeps a share of them by a hash of their values: about that share, and rows of
    every kind alike (negative and positive values too)."""
    rows = torch.randn(200_000, 5, generator=torch.Generator().manual_seed(0))
    kept = keep_row(rows[:, :3], rows[:, 3:], 0.25, seed=0)
    assert abs(kept.double().mean() - 0.25) < 0.01
    for column in range(5):
        assert abs(kept[rows[:, column] < 0].double().mean() - kept[rows[:, column] >= 0].double().mean()) < 0.01


def test_a_large_tables_codes_are_a_fair_sample_of_rows_with_nulls_and_point_masses(adult):
    """Adult grown past MAX_CODES rows, encoded as training encodes it (NaN where a row is null or at a point
    mass: capital-gain is 0 in 92% of rows, workclass and occupation null in 6%): the rows whose codes the mixture
    is fitted on hold nulls and point masses as often as the table does."""
    from pipeline.codec import fit_table
    from pipeline.config import EncoderConfig
    from pipeline.model.latent_prior import MAX_CODES

    table = pa.concat_tables([adult, adult, adult])  # 146,526 rows
    encoder = fit_table(adult.to_batches(), ["income"], EncoderConfig())
    x, c = map(torch.from_numpy, encoder.transform(table))
    share = MAX_CODES / len(x)
    kept = keep_row(x, c, share, seed=0)
    assert abs(kept.double().mean() - share) < 0.01
    gaps = x.isnan()
    mixed = [j for j in range(x.shape[1]) if 0.01 < gaps[:, j].double().mean() < 0.99]
    assert len(mixed) >= 3, "columns with and without values"
    for j in mixed:
        assert abs(kept[gaps[:, j]].double().mean() - kept[~gaps[:, j]].double().mean()) < 0.02


def test_a_saved_model_keeps_its_mixture(tmp_path, adult):
    """The mixture travels in the artifact's weights: a reloaded model gives the same rows for the same seed."""
    from pipeline.config import EncoderConfig
    from pipeline.codec import fit_table
    from pipeline.model.cvae import build_model
    from pipeline.config import ModelConfig

    table = adult.slice(0, 3000)
    encoder = fit_table(table.to_batches(), ["income"], EncoderConfig())
    x, c = map(torch.from_numpy, encoder.transform(table))
    torch.manual_seed(0)
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, ModelConfig(hidden=[32], latent_dim=4))
    mixture = fit_mixture(*collect_codes(model, [(x, c)], rows=3000, seed=0), max_components=3, seed=0)
    assert mixture.combinations == 2  # both income values hold hundreds of rows
    model = model.with_mixture(mixture)
    save_artifact(tmp_path, model, encoder.to_json())
    reloaded, encoder_again = load_artifact(tmp_path)
    requested = table.select(["income"]).slice(0, 500)
    first = synthesize(model, encoder, requested, seed=4)
    assert first.equals(synthesize(reloaded, encoder_again, requested, seed=4))
    assert pc.all(pc.equal(first["income"], requested["income"])).as_py()


def test_auto_epochs_give_small_tables_as_many_steps_as_large_ones():
    """About 3,000 optimizer steps whatever the table's size; a small table's epoch is several passes over it, so
    that the per-epoch report and checkpoint do not outweigh its steps."""
    def plan(rows: int, *overrides: str) -> EpochSchedule:
        return epoch_schedule(load_config(None, list(overrides)), rows)

    assert plan(48_842) == EpochSchedule(69, 1)  # Adult: 44k training rows, 2 workers of 500-row batches: 44 steps a pass
    assert plan(1_461) == EpochSchedule(75, 20)  # seattle-weather: 2 steps a pass, 40 an epoch
    assert plan(20_000_000) == EpochSchedule(AUTO_MIN_EPOCHS, 1)
    assert plan(1_461, "train.epochs=3") == EpochSchedule(3, 1)  # a number is taken as given
    assert plan(1_461, "train.privacy.epsilon=4") == EpochSchedule(AUTO_MIN_EPOCHS, 1)  # accounted per pass


def test_cosine_learning_rate_falls_from_lr_to_near_zero():
    rates = [lr_for_epoch(0.01, "cosine", epoch, 10) for epoch in range(10)]
    assert rates == sorted(rates, reverse=True) and 0.0099 < rates[0] < 0.01 and rates[-1] < 0.0003
    assert lr_for_epoch(0.01, "constant", 9, 10) == 0.01
