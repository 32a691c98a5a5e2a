"""The fraud scorer: a supervised online classifier and an unsupervised anomaly detector.

Final score (documented in the README)::

    score = w * p_fraud + (1 - w) * anomaly,   w = supervised_weight * min(1, frauds_learned / warmup_frauds)

``p_fraud`` is the logistic regression's probability, corrected for the
sampling of legitimate examples; ``anomaly`` is the Half-Space Trees score in
[0, 1].  With no labels yet (cold start) the anomaly score decides alone; as
labelled frauds arrive the classifier takes over.

The classifier sees the transaction's features (counts and money on a log
scale) plus a few generic interactions of risk indicators (new merchant,
online, amount above the card's usual, abroad, burst of payments, tiny amount)
and the hour of day as a point on a circle: a linear model cannot form these
itself.

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
from dataclasses import dataclass

from river import anomaly, linear_model, optim, preprocessing

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

SMALL_AMOUNT = 5.0  # EUR: below it a payment counts as tiny (card testing)
_RADIANS_PER_HOUR = 2.0 * math.pi / 24.0


def model_inputs(features: dict[str, float]) -> dict[str, float]:
    """The model's view of a transaction's features: counts and money on a log scale.

    >>> model_inputs({"amount": math.e - 1, "card_no_prior_30d": 1.0})
    {'amount': 1.0, 'card_no_prior_30d': 1.0}
    """
    return {
        name: math.log1p(max(value, 0.0)) if name.startswith(_LOG_SCALE_PREFIXES) else float(value)
        for name, value in features.items()
    }


def interactions(features: dict[str, float]) -> dict[str, float]:
    """Products of risk indicators, and the hour on a circle: what a linear model cannot form.

    >>> x = interactions({"online": 1.0, "card_merchant_prev_30d": 0, "card_amount_log_ratio": 2.0,
    ...                   "card_country_share_30d": 0.25, "card_count_1h": 3, "amount": 2.0, "hour": 6.0})
    >>> x["x_online_new"], x["x_ratio_online"], x["x_foreign_new"], round(x["x_burst_small"], 4)
    (1.0, 2.0, 0.75, 1.0986)
    """
    new_merchant = 1.0 if features.get("card_merchant_prev_30d", 1.0) == 0 else 0.0
    online = float(features.get("online", 0.0))
    above_usual = max(0.0, features.get("card_amount_log_ratio", 0.0))
    abroad = 1.0 - features.get("card_country_share_30d", 0.5)
    burst = math.log1p(max(features.get("card_count_1h", 1.0) - 1.0, 0.0))
    tiny = 1.0 if features.get("amount", SMALL_AMOUNT) < SMALL_AMOUNT else 0.0
    angle = features.get("hour", 12.0) * _RADIANS_PER_HOUR
    return {
        "x_online_new": online * new_merchant,
        "x_ratio_online": above_usual * online,
        "x_ratio_new": above_usual * new_merchant,
        "x_foreign_online": abroad * online,
        "x_foreign_new": abroad * new_merchant,
        "x_burst_small": burst * tiny,
        "x_burst_new": burst * new_merchant,
        "hour_sin": math.sin(angle),
        "hour_cos": math.cos(angle),
    }


def classifier_inputs(features: dict[str, float]) -> dict[str, float]:
    """The classifier's (unscaled) view: :func:`model_inputs` and :func:`interactions`."""
    x = model_inputs(features)
    x.update(interactions(features))
    return x


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
        Seed of the Half-Space Trees.
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
        self.detector = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=15, height=8, window_size=500, seed=seed
        )
        self.frauds_learned = 0
        self.legit_learned = 0
        self.observed = 0

    def observe(self, features: dict[str, float]) -> None:
        """Learn what normal traffic looks like from one (unlabelled) transaction."""
        x = model_inputs(features)
        self.detector.learn_one(x)
        x.update(interactions(features))
        self.scaler.learn_one(x)
        self.observed += 1

    def learn(self, features: dict[str, float], is_fraud: bool) -> None:
        """Learn from one labelled transaction, given the features it was scored with."""
        self.classifier.learn_one(self.scaler.transform_one(classifier_inputs(features)), is_fraud)
        if is_fraud:
            self.frauds_learned += 1
        else:
            self.legit_learned += 1

    def score(self, features: dict[str, float]) -> FraudScore:
        """Score one transaction (no learning happens here)."""
        x = model_inputs(features)
        anomaly_score = self.detector.score_one(x) if self.observed else 0.0
        x.update(interactions(features))
        z = self.scaler.transform_one(x)
        weight = self.supervised_weight * min(1.0, self.frauds_learned / self.warmup_frauds)
        p_fraud = self._calibrated(self.classifier.predict_proba_one(z)[True]) if weight else 0.0
        score = weight * p_fraud + (1.0 - weight) * anomaly_score
        return FraudScore(
            score=min(max(score, 0.0), 1.0),
            p_fraud=p_fraud,
            anomaly=anomaly_score,
            supervised_weight=weight,
            reasons=self._reasons(z, use_weights=weight > 0),
        )

    def _calibrated(self, p: float) -> float:
        # Legit examples were kept with probability r: the learned odds are 1/r too high.
        p = min(max(p, 1e-12), 1 - 1e-12)
        odds = p / (1.0 - p) * self.legit_sample_rate
        return odds / (1.0 + odds)

    def _reasons(self, z: dict[str, float], use_weights: bool) -> list[str]:
        if use_weights:
            weights = self.classifier._weights
            pushes = {name: weights.get(name, 0.0) * value for name, value in z.items()}
        else:
            pushes = z  # cold start: the most unusual features
        ranked = sorted((push, name) for name, push in pushes.items() if push > 0)
        return [name for _, name in reversed(ranked[-self.n_reasons :])]
