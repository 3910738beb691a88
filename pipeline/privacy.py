"""Differential privacy: the budget split, noisy encoder statistics, and the DP-SGD accountant.

The guarantee is (epsilon, delta)-DP for adding or removing one training row, for everything a private model
holds: its weights (DP-SGD, accounted by Opacus's RDP accountant) and its encoder (Gaussian noise on every
count it is fitted from). The two parts compose sequentially, so their epsilons and deltas add:

    epsilon = statistics_epsilon + sgd_epsilon        (statistics_share of the budget goes to the statistics)

Encoder statistics are histograms in which every row adds one to one bin (a value, a null, a condition
combination, a numeric bin). All histograms together have L2 sensitivity sqrt(H) for H histograms, so Gaussian
noise of std sigma on every count is rho = H / (2 sigma^2) zero-concentrated DP, which converts to
(rho + 2 sqrt(rho ln(1/delta_g)), delta_g)-DP. Histograms keyed by values seen in the data (categories and
condition combinations) keep a key only when its noisy count reaches a threshold tau: a value only one row
holds passes with probability at most delta_s / (2 x keyed histograms), the rest of the statistics' delta.
Numbers get two histograms: a coarse one on a fixed geometric grid for their private bounds, then a fine one
between those bounds for their quantiles (a second read of the training split).

The training row count is treated as public: it sets the sampling rate, as it does in Opacus.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtri

from pipeline.config import PrivacyConfig
from pipeline.errors import UserError

ACCOUNTANT = "rdp"
DEFAULT_MAX_DELTA = 1e-5
MAX_NOISE_MULTIPLIER = 1_000.0

# the coarse grid: 0, then +-[2^e (1 + s/SUB), 2^e (1 + (s+1)/SUB)) for e in [MIN_EXP, MAX_EXP), s < SUB
GRID_SUB = 4
GRID_MIN_EXP, GRID_MAX_EXP = -20, 64
GRID_SIDE = (GRID_MAX_EXP - GRID_MIN_EXP) * GRID_SUB
GRID_BINS = 2 * GRID_SIDE + 1  # negative bins, zero, positive bins: bin order is value order
FINE_BINS = 64                 # linear bins between the private bounds
FINE_INTEGERS = 256            # an integer range up to this wide gets one bin per integer (exact values)
FALSE_BIN_RATE = 0.05          # a post-processing cut: the chance that any empty grid bin passes it


@dataclass(frozen=True)
class Budget:
    """The target split into the encoder statistics' share and DP-SGD's."""
    epsilon: float
    delta: float
    statistics_epsilon: float
    statistics_delta: float

    @property
    def sgd_epsilon(self) -> float:
        return self.epsilon - self.statistics_epsilon

    @property
    def sgd_delta(self) -> float:
        return self.delta - self.statistics_delta


def budget(config: PrivacyConfig, rows: int) -> Budget:
    """`train.privacy` for a training split of `rows` rows; delta defaults to 1 / (10 rows), at most 1e-5."""
    delta = config.delta if config.delta is not None else min(DEFAULT_MAX_DELTA, 1.0 / (10 * max(rows, 1)))
    return Budget(config.epsilon, delta, config.epsilon * config.statistics_share, delta * config.statistics_share)


@dataclass(frozen=True)
class PrivateFit:
    """What a private encoder fit spends: the statistics' share of the budget, the secret noise seed, and the
    columns the user declared public."""
    epsilon: float
    delta: float
    seed: int
    public: tuple[str, ...] = ()


def _stream_seed(seed: int, stream: str) -> list[int]:
    return [seed, int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")]


@dataclass(frozen=True)
class StatisticsNoise:
    """Gaussian noise of std `sigma` on every count the encoder keeps, and the threshold `threshold` a key seen
    in the data must reach; `public` columns are fitted without noise (the user declared them public)."""
    sigma: float
    threshold: float
    epsilon: float
    delta: float
    histograms: int
    keyed: int
    seed: int
    public: tuple[str, ...] = ()

    def noisy(self, counts: np.ndarray, stream: str) -> np.ndarray:
        """counts + N(0, sigma^2), from a generator of its own per stream (column and purpose)."""
        rng = np.random.default_rng(_stream_seed(self.seed, stream))
        return np.asarray(counts, dtype=np.float64) + rng.normal(0.0, self.sigma, size=np.shape(counts))

    def nulls(self, count: int, column: str) -> float:
        """A column's noisy null count, clipped at 0: one draw per column, whichever codec asks for it."""
        return max(0.0, float(self.noisy(count, f"{column}/nulls")))

    def select(self, counts: dict, stream: str, at_least: float = 0.0) -> dict:
        """Keys whose noisy count reaches the threshold (and `at_least`), with their noisy counts. Keys are
        noised in a fixed order, so the same data and seed give the same result."""
        keys = sorted(counts, key=str)
        noisy = self.noisy(np.array([counts[key] for key in keys], dtype=np.float64), stream)
        cut = max(self.threshold, at_least)
        return {key: float(value) for key, value in zip(keys, noisy) if value >= cut}

    def post_cut(self, bins: int) -> float:
        """A count below this is noise with high probability: the chance that any of `bins` empty bins passes is
        FALSE_BIN_RATE. Applied to noisy counts only (post-processing: no budget)."""
        return self.sigma * float(ndtri(1.0 - FALSE_BIN_RATE / max(bins, 1)))

    def describe(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "seed"} | {"public": list(self.public)}


