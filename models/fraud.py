"""The fraud scorer: a supervised online classifier and an unsupervised anomaly detector.

Final score (documented in the README)::

    score = w * p_fraud + (1 - w) * anomaly,   w = supervised_weight * min(1, frauds_learned / warmup_frauds)

``p_fraud`` is the logistic regression's probability, corrected for the
sampling of legitimate examples.  ``anomaly`` in [0, 1) says how far the
transaction lies from normal traffic: the mean over the classifier's inputs of
their squared z-scores (each clipped at :data:`Z_CLIP` standard deviations, so
that one absurd value cannot dominate), squashed as ``m / (m + 2)``.  The
z-scores come from the standard scaler that learns from a sample of unlabelled
traffic, the one the classifier reads: a typical transaction has ``m`` near 1
(anomaly near 1/3), an unusual one far more.  With no labels yet (cold start)
the anomaly score decides alone; as labelled frauds arrive the classifier takes
over.

The classifier sees the transaction's features (counts and money on a log
scale) plus a few generic interactions of risk indicators (new merchant,
online, amount above the card's usual, abroad, burst of payments, tiny amount)
and the hour of day as a point on a circle: a linear model cannot form these
itself.  It also sees the terminal's fraud labels of the last 7 days unsmoothed
(:func:`terminal_risk`): their number and their share of the terminal's labels,
which the smoothed rate hides for a quiet terminal (7 frauds of 7 labels read 0.27
with its 20-label prior).  These are for the classifier only: the anomaly score
leaves them out (:data:`SUPERVISED_ONLY`).  At a terminal with fraud labels in the
last 7 days, ``p_fraud`` is the mean of the regression's probability and that of a
small Hoeffding tree on :func:`tree_inputs`, which can tell a terminal still
compromised (7-day fraud share high, 30-day share not yet) from one whose
compromise has ended (both high); elsewhere it is the regression's alone.

>>> model = FraudModel(seed=1)
>>> features = {"amount": 12.0, "card_count_1h": 1, "hour": 13.0}
>>> for _ in range(300):
...     model.observe(features)
>>> model.learn(features, is_fraud=False)
>>> result = model.score(features)
>>> 0.0 <= result.score <= 1.0, result.supervised_weight
(True, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from river import linear_model, optim, preprocessing, tree
from river.utils.math import sigmoid

from tables.merchant_features import fraud_labels

# Features that are counts or money: the model sees log1p of them.
_LOG_SCALE_PREFIXES = (
    "amount",
    "card_count_",
    "card_amount_sum_",
    "card_amount_max_",
    "card_amount_mean_",
    "card_distinct_merchants_",
    "card_merchant_prev_",
    "card_seconds_since_prev",
    "merchant_count_",
    "merchant_amount_mean_",
    "merchant_amount_ratio",
    "merchant_burst_",
    "merchant_labels_",
)

# Standard deviations: the most one input adds to the anomaly score.  On the simulated streams
# 20 ranked best (5 let the mean of many ordinary inputs drown a few far-out ones; no clip at
# all let single absurd values decide).
Z_CLIP = 20.0
_Z_CLIP_SQUARED = Z_CLIP * Z_CLIP
_ANOMALY_HALF = 2.0  # mean clipped square at which the anomaly score is 1/2
SMALL_AMOUNT = 5.0  # EUR: below it a payment counts as tiny (card testing)
_RADIANS_PER_HOUR = 2.0 * math.pi / 24.0
# Inputs the classifier reads but the anomaly score leaves out: mostly 0, they would make
# any terminal with a fraud label look unusual, whatever its transaction.
SUPERVISED_ONLY = frozenset({"m_frauds_7d", "m_fraud_share_7d", "x_share_frauds_7d"})


class _LogScaled(dict[str, bool]):
    """Whether a feature is seen on a log scale, by name: each name is matched against the prefixes once."""

    def __missing__(self, name: str) -> bool:
        log_scaled = self[name] = name.startswith(_LOG_SCALE_PREFIXES)
        return log_scaled


_LOG_SCALED = _LogScaled()


def model_inputs(features: dict[str, float]) -> dict[str, float]:
    """The model's view of a transaction's features: counts and money on a log scale.

    >>> model_inputs({"amount": math.e - 1, "card_no_prior_30d": 1.0, "card_count_1h": -2})
    {'amount': 1.0, 'card_no_prior_30d': 1.0, 'card_count_1h': 0.0}
    """
    log_scaled = _LOG_SCALED
    log1p = math.log1p
    return {
        name: (log1p(value) if value > 0.0 else 0.0) if log_scaled[name] else float(value)
        for name, value in features.items()
    }


def interactions(features: dict[str, float]) -> dict[str, float]:
    """Products of risk indicators, and the hour on a circle: what a linear model cannot form.

    >>> x = interactions({"online": 1.0, "card_merchant_prev_30d": 0, "card_amount_log_ratio": 2.0,
    ...                   "card_country_share_30d": 0.25, "card_count_1h": 3, "amount": 2.0, "hour": 6.0})
    >>> x["x_online_new"], x["x_ratio_online"], x["x_foreign_new"], round(x["x_burst_small"], 4)
    (1.0, 2.0, 0.75, 1.0986)
    """
    return _add_interactions(features, {})


def classifier_inputs(features: dict[str, float]) -> dict[str, float]:
    """The classifier's (unscaled) view: :func:`model_inputs` and :func:`interactions`."""
    return _add_interactions(features, model_inputs(features))


