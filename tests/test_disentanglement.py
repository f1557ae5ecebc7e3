"""vae_jax.disentanglement gives the values its definitions imply (issue 25).

Most representations here are built from the true factors on the full factorial grid of factor
values (every combination, repeated): there any two factors are exactly independent, so a latent
that ignores a factor carries exactly no information about it, and any classifier reading only
such a latent is right exactly 1/K of the time for a K-valued factor. That makes the expected
values exact, not approximate.
"""
import dataclasses
import importlib.util
import inspect
import math
import sys

import numpy as np
import pytest
import sklearn.metrics

from vae_jax import disentanglement as dis
from vae_jax.errors import UsageError

SIZES = (3, 4, 5)
ESTIMATORS = dis.DCI_ESTIMATORS
# Small sampling scores: the defaults' 10,000 points each take seconds, these a tenth of one.
SMALL = {"batch_size": 64, "num_train": 500, "num_eval": 500}


def grid(sizes, repeats: int = 1) -> np.ndarray:
  """Every combination of factor values, `repeats` times: `(repeats * prod(sizes), F)`."""
  axes = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
  return np.tile(np.stack(axes, -1).reshape(-1, len(sizes)), (repeats, 1))


TRAIN, TEST = grid(SIZES, 8), grid(SIZES, 2)


@dataclasses.dataclass
class Factors:
  """Ground-truth data whose observations are the factor values themselves."""
  factor_sizes: tuple[int, ...]

  def images(self, factors: np.ndarray) -> np.ndarray:
    return factors.astype(np.float64)


def identity(f):
  return np.asarray(f, np.float64)


def rotate(degrees: float):
  """Rotates latents 0 and 1 of the factors themselves: each mixes factors 0 and 1."""
  c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))

  def represent(f):
    z = identity(f).copy()
    z[:, 0], z[:, 1] = c * z[:, 0] - s * z[:, 1], s * z[:, 0] + c * z[:, 1]
    return z
  return represent


def fixed_data_metrics(represent, train=TRAIN, test=TEST) -> dict[str, float]:
  """Every metric on given points, as one flat dict."""
  both = (represent(train), train, represent(test), test)
  values = {"mig": dis.mig(both[0], train), "modularity": dis.modularity(both[0], train),
            "sap": dis.sap(*both), "sap_continuous": dis.sap(*both, continuous_factors=True)}
  for estimator in ESTIMATORS:
    for key, value in dis.dci(*both, estimator=estimator).items():
      values[f"dci_{estimator}_{key}"] = value
  for key, value in dis.explicitness(*both).items():
    values[f"explicitness_{key}"] = value
  return values


def sampling_scores(represent, sizes=SIZES, **kwargs) -> dict[str, float]:
  """The BetaVAE and FactorVAE scores at the small sizes, as one flat dict."""
  data = Factors(sizes)
  beta = dis.beta_vae_score(represent, data, seed=0, **SMALL)
  factor = dis.factor_vae_score(represent, data, seed=0, num_variance_estimate=1000, **SMALL,
                                **kwargs)
  return {**{f"beta_vae_{k}": v for k, v in beta.items()},
          **{f"factor_vae_{k}": v for k, v in factor.items()}}


# --- The defaults --------------------------------------------------------------------------