def statistics_noise(epsilon: float, delta: float, histograms: int, keyed: int, seed: int,
                     public: tuple[str, ...] = ()) -> StatisticsNoise:
    """The least Gaussian noise that keeps `histograms` histograms (`keyed` of them keyed by data values)
    (epsilon, delta)-DP, and the threshold keys must reach."""
    histograms = max(histograms, 1)
    delta_gaussian = delta / 2 if keyed else delta
    log_term = math.log(1.0 / delta_gaussian)
    rho = (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2  # solves epsilon = rho + 2 sqrt(rho log_term)
    sigma = math.sqrt(histograms / (2.0 * rho))
    threshold = 1.0 + sigma * float(ndtri(1.0 - delta / (2 * keyed))) if keyed else 0.0
    return StatisticsNoise(sigma, threshold, epsilon, delta, histograms, keyed, seed, tuple(public))


# ---- numbers: private bounds on a fixed grid, then private quantiles between them ------------------------------

def grid_bins(values: np.ndarray) -> np.ndarray:
    """Each value's bin on the coarse geometric grid (a function of the value alone: no data-dependent edges)."""
    magnitude = np.abs(values)
    mantissa, exponent = np.frexp(magnitude)  # magnitude = mantissa * 2^exponent, mantissa in [0.5, 1)
    octave = np.clip(exponent - 1, GRID_MIN_EXP, GRID_MAX_EXP - 1)
    within = np.clip(np.floor((magnitude / np.exp2(octave) - 1.0) * GRID_SUB), 0, GRID_SUB - 1)
    step = ((octave - GRID_MIN_EXP) * GRID_SUB + within).astype(np.int64)
    index = np.where(values > 0, GRID_SIDE + 1 + step, GRID_SIDE - 1 - step)
    return np.where(magnitude < 2.0 ** GRID_MIN_EXP, GRID_SIDE, index)


def grid_edges(index: int) -> tuple[float, float]:
    """[low, high] of a grid bin; the zero bin is exactly 0."""
    if index == GRID_SIDE:
        return 0.0, 0.0
    step = abs(index - GRID_SIDE) - 1
    octave, within = GRID_MIN_EXP + step // GRID_SUB, step % GRID_SUB
    low, high = 2.0 ** octave * (1 + within / GRID_SUB), 2.0 ** octave * (1 + (within + 1) / GRID_SUB)
    return (low, high) if index > GRID_SIDE else (-high, -low)


@dataclass(frozen=True)
class FineGrid:
    """Bins between a column's private bounds: one per integer when the range is narrow, else FINE_BINS linear
    bins, plus an exact bin for 0 when the coarse grid found many zeros (zero-inflated columns keep their 0)."""
    low: float
    high: float
    integers: bool
    zero: bool

    @property
    def bins(self) -> int:
        return (int(self.high - self.low) + 1 if self.integers else FINE_BINS) + 1  # the last: exact zeros

    def index(self, values: np.ndarray) -> np.ndarray:
        clipped = np.clip(values, self.low, self.high)
        if self.integers:
            index = np.rint(clipped - self.low).astype(np.int64)
        else:
            width = (self.high - self.low) / FINE_BINS
            index = np.minimum(((clipped - self.low) / width).astype(np.int64), FINE_BINS - 1) if width > 0 \
                else np.zeros(len(values), dtype=np.int64)
        return np.where((values == 0) & self.zero, self.bins - 1, index)

    def quantiles(self, counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Values at cumulative probabilities `probs` of a (noisy, non-negative) histogram: linear within a bin,
        exact for integer and zero bins (point masses keep their ties)."""
        if self.integers:
            low = high = self.low + np.arange(self.bins - 1, dtype=np.float64)
        else:
            edges = np.linspace(self.low, self.high, FINE_BINS + 1)
            low, high = edges[:-1], edges[1:]
        low, high, mass = np.append(low, 0.0), np.append(high, 0.0), np.asarray(counts, dtype=np.float64)
        order = np.argsort(low, kind="stable")  # the zero bin takes its place in value order
        low, high, mass = low[order], high[order], mass[order]
        cumulative = np.cumsum(mass)
        target = np.asarray(probs) * cumulative[-1]
        at = np.clip(np.searchsorted(cumulative, target, side="left"), 0, len(mass) - 1)
        start = cumulative[at] - mass[at]
        within = np.clip(np.divide(target - start, mass[at], out=np.zeros_like(target), where=mass[at] > 0), 0, 1)
        return low[at] + within * (high[at] - low[at])


def private_grid(coarse: np.ndarray, noise: StatisticsNoise, stream: str, integers: bool) -> FineGrid | None:
    """Private bounds from a coarse-grid histogram (GRID_BINS counts): the first and last bin whose noisy count
    passes the post-processing cut. None when no bin does (too few values for this budget)."""
    noisy = noise.noisy(coarse, stream)
    kept = np.flatnonzero(noisy >= noise.post_cut(GRID_BINS))
    if not len(kept):
        return None
    low, high = grid_edges(int(kept[0]))[0], grid_edges(int(kept[-1]))[1]
    if integers:
        low, high = math.floor(low), math.ceil(high)
    narrow = integers and high - low < FINE_INTEGERS
    return FineGrid(float(low), float(high), narrow, bool(noisy[GRID_SIDE] >= noise.post_cut(GRID_BINS)))


# ---- DP-SGD accounting -----------------------------------------------------------------------------------------

History = list[tuple[float, float, int]]  # (noise multiplier, sample rate, steps) segments, as Opacus keeps them


def sgd_epsilon(history: History, delta: float) -> float:
    """Epsilon that DP-SGD has spent over `history`, from Opacus's RDP accountant."""
    from opacus.accountants import RDPAccountant
    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [tuple(segment) for segment in history]
    with warnings.catch_warnings():  # "optimal order is the smallest alpha": a budget far past its target
        warnings.filterwarnings("ignore", message="Optimal order")
        return float(accountant.get_epsilon(delta))


def noise_for_budget(history: History, sample_rate: float, steps: int, epsilon: float, delta: float) -> float | None:
    """The least noise multiplier (to 1%) with which `steps` more steps after `history` stay within epsilon;
    None when even MAX_NOISE_MULTIPLIER does not (the budget is spent)."""
    def fits(sigma: float) -> bool:
        return sgd_epsilon([*history, (sigma, sample_rate, steps)], delta) <= epsilon

    high = 1.0
    while not fits(high):
        high *= 2
        if high > MAX_NOISE_MULTIPLIER:
            return None
    low = 0.0
    while high - low > 0.01 * high:
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


@dataclass(frozen=True)
class DpSgdSettings:
    """How a private epoch samples: each worker cuts its shard into chunks of `chunk_rows` rows and takes
    `steps_per_chunk` steps per chunk, each including every row of the chunk with probability `sample_rate`
    (Poisson sampling), so every row is exposed to `steps_per_chunk` steps at that rate per epoch."""
    sample_rate: float
    chunk_rows: int
    steps_per_chunk: int
    expected_batch: float  # rows a worker's step holds on average
    max_grad_norm: float
    noise_multiplier: float | None  # None: derived on the workers from the budget and the checkpoint's history
    epsilon: float                  # the whole target
    sgd_epsilon: float              # what DP-SGD may spend
    sgd_delta: float
    delta: float
    statistics_epsilon: float
    statistics_delta: float
    seed: int


def dp_sgd_settings(config: PrivacyConfig, spend: Budget, shard_rows: int, chunk_cap: int, batch_size: int,
             seed: int) -> DpSgdSettings:
    """Chunks as large as the worker's feed allows (the whole shard when it fits: plain Poisson sampling)."""
    chunk_rows = max(1, min(chunk_cap, shard_rows))
    sample_rate = min(1.0, batch_size / chunk_rows)
    return DpSgdSettings(sample_rate, chunk_rows, max(1, round(1.0 / sample_rate)), sample_rate * chunk_rows,
                   config.max_grad_norm, config.noise_multiplier, spend.epsilon, spend.sgd_epsilon, spend.sgd_delta,
                   spend.delta, spend.statistics_epsilon, spend.statistics_delta, seed)


def epoch_noise(plan: DpSgdSettings, history: History, epochs_left: int, saved: float | None) -> float | None:
    """The noise multiplier for the epochs left: the user's, else the one this job used so far while it still
    fits (a restarted worker group trains on as before), else the least that fits the rest of the budget."""
    if plan.noise_multiplier is not None:
        return plan.noise_multiplier
    steps = plan.steps_per_chunk * max(epochs_left, 1)
    if saved is not None and sgd_epsilon([*history, (saved, plan.sample_rate, steps)], plan.sgd_delta) \
            <= plan.sgd_epsilon:
        return saved
    return noise_for_budget(history, plan.sample_rate, steps, plan.sgd_epsilon, plan.sgd_delta)


def next_epoch_fits(plan: DpSgdSettings, history: History, noise_multiplier: float | None) -> bool:
    """Whether one more epoch at this noise stays within the budget: training stops before it would not."""
    return noise_multiplier is not None and sgd_epsilon(
        [*history, (noise_multiplier, plan.sample_rate, plan.steps_per_chunk)], plan.sgd_delta) <= plan.sgd_epsilon


def check_budget(plan: DpSgdSettings, epochs: int) -> None:
    """Before any work: Opacus is there, and the budget pays for at least one epoch (a derived noise multiplier
    exists; one the user set spends no more than the budget in one epoch)."""
    import importlib.util
    if importlib.util.find_spec("opacus") is None:
        raise UserError("train.privacy.epsilon is set but Opacus is not installed; pip install 'cvae-synth[privacy]' "
                        "(or opacus) on the driver and every Ray node")
    noise = epoch_noise(plan, [], epochs, None)
    if noise is None:
        raise UserError(f"train.privacy.epsilon={plan.epsilon:g}: no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} "
                        f"fits {epochs} epochs; raise train.privacy.epsilon or lower train.epochs")
    if not next_epoch_fits(plan, [], noise):
        one_epoch = sgd_epsilon([(noise, plan.sample_rate, plan.steps_per_chunk)], plan.sgd_delta)
        raise UserError(f"train.privacy.noise_multiplier={noise:g} spends epsilon "
                        f"{one_epoch + plan.statistics_epsilon:.3g} in one epoch, over train.privacy.epsilon="
                        f"{plan.epsilon:g}; raise the noise multiplier or the epsilon, or leave the noise multiplier unset")


def guarantee(plan: DpSgdSettings, history: History, noise_multiplier: float) -> dict:
    """What a checkpoint's model is: the (epsilon, delta) spent so far, and how."""
    from opacus import __version__ as opacus_version
    spent = sgd_epsilon(history, plan.sgd_delta)
    return {"epsilon": plan.statistics_epsilon + spent, "delta": plan.delta, "target_epsilon": plan.epsilon,
            "sgd_epsilon": spent, "statistics_epsilon": plan.statistics_epsilon,
            "statistics_delta": plan.statistics_delta, "accountant": f"{ACCOUNTANT} (opacus {opacus_version})",
            "noise_multiplier": noise_multiplier, "sample_rate": plan.sample_rate,
            "max_grad_norm": plan.max_grad_norm, "steps": sum(int(steps) for _, _, steps in history),
            "history": [list(segment) for segment in history]}