def _add_interactions(features: dict[str, float], x: dict[str, float]) -> dict[str, float]:
    """:func:`interactions` of ``features``, added to ``x``; returns ``x``."""
    new_merchant = 1.0 if features.get("card_merchant_prev_30d", 1.0) == 0 else 0.0
    online = float(features.get("online", 0.0))
    above_usual = max(0.0, features.get("card_amount_log_ratio", 0.0))
    abroad = 1.0 - features.get("card_country_share_30d", 0.5)
    burst = math.log1p(max(features.get("card_count_1h", 1.0) - 1.0, 0.0))
    tiny = 1.0 if features.get("amount", SMALL_AMOUNT) < SMALL_AMOUNT else 0.0
    angle = features.get("hour", 12.0) * _RADIANS_PER_HOUR
    x["x_online_new"] = online * new_merchant
    x["x_ratio_online"] = above_usual * online
    x["x_ratio_new"] = above_usual * new_merchant
    x["x_foreign_online"] = abroad * online
    x["x_foreign_new"] = abroad * new_merchant
    x["x_burst_small"] = burst * tiny
    x["x_burst_new"] = burst * new_merchant
    x["hour_sin"] = math.sin(angle)
    x["hour_cos"] = math.cos(angle)
    return _add_terminal_risk(features, x)


def terminal_risk(features: dict[str, float]) -> dict[str, float]:
    """The merchant's fraud labels of the last 7 days (log1p), their share of its labels, and their product.

    >>> x = terminal_risk({"merchant_labels_7d": 7, "merchant_fraud_rate_7d": (7 + 0.2) / 27})
    >>> round(x["m_frauds_7d"], 4), x["m_fraud_share_7d"], round(x["x_share_frauds_7d"], 4)
    (2.0794, 1.0, 2.0794)
    >>> terminal_risk({})
    {'m_frauds_7d': 0.0, 'm_fraud_share_7d': 0.0, 'x_share_frauds_7d': 0.0}
    """
    return _add_terminal_risk(features, {})


def _add_terminal_risk(features: dict[str, float], x: dict[str, float]) -> dict[str, float]:
    """:func:`terminal_risk` of ``features``, added to ``x``; returns ``x``."""
    labels = features.get("merchant_labels_7d", 0.0)
    frauds = fraud_labels(features.get("merchant_fraud_rate_7d", 0.0), labels) if labels else 0
    log_frauds = math.log1p(frauds)
    share = frauds / labels if labels else 0.0
    x["m_frauds_7d"] = log_frauds
    x["m_fraud_share_7d"] = share
    x["x_share_frauds_7d"] = share * log_frauds
    return x


def tree_inputs(features: dict[str, float]) -> dict[str, float]:
    """The tree's view: amount, card amount ratio, the terminal's 7-day frauds, 7- and 30-day fraud shares.

    >>> tree_inputs({"amount": 30.0, "card_amount_log_ratio": 0.5,
    ...              "merchant_labels_7d": 4, "merchant_fraud_rate_7d": 2.2 / 24,
    ...              "merchant_labels_30d": 10, "merchant_fraud_rate_30d": 0.2 / 30})
    {'amount': 30.0, 'ratio': 0.5, 'frauds_7d': 2, 'share_7d': 0.5, 'share_30d': 0.0}
    """
    labels_7d = features.get("merchant_labels_7d", 0.0)
    frauds_7d = fraud_labels(features.get("merchant_fraud_rate_7d", 0.0), labels_7d) if labels_7d else 0
    labels_30d = features.get("merchant_labels_30d", 0.0)
    frauds_30d = fraud_labels(features.get("merchant_fraud_rate_30d", 0.0), labels_30d) if labels_30d else 0
    return {
        "amount": features.get("amount", 0.0),
        "ratio": features.get("card_amount_log_ratio", 0.0),
        "frauds_7d": frauds_7d,
        "share_7d": frauds_7d / labels_7d if labels_7d else 0.0,
        "share_30d": frauds_30d / labels_30d if labels_30d else 0.0,
    }