def test_the_defaults_are_disentanglement_libs():
  # disentanglement_lib/config/unsupervised_study_v1/metric_configs/*.gin (the same values in
  # fairness_study_v1 and abstract_reasoning_study_v1): mig.num_train=10000, num_bins = 20;
  # sap_score/dci/modularity_explicitness.num_train=10000, num_test=5000;
  # beta_vae_sklearn.batch_size=64, num_train=10000, num_eval=5000; factor_vae_score
  # .batch_size=64, num_train=10000, num_eval=5000, num_variance_estimate=10000,
  # prune_dims.threshold = 0.05.
  assert dis.Sizes() == dis.Sizes(
      num_train=10_000, num_test=5_000, num_bins=20, beta_vae_batch=64, beta_vae_train=10_000,
      beta_vae_eval=5_000, factor_vae_batch=64, factor_vae_train=10_000, factor_vae_eval=5_000,
      factor_vae_variance_points=10_000, factor_vae_prune=0.05, represent_batch=1024)
  # The functions' own defaults are those of Sizes, one definition read by all.
  defaults = {**{f"beta_vae_{k}": p.default
                 for k, p in inspect.signature(dis.beta_vae_score).parameters.items()},
              **{f"factor_vae_{k}": p.default
                 for k, p in inspect.signature(dis.factor_vae_score).parameters.items()}}
  sizes = dis.Sizes()
  assert (defaults["beta_vae_batch_size"], defaults["beta_vae_num_train"],
          defaults["beta_vae_num_eval"]) == (sizes.beta_vae_batch, sizes.beta_vae_train,
                                             sizes.beta_vae_eval)
  assert (defaults["factor_vae_batch_size"], defaults["factor_vae_num_train"],
          defaults["factor_vae_num_eval"], defaults["factor_vae_num_variance_estimate"],
          defaults["factor_vae_prune_threshold"]) == (
              sizes.factor_vae_batch, sizes.factor_vae_train, sizes.factor_vae_eval,
              sizes.factor_vae_variance_points, sizes.factor_vae_prune)
  for metric in (dis.mig, dis.modularity):
    assert inspect.signature(metric).parameters["num_bins"].default == sizes.num_bins


# --- Representations built from the true factors --------------------------------------------


def test_the_factors_themselves_score_the_maximum():
  values = fixed_data_metrics(identity)
  del values["sap"]  # Below, on 2-valued factors.
  # (1e-6: once a factor is read perfectly, the histogram trees' later splits fit residuals of
  # rounding size, on any latent; their gains add about 2e-7 of the importance elsewhere.)
  assert values == pytest.approx(dict.fromkeys(values, 1.0), abs=1e-6)
  # SAP's discrete score: each latent predicts its own factor perfectly and the others at
  # exactly chance, 1/2, the largest gap a 2-valued factor allows: 1 - 1/2.
  binary = grid((2, 2, 2), 8)
  assert dis.sap(identity(binary), binary, identity(binary), binary) == pytest.approx(0.5)
  assert sampling_scores(identity) == {
      "beta_vae_train_accuracy": 1.0, "beta_vae_eval_accuracy": 1.0,
      "factor_vae_train_accuracy": 1.0, "factor_vae_eval_accuracy": 1.0,
      "factor_vae_num_active_dims": 3}


@pytest.mark.slow
def test_permuting_the_latents_changes_nothing():
  base = rotate(30)  # Not the maximum: the comparison is not between two 1s.
  permuted = lambda f: base(f)[:, [2, 0, 1]]
  before, after = fixed_data_metrics(base), fixed_data_metrics(permuted)
  # GradientBoostingClassifier visits the latents in a random order (its random_state) and
  # keeps the first of equally good splits: on the grid two rotated latents can split the
  # points identically, and which one gets the credit moves with the order.
  faithful = [key for key in before if key.startswith("dci_gradient_boosting")]
  assert {k: after.pop(k) for k in faithful} == pytest.approx(
      {k: before.pop(k) for k in faithful}, abs=1e-3)
  assert after == pytest.approx(before, abs=1e-12)
  base, sizes = rotate(45), (4, 4, 3)
  permuted = lambda f: base(f)[:, [2, 0, 1]]
  assert sampling_scores(permuted, sizes) == sampling_scores(base, sizes)


@pytest.mark.slow
def test_elementwise_maps_leave_the_metrics_that_ignore_them_unchanged():
  base = rotate(30)
  scale, shift = np.array([2.0, -0.5, 4.0]), np.array([1.0, -3.0, 0.25])
  affine = lambda f: base(f) * scale + shift
  increasing = lambda f: base(f)**3 + base(f)
  before, after_affine = fixed_data_metrics(base), fixed_data_metrics(affine)
  after_increasing = fixed_data_metrics(increasing)
  # Equal-width histograms move with an affine map (of either sign); squared correlations and
  # standardised logistic regressions do not see it.
  for key in ("mig", "modularity", "sap_continuous"):
    assert after_affine[key] == pytest.approx(before[key], abs=1e-12), key
  for key in ("explicitness_train", "explicitness_test"):
    assert after_affine[key] == pytest.approx(before[key], abs=1e-6), key
  # Trees split on order only: any increasing map gives the same trees.
  dci_keys = [key for key in before if key.startswith("dci_")]
  assert {k: after_increasing[k] for k in dci_keys} == {k: before[k] for k in dci_keys}
  # FactorVAE divides each latent's variance by its global variance.
  base, sizes = rotate(45), (4, 4, 3)
  affine = lambda f: base(f) * scale + shift
  factor = {k: v for k, v in sampling_scores(base, sizes).items() if k.startswith("factor")}
  assert {k: v for k, v in sampling_scores(affine, sizes).items() if k in factor} == factor


@pytest.mark.slow
def test_a_rotation_mixing_two_factors_lowers_every_score_but_explicitness():
  rotated, maximum = fixed_data_metrics(rotate(30)), fixed_data_metrics(identity)
  # MIG: each rotated latent tells both factors 0 and 1 apart (their values stay in distinct
  # bins), so their gaps are 0 and only factor 2's remains: 1/3.
  assert rotated["mig"] == pytest.approx(1 / 3, abs=1e-12)
  for key in ("modularity", "sap", "sap_continuous", *(f"dci_{e}_{k}" for e in ESTIMATORS
                                                       for k in ("disentanglement",
                                                                 "completeness"))):
    assert rotated[key] < 0.9 * maximum[key], key
  # Explicitness reads all latents through one linear map: two equal-variance factors rotated
  # by any angle are the same standardised features, rotated, and an L2-penalised logistic
  # regression rotates with them. Latent 2 = factor 2 + factor 3 keeps it below 1 (8/9).
  sizes = (4, 4, 3, 3)
  train, test = grid(sizes, 4), grid(sizes)
  mixed = lambda f: identity(np.stack([f[:, 0], f[:, 1], f[:, 2] + f[:, 3]], 1))
  expected = dis.explicitness(mixed(train), train, mixed(test), test)
  assert expected["test"] == pytest.approx(8 / 9, abs=1e-6)
  for degrees in (30, 45):
    turned = lambda f: rotate(degrees)(mixed(f))
    assert dis.explicitness(turned(train), train, turned(test), test) == pytest.approx(
        expected, abs=1e-6)
  # BetaVAE and FactorVAE: at 45 degrees two equal-sized factors leave both rotated latents
  # equally still, so one latent takes the votes of both and one factor is always misread.
  scores = sampling_scores(rotate(45), (4, 4, 3))
  assert scores["factor_vae_eval_accuracy"] == pytest.approx(2 / 3, abs=0.07)
  assert scores["beta_vae_eval_accuracy"] < 0.8


@pytest.mark.slow
def test_pure_noise_scores_near_zero_or_chance():
  rng = np.random.default_rng(1)
  draw = lambda n: (rng.normal(size=(n, 4)),
                    np.stack([rng.integers(0, s, n) for s in SIZES], 1))
  codes, factors = draw(2000)
  test_codes, test_factors = draw(1000)
  both = (codes, factors, test_codes, test_factors)
  # The plug-in information of independent variables is a small positive bias, alike for every
  # latent, so the gaps are near 0; so are SAP's and DCI's (importance spread evenly).
  assert dis.mig(codes, factors) < 0.01
  assert dis.sap(*both) < 0.02 and dis.sap(*both, continuous_factors=True) < 0.01
  for estimator in ESTIMATORS:
    scores = dis.dci(*both, estimator=estimator)
    assert scores["disentanglement"] < 0.02 and scores["completeness"] < 0.02
    # The test accuracy of a classifier that learned nothing: about the mean of 1/K.
    assert scores["informativeness_test"] == pytest.approx(np.mean([1 / s for s in SIZES]),
                                                           abs=0.03)
  assert dis.explicitness(*both)["test"] == pytest.approx(0.5, abs=0.03)  # AUC at chance.
  # Modularity does not ask a latent to be informative: the bias grows with a factor's number
  # of values, so noise "depends" most on the largest factor and scores well above 0.
  assert dis.modularity(codes, factors) > 0.3
  scores = sampling_scores(lambda x: rng.normal(size=(len(x), 4)))
  assert scores["beta_vae_eval_accuracy"] == pytest.approx(1 / 3, abs=0.07)  # Chance: 1/F.
  assert scores["factor_vae_eval_accuracy"] == pytest.approx(1 / 3, abs=0.07)