def new_tree() -> tree.HoeffdingTreeClassifier:
    """The tree: depth at most 4, histogram splits (16 bins), so its size is bounded however long the stream.

    (River's default Gaussian splitter pickles a random-number state per class, input and leaf.)
    """
    return tree.HoeffdingTreeClassifier(
        grace_period=200,
        max_depth=4,
        leaf_prediction="nba",
        splitter=tree.splitter.HistogramSplitter(n_bins=16, n_splits=8),
    )


def anomaly(z: dict[str, float], skip: frozenset[str] = frozenset()) -> float:
    """How unusual standardized inputs are, in [0, 1): ``m / (m + 2)``, ``m`` their mean clipped square.

    Inputs named in ``skip`` are left out.

    >>> anomaly({"a": 0.0, "b": 0.0}), anomaly({"a": 1.0, "b": -1.0}), anomaly({"a": 1e6, "b": 0.0})
    (0.0, 0.3333333333333333, 0.9900990099009901)
    >>> anomaly({}), anomaly({"a": 1.0, "b": -1.0, "c": 1e6}, skip=frozenset({"c"}))
    (0.0, 0.3333333333333333)
    """
    clip = _Z_CLIP_SQUARED
    squares = [
        square if (square := value * value) < clip else clip for name, value in z.items() if name not in skip
    ]
    if not squares:
        return 0.0
    m = sum(squares) / len(squares)
    return m / (m + _ANOMALY_HALF)


def largest_positive(values: dict[str, float], n: int) -> list[str]:
    """Names of the ``n`` largest positive values, largest first (ties: larger name first).

    >>> largest_positive({"a": 1.0, "b": 3.0, "c": -2.0, "d": 3.0}, 3)
    ['d', 'b', 'a']
    >>> largest_positive({"a": 0.0, "b": -1.0}, 2)
    []
    """
    if not values:
        return []
    ordered = sorted(values.values())
    # Only the values from the n-th largest up need ranking by name too: a few, not all.
    threshold = ordered[-n] if len(ordered) >= n else ordered[0]
    if threshold > 0.0:
        ranked = [(value, name) for name, value in values.items() if value >= threshold]
    else:
        ranked = [(value, name) for name, value in values.items() if value > 0.0]
    ranked.sort(reverse=True)
    return [name for _, name in ranked[:n]]


@dataclass(frozen=True, slots=True)
class FraudScore:
    score: float
    p_fraud: float
    anomaly: float
    supervised_weight: float
    reasons: list[str]