def test_one_factor_copied_into_two_latents():
  sizes = (4, 5)
  train, test = grid(sizes, 8), grid(sizes, 2)
  copied = lambda f: identity(f[:, [0, 0, 1]])
  values = fixed_data_metrics(copied, train, test)
  # Factor 0's two best latents know it equally: its gap is 0, so MIG and SAP halve (F = 2).
  assert values["mig"] == pytest.approx(0.5, abs=1e-12)
  assert values["sap_continuous"] == pytest.approx(0.5, abs=1e-12)
  binary = grid((2, 2), 16)
  assert dis.sap(copied(binary), binary, copied(binary), binary) == pytest.approx(0.25)  # 0.5/2
  # Redundancy is not what modularity, DCI's disentanglement or the two sampling scores
  # measure: each latent still depends on one factor, and a fixed factor still stills a latent.
  assert values["modularity"] == pytest.approx(1.0, abs=1e-12)
  for estimator in ESTIMATORS:
    assert values[f"dci_{estimator}_disentanglement"] == pytest.approx(1.0, abs=1e-6)
  scores = sampling_scores(copied, sizes)
  assert scores["beta_vae_eval_accuracy"] == 1.0 and scores["factor_vae_eval_accuracy"] == 1.0


# --- Small cases computed by hand -----------------------------------------------------------


def test_the_histogram_rule_and_the_information_by_hand():
  # 20 equal-width bins over [0, 1] are 0.05 wide, numbered from 1; the maximum is in bin 20.
  codes = np.array([[0.0], [0.04], [0.06], [0.96], [1.0]])
  assert dis.histogram_bins(codes, 20)[:, 0].tolist() == [1, 1, 2, 20, 20]
  # I(a; a) = H(a): a fair coin, ln 2; and an exact match of scikit-learn's estimator.
  assert dis.mutual_information(np.array([0, 1, 0, 1]), np.array([5, 7, 5, 7])) == pytest.approx(
      math.log(2), abs=1e-15)
  rng = np.random.default_rng(0)
  for _ in range(5):
    a, b = rng.integers(0, 7, 500), rng.integers(0, 9, 500)
    b[:250] = a[:250]
    assert dis.mutual_information(a, b) == pytest.approx(
        sklearn.metrics.mutual_info_score(a, b), abs=1e-12)


# Four points, two fair coins: v0 = (0, 0, 1, 1), v1 = (0, 1, 0, 1).
COINS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
# z1 = v0 AND v1. H(z1) = 2 ln 2 - 3/4 ln 3, H(z1 | v0) = 1/2 ln 2, so
# I(z1; v0) = I(z1; v1) = 3/2 ln 2 - 3/4 ln 3 = r ln 2 with r = 3/2 - 3/4 log2(3) = 0.311.
AND = [0, 0, 0, 1]
R = 1.5 - 0.75 * math.log2(3)


def test_mig_by_hand():
  # z0 = 0, 0.04, 0.96, 1 falls in bins 1, 1, 20, 20: it is v0, I(z0; v0) = ln 2, I(z0; v1) = 0.
  # Factor 0's gap: (ln 2 - r ln 2) / ln 2 = 1 - r; factor 1's: (r ln 2 - 0) / ln 2 = r.
  # MIG = ((1 - r) + r) / 2 = 1/2.
  codes = np.array([[0.0, 0.04, 0.96, 1.0], AND]).T
  assert dis.mig(codes, COINS) == pytest.approx(0.5, abs=1e-12)
  # z0 = 0, 0.06, 0.96, 1: bins 1, 2, 20, 20, which now also tells point 1 from point 0:
  # I(z0; v1) = ln 2 - (1/2) ln 2 = 1/2 ln 2 beats z1's r ln 2. Gaps 1 - r and 1/2 - r,
  # MIG = 3/4 - r = 3/4 (log2(3) - 1) = 0.4387.
  codes[1, 0] = 0.06
  assert dis.mig(codes, COINS) == pytest.approx(0.75 * (math.log2(3) - 1), abs=1e-12)
  # The factors of the (3, 4, 5) grid through z^3 + z: factor 2's values 0..4 become
  # 0, 2, 10, 30, 68, in bins 3.4 wide, so 0 and 2 share bin 1 (the others keep one bin each):
  # I(z2; v2) = ln 5 - 2/5 ln 2. MIG = 1 - (2/5 ln 2 / ln 5) / 3 = 0.9426.
  cubed = identity(TRAIN)**3 + identity(TRAIN)
  assert dis.mig(cubed, TRAIN) == pytest.approx(1 - 0.4 * math.log(2) / math.log(5) / 3,
                                                abs=1e-12)


def test_modularity_by_hand():
  # The codes of test_mig_by_hand. z0: informations (ln 2, 0), modularity 1; z1: (r ln 2,
  # r ln 2), 1 - (2 m^2 - m^2) / (m^2 (2 - 1)) = 0. Mean 1/2.
  codes = np.array([[0.0, 0.04, 0.96, 1.0], AND]).T
  assert dis.modularity(codes, COINS) == pytest.approx(0.5, abs=1e-12)
  # z0 at 0.06: (ln 2, 1/2 ln 2), 1 - (1/4) / 1 = 3/4; z1 still 0. Mean 3/8.
  codes[1, 0] = 0.06
  assert dis.modularity(codes, COINS) == pytest.approx(0.375, abs=1e-12)
  # From an information matrix: (1, 0, 0) -> 1; (1, 1, 0) -> 1 - 1 / (1 * 2) = 1/2; a latent
  # with no information -> 0. Mean 1/2.
  assert dis.modularity_from_information(np.array([[1.0, 0, 0], [1, 1, 0], [0, 0, 0]])) == 0.5


def test_sap_by_hand():
  # Continuous: z0 = v0, z1 = v0 + v1 (equal variances, uncorrelated factors):
  # corr^2(z0, v0) = 1, corr^2(z0, v1) = 0, corr^2(z1, v0) = corr^2(z1, v1) = 1/2.
  # Gaps: factor 0, 1 - 1/2; factor 1, 1/2 - 0. SAP = 1/2.
  codes = identity(np.stack([COINS[:, 0], COINS.sum(1)], 1))
  assert dis.sap(codes, COINS, codes, COINS, continuous_factors=True) == pytest.approx(0.5)
  # A constant latent scores 0 (disentanglement_lib's variance threshold), not NaN:
  # gaps 1 - 0 and 0 - 0, SAP = 1/2.
  codes[:, 1] = 3.0
  assert dis.sap(codes, COINS, codes, COINS, continuous_factors=True) == pytest.approx(0.5)
  # Discrete: the classifier from z = 10 v (centred) is perfect, the one from the other
  # latent exactly at chance on the grid: gaps 1 - 1/2 for both factors, SAP = 1/2.
  binary = grid((2, 2), 25)
  codes = 10.0 * (binary - 0.5)
  assert dis.sap(codes, binary, codes, binary) == pytest.approx(0.5)


def test_dci_by_hand():
  one_each = dis.dci_from_importance(np.eye(2))
  assert one_each == pytest.approx({"disentanglement": 1.0, "completeness": 1.0}, abs=1e-9)
  # Latent 0 matters equally to both factors (entropy 1 in base 2: disentanglement 0) and
  # carries all the importance; each factor rests on latent 0 alone (completeness 1).
  both_on_one = dis.dci_from_importance(np.array([[1.0, 1.0], [0.0, 0.0]]))
  assert both_on_one == pytest.approx({"disentanglement": 0.0, "completeness": 1.0}, abs=1e-9)
  # R = [[2, 0, 0], [1, 1, 0], [0, 0, 2]]. Rows: entropies 0, ln 2 / ln 3, 0, each row 1/3 of
  # the total: D = (1 + (1 - log3(2)) + 1) / 3. Columns (2, 1, 0), (0, 1, 0), (0, 0, 2):
  # entropy H(2/3, 1/3) / ln 3, 0, 0, shares 3/6, 1/6, 2/6:
  # C = 1/2 (1 - H(2/3, 1/3) / ln 3) + 1/6 + 2/6.
  h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3)
  assert dis.dci_from_importance(np.array([[2.0, 0, 0], [1, 1, 0], [0, 0, 2]])) == pytest.approx(
      {"disentanglement": (3 - math.log(2) / math.log(3)) / 3,
       "completeness": 0.5 * (1 - h) + 0.5}, abs=1e-9)
  # End to end: one latent holds both coins (z0 = v0 + 2 v1, four values a depth-3 tree tells
  # apart), the other is constant, never split on: R = [[1, 1], [0, 0]] as above, and both
  # factors are read perfectly.
  coins = grid((2, 2), 10)
  codes = identity(np.stack([coins[:, 0] + 2 * coins[:, 1], np.zeros(len(coins))], 1))
  for estimator in ESTIMATORS:
    assert dis.dci(codes, coins, codes, coins, estimator=estimator) == pytest.approx(
        {"disentanglement": 0.0, "completeness": 1.0, "informativeness_train": 1.0,
         "informativeness_test": 1.0}, abs=1e-9)