class FraudModel:
    """Scores transactions and learns from labels (supervised) and from traffic (unsupervised).

    Parameters
    ----------
    legit_sample_rate
        Share of legitimate labelled examples the learner is fed; probabilities are
        corrected for it so that scores stay calibrated.
    warmup_frauds
        Labelled frauds after which the classifier has its full weight.
    supervised_weight
        The classifier's weight once warmed up; the rest goes to the anomaly score.
    n_reasons
        How many features are named as reasons for a score.
    seed
        Kept for compatibility: the model has no randomness since the z-score
        :func:`anomaly` replaced Half-Space Trees.
    learning_rate
        Step size of the classifier's plain SGD.
    """

    def __init__(
        self,
        legit_sample_rate: float = 0.25,
        warmup_frauds: int = 50,
        supervised_weight: float = 0.9,
        n_reasons: int = 3,
        seed: int = 42,
        learning_rate: float = 0.01,
    ) -> None:
        self.legit_sample_rate = legit_sample_rate
        self.warmup_frauds = warmup_frauds
        self.supervised_weight = supervised_weight
        self.n_reasons = n_reasons
        self.seed = seed
        self.learning_rate = learning_rate
        # The scaler learns from unlabelled traffic only: it is not skewed by label sampling.
        self.scaler = preprocessing.StandardScaler()
        self.classifier = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=1e-5)
        self.tree = new_tree()
        self.frauds_learned = 0
        self.legit_learned = 0
        self.observed = 0
        # Derived from the scaler and the classifier after each update, for scoring, not pickled:
        # per input (log-scaled?, mean, 1 / standard deviation), so that standardizing is one
        # lookup per input (and no square root), and the weights as a plain dict.
        self._standardizers: dict[str, tuple[bool, float, float]] = {}
        self._classifier_weights: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_standardizers"], state["_classifier_weights"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickles made before the z-score anomaly carry a Half-Space Trees detector: unused now.
        state.pop("detector", None)
        self.__dict__.update(state)
        if "tree" not in state:  # pickles from before the tree: it starts afresh
            self.tree = new_tree()
        self._standardizers = {}
        self._update_standardizers(self.scaler.means)
        self._classifier_weights = self.classifier._weights.to_dict()

    def observe(self, features: dict[str, float]) -> None:
        """Learn what normal traffic looks like from one (unlabelled) transaction.

        This is the scaler's ``learn_one`` (Welford's update of each input's count, mean
        and variance, written into the scaler as it writes them), with each input's
        standardizer refreshed in the same pass.
        """
        counts, means, variances = self.scaler.counts, self.scaler.means, self.scaler.vars
        standardizers = self._standardizers
        for name, value in classifier_inputs(features).items():
            n = counts[name] + 1
            counts[name] = n
            old_mean, old_var = means[name], variances[name]
            mean = means[name] = old_mean + (value - old_mean) / n
            variance = variances[name] = old_var + ((value - old_mean) * (value - mean) - old_var) / n
            standardizers[name] = (_LOG_SCALED[name], mean, variance**-0.5 if variance else 0.0)
        self.observed += 1

    def learn(self, features: dict[str, float], is_fraud: bool) -> None:
        """Learn from one labelled transaction, given the features it was scored with."""
        self.classifier.learn_one(self.standardized_inputs(features), is_fraud)
        self.tree.learn_one(tree_inputs(features), is_fraud)
        self._classifier_weights = self.classifier._weights.to_dict()
        if is_fraud:
            self.frauds_learned += 1
        else:
            self.legit_learned += 1

    def standardized_inputs(self, features: dict[str, float]) -> dict[str, float]:
        """The classifier's inputs, standardized by the traffic's means and standard deviations.

        The same as the scaler's ``transform_one(classifier_inputs(features))`` (an input
        without spread, or never observed, is 0), in one pass over the features.

        >>> model = FraudModel()
        >>> for amount in (math.e - 1, math.e**3 - 1):  # log1p: 1 and 3
        ...     model.observe({"amount": amount, "online": 1.0})
        >>> z = model.standardized_inputs({"amount": math.e**3 - 1, "online": 0.0, "hour": 5.0})
        >>> round(z["amount"], 12), z["online"] == 0.0, z["hour"]  # online never varied, hour never seen
        (1.0, True, 0.0)
        """
        standardizers = self._standardizers
        log1p = math.log1p
        try:
            z = {
                name: (((log1p(value) if value > 0.0 else 0.0) if log_scaled else value) - mean) * scale
                for name, value in features.items()
                for log_scaled, mean, scale in (standardizers[name],)
            }
            for name, value in _add_interactions(features, {}).items():
                _, mean, scale = standardizers[name]
                z[name] = (value - mean) * scale
        except KeyError:  # an input never observed: no mean and no spread yet, so 0
            unknown = (False, 0.0, 0.0)
            return {
                name: (value - mean) * scale
                for name, value in classifier_inputs(features).items()
                for _, mean, scale in (standardizers.get(name, unknown),)
            }
        return z

    def _update_standardizers(self, names: Iterable[str]) -> None:
        means = self.scaler.means
        variances = self.scaler.vars
        standardizers = self._standardizers
        for name in names:
            variance = variances[name]
            standardizers[name] = (_LOG_SCALED[name], means[name], variance**-0.5 if variance else 0.0)

    def score(self, features: dict[str, float]) -> FraudScore:
        """Score one transaction (no learning happens here)."""
        z = self.standardized_inputs(features)
        anomaly_score = anomaly(z, SUPERVISED_ONLY)
        weight = self.supervised_weight * min(1.0, self.frauds_learned / self.warmup_frauds)
        if weight:
            # Each input's push on the classifier's log-odds: their sum (and the intercept)
            # gives its probability, their largest name the reasons.
            weights = self._classifier_weights
            pushes = {name: weights.get(name, 0.0) * value for name, value in z.items()}
            p_fraud = self._calibrated(sigmoid(self.classifier.intercept + sum(pushes.values())))
            inputs = tree_inputs(features)
            if inputs["frauds_7d"]:
                p_tree = self._calibrated(self.tree.predict_proba_one(inputs).get(True, 0.0))
                p_fraud = (p_fraud + p_tree) / 2
        else:
            pushes = z  # cold start: the reasons are the most unusual inputs
            p_fraud = 0.0
        score = weight * p_fraud + (1.0 - weight) * anomaly_score
        return FraudScore(
            score=min(max(score, 0.0), 1.0),
            p_fraud=p_fraud,
            anomaly=anomaly_score,
            supervised_weight=weight,
            reasons=largest_positive(pushes, self.n_reasons),
        )

    def _calibrated(self, p: float) -> float:
        # Legit examples were kept with probability r: the learned odds are 1/r too high.
        p = min(max(p, 1e-12), 1 - 1e-12)
        odds = p / (1.0 - p) * self.legit_sample_rate
        return odds / (1.0 + odds)