def test_explicitness_by_hand():
  # One latent, z = v0, on the grid of two coins: factor 0's probabilities rank it perfectly
  # (AUC 1); factor 1's depend on v0 only, which is independent of v1: AUC exactly 1/2.
  coins = grid((2, 2), 10)
  codes = identity(coins[:, :1])
  assert dis.explicitness(codes, coins, codes, coins) == pytest.approx(
      {"train": 0.75, "test": 0.75}, abs=1e-12)


def test_beta_vae_by_hand():
  # Three coins, one latent z = v0. Fixing factor 0 gives the feature 0; fixing factor 1 or 2,
  # the same positive feature (the mean |difference| of v0): the classifier can tell factor 0
  # only, and guesses between 1 and 2. Accuracy 1/3 + 1/3 * 1/2 * 2 = 2/3.
  scores = dis.beta_vae_score(lambda x: x[:, :1], Factors((2, 2, 2)), seed=0, **SMALL)
  assert scores["eval_accuracy"] == pytest.approx(2 / 3, abs=0.07)


def test_factor_vae_by_hand():
  # Three coins, z = (v0, v1, v2 / 100). Latent 2's global standard deviation is 0.005, below
  # the threshold of 0.05: it is pruned. Fixing factor 0 or 1 stills latent 0 or 1; fixing
  # factor 2 stills no active latent, and its votes go to latents 0 and 1, whose majorities
  # are factors 0 and 1: a third of the votes are always wrong. Accuracy 2/3.
  represent = lambda x: x * np.array([1.0, 1.0, 0.01])
  scores = sampling_scores(represent, (2, 2, 2))
  assert scores["factor_vae_num_active_dims"] == 2
  assert scores["factor_vae_eval_accuracy"] == pytest.approx(2 / 3, abs=0.07)
  # Without pruning latent 2 is stilled by factor 2 alone: every vote right.
  scores = sampling_scores(represent, (2, 2, 2), prune_threshold=0.0)
  assert scores["factor_vae_num_active_dims"] == 3 and scores["factor_vae_eval_accuracy"] == 1


# --- Splits, seeds, evaluate_all -------------------------------------------------------------


def test_without_a_test_set_every_tenth_point_is_held_out():
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(200, 3))
  factors = np.stack([rng.integers(0, 3, 200), (codes[:, 0] > 0).astype(int)], 1)
  test = np.arange(200) % 10 == 9
  given = (codes[~test], factors[~test], codes[test], factors[test])
  assert dis.sap(codes, factors) == dis.sap(*given)
  assert dis.explicitness(codes, factors) == dis.explicitness(*given)
  assert dis.dci(codes, factors) == dis.dci(*given)


TINY = dis.Sizes(num_train=300, num_test=150, beta_vae_batch=16, beta_vae_train=200,
                 beta_vae_eval=100, factor_vae_batch=16, factor_vae_train=200, factor_vae_eval=100,
                 factor_vae_variance_points=300, represent_batch=100)


def _noisy(f):
  """A deterministic, imperfect representation: the factors mixed, plus a hash of them."""
  f = identity(f)
  return np.stack([f[:, 0] + 0.3 * f[:, 1], f[:, 1], np.sin(f @ [3.0, 5.0, 7.0])], 1)


@pytest.mark.slow
def test_evaluate_all_is_deterministic_for_a_seed():
  data = Factors(SIZES)
  first = dis.evaluate_all(_noisy, data, seed=3, sizes=TINY)
  again = dis.evaluate_all(_noisy, data, seed=3, sizes=TINY)
  other = dis.evaluate_all(_noisy, data, seed=4, sizes=TINY)
  for result in (first, again, other):
    assert set(result.pop("seconds")) == {"sample", "beta_vae", "factor_vae", "mig", "sap", "dci",
                                          "modularity", "explicitness"}
  assert first == again
  assert first["beta_vae"] != other["beta_vae"] and first["mig"] != other["mig"]
  assert first["scikit_learn"] == sklearn.__version__ == dis.scikit_learn_version()
  assert first["sizes"] == dataclasses.asdict(TINY)
  # Each sampling score draws as it would alone with the same seed.
  assert first["beta_vae"] == dis.beta_vae_score(
      _noisy, data, seed=3, batch_size=16, num_train=200, num_eval=100, represent_batch=100)
  # represent_batch changes the calls, not the numbers.
  assert dis.evaluate_all(_noisy, data, seed=3, sizes=dataclasses.replace(
      TINY, represent_batch=7))["factor_vae"] == first["factor_vae"]


# --- Refusals ---------------------------------------------------------------------------------

CODES = np.random.default_rng(0).normal(size=(40, 3))
FACTORS = grid((2, 4), 5)


@pytest.mark.parametrize("call, message", [
    (lambda: dis.mig(CODES, None), "factors are missing"),
    (lambda: dis.mig(None, FACTORS), "codes are missing"),
    (lambda: dis.mig(CODES[:, 0], FACTORS),
     "codes must be a 2-D array (N, latents); got shape (40,)"),
    (lambda: dis.mig(CODES, FACTORS[:, 0]), "factors must be a 2-D array"),
    (lambda: dis.mig(CODES[:30], FACTORS), "codes hold 30 points but factors hold 40"),
    (lambda: dis.mig(CODES, FACTORS + 0.5),
     "factors must be integer indices; point 0, factor 0 is"),
    (lambda: dis.mig(CODES, FACTORS.astype(str)), "factors must be integer indices; got dtype"),
    (lambda: dis.mig(CODES, FACTORS - 1), "factors must be indices >= 0; point 0, factor 0 is -1"),
    (lambda: dis.mig(np.where(CODES > 1, np.nan, CODES), FACTORS), "codes hold"),
    (lambda: dis.mig(CODES[:1], FACTORS[:1]), "MIG needs at least 2 points; got 1"),
    (lambda: dis.mig(CODES[:, :1], FACTORS), "MIG (a gap between two latents) needs at least 2"),
    (lambda: dis.mig(CODES, np.c_[FACTORS, np.ones(40, int)]), "factor 2 takes the single value 1"),
    (lambda: dis.dci(CODES[:8], FACTORS[:8]), "needs at least 10 points; got 8"),
    (lambda: dis.sap(CODES, FACTORS, test_codes=CODES), "pass both test_codes and test_factors"),
    (lambda: dis.sap(CODES, FACTORS, CODES[:, :2], FACTORS), "the test set has 2 latents"),
    (lambda: dis.sap(CODES, FACTORS, CODES, FACTORS - 1), "test_factors must be indices >= 0"),
    (lambda: dis.dci(CODES, FACTORS, estimator="xgboost"), "DCI estimator 'xgboost' is not one"),
    (lambda: dis.modularity(CODES, FACTORS[:, :1]), "modularity needs at least 2 factors; got 1"),
    (lambda: dis.beta_vae_score(identity, object(), seed=0), "must have factor_sizes"),
    (lambda: dis.beta_vae_score(identity, Factors((1, 3)), seed=0), "size of 2 or more"),
    (lambda: dis.factor_vae_score(lambda x: x[:, 0], Factors((2, 3)), seed=0),
     "represent returned shape (1024,) for 1024 observations"),
    (lambda: dis.factor_vae_score(lambda x: x * np.nan, Factors((2, 3)), seed=0),
     "represent's codes hold"),
])
def test_bad_input_is_refused_in_one_line(call, message):
  with pytest.raises(UsageError) as error:
    call()
  assert message in str(error.value) and "\n" not in str(error.value)


def test_without_scikit_learn_the_module_imports_and_the_classifiers_say_how_to_install(
    monkeypatch):
  for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
    monkeypatch.setitem(sys.modules, name, None)  # `import sklearn...` now fails.
  spec = importlib.util.spec_from_file_location("fresh_disentanglement", dis.__file__)
  fresh = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(fresh)  # A fresh import of the module's file.
  assert fresh.scikit_learn_version() is None
  assert fresh.mig(CODES, FACTORS) == dis.mig(CODES, FACTORS)  # numpy only.
  with pytest.raises(UsageError, match=r'pip install "vae_jax\[disentanglement\]"'):
    fresh.sap(CODES, FACTORS)
