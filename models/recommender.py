"""An online biased matrix factorisation, split between the user stage and one learner.

The model is River's :class:`river.reco.BiasedMF`: a user's affinity for an item is
predicted as ``global_mean + b_u + b_i + <v_u, v_i>`` and every interaction is one
SGD step on the squared error towards its target (:data:`TARGETS`: implicit
feedback, a purchase says more than a view; sampled items the user did not touch
are negatives with target 0, see :mod:`models.reco_steps`).

Where each half of the parameters lives, so that the published snapshot is bounded:

* **User factors** ``(v_u, b_u)`` live in the user's own state
  (:class:`~tables.user_history.UserFactors`), owned by the worker that owns the user.
  That worker takes the user's half of each SGD step (:meth:`Recommender.learn_user_steps`)
  with the item factors of the newest snapshot it has.
* **Item factors** ``(v_i, b_i)`` and the global mean live in the one learner's
  :class:`Recommender`.  The user stage sends it a :class:`TrainingExample` per step:
  the item, the target and the user's factors *as they were before the step*.  The
  learner takes the item's half of ``BiasedMF.learn_one`` with those factors
  (:meth:`Recommender.learn`) and no user enters its model.
  Both halves of a step are then computed from the same pre-step user factors, as
  in River's own ``learn_one``; the item factors the user stage used may be one
  snapshot old (bounded staleness, as everywhere else in eddy).
* At most ``max_items`` items keep factors: the least recently learned are
  forgotten.  The snapshot therefore holds at most ``max_items x (n_factors + 1)``
  numbers whatever the number of users or the length of the stream: 452,594 bytes pickled
  and compressed at the cap of 5,000 items of 10 factors (MAX_SNAPSHOT_BYTES is 921,600).

An item the model does not know scores as if its factors were zero (its bias and
dot product are 0), so the learner's random initialisation of a new item never
reaches a worker before it has been learned.
"""

from __future__ import annotations

import operator
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from river import optim, reco
from river.utils.math import clamp

from models.learner import Learner
from models.snapshots import Snapshot
from tables.user_history import UserFactors

N_FACTORS = 10
MAX_ITEMS = 5_000
TARGETS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0}
NEGATIVE_TARGET = 0.0
_INIT_SIGMA = 0.1


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One SGD step for the learner: an item, its target and the user's factors before the step.

    >>> example = TrainingExample("i1", (0.5, -0.25), 0.125, 2.0)
    >>> example.encode()
    b'["i1",[0.5,-0.25],0.125,2.0]'
    >>> TrainingExample.decode(example.encode()) == example
    True
    """

    item_id: str
    user_latent: tuple[float, ...]
    user_bias: float
    target: float

    def encode(self) -> bytes:
        return orjson.dumps([self.item_id, self.user_latent, self.user_bias, self.target])

    @classmethod
    def decode(cls, data: bytes) -> TrainingExample:
        item_id, latent, bias, target = orjson.loads(data)
        return cls(str(item_id), tuple(map(float, latent)), float(bias), float(target))


class ItemFactors:
    """The item half of a model as one matrix, for scoring and neighbours.

    The factors are read only; what is derived from them (each item's nearest, the rows of
    the last trending items) is kept for the life of the model.

    Rows follow ``ids``; ``unit_t`` holds the rows scaled to unit length (zero rows stay
    zero), transposed: one item per column, so that a few items' similarities to all are
    one contiguous product.  Row ``len(ids)`` is an unknown item's: factors and bias zero.
    """

    __slots__ = (
        "_nearest",
        "_padded_biases",
        "_padded_matrix",
        "_rows_memo",
        "biases",
        "global_mean",
        "ids",
        "index",
        "matrix",
        "unit_t",
    )

    def __init__(self, ids: list[str], matrix: np.ndarray, biases: np.ndarray, global_mean: float) -> None:
        self.ids = ids
        self.index = {item_id: row for row, item_id in enumerate(ids)}
        # One zero row (and bias) after the items: an unknown item's, so scoring needs no mask.
        self._padded_matrix = np.vstack([matrix, np.zeros((1, matrix.shape[1]))])
        self._padded_biases = np.append(biases, 0.0)
        self.matrix = self._padded_matrix[:-1]
        self.biases = self._padded_biases[:-1]
        self.global_mean = global_mean
        norms = np.linalg.norm(matrix, axis=1, keepdims=True) if len(ids) else np.zeros((0, 1))
        self.unit_t = np.ascontiguousarray((matrix / np.where(norms > 0.0, norms, 1.0)).T)
        # row -> its nearest rows, best first; at most one entry per item, for this model's life.
        self._nearest: dict[int, list[int]] = {}
        self._rows_memo: tuple[tuple[str, ...], tuple[tuple[int, ...], tuple[str, ...]]] | None = None

    def rows(self, item_ids: Sequence[str]) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The rows of the known ``item_ids``, in their order, and the unknown ids.

        The answer for the last tuple asked is kept (a tuple cannot change): trending items
        are the same tuple for many clicks in a row.

        >>> factors = ItemFactors(["a", "b"], np.eye(2), np.zeros(2), 0.0)
        >>> factors.rows(["b", "zz", "a"])
        ((1, 0), ('zz',))
        """
        memo = self._rows_memo
        if memo is not None and memo[0] is item_ids:
            return memo[1]
        index = self.index
        known = tuple(row for row in map(index.get, item_ids) if row is not None)
        unknown = tuple(item for item in item_ids if item not in index) if len(known) < len(item_ids) else ()
        found = known, unknown
        if type(item_ids) is tuple:
            self._rows_memo = (item_ids, found)
        return found

    def row_scores(self, user: UserFactors, rows: np.ndarray) -> np.ndarray:
        """Predicted affinity of ``user`` for the items at ``rows`` (``len(ids)``: an unknown item)."""
        return (self.global_mean + user.bias) + (
            self._padded_biases[rows] + self._padded_matrix[rows] @ user.latent
        )

    def pair_scores(
        self, latents: np.ndarray, offsets: np.ndarray, owners: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Predicted affinity of user ``owners[j]`` for the item at ``rows[j]``, for every ``j``:
        users are given by their ``latents`` (one row each) and ``offsets`` (global mean plus bias)."""
        products = np.einsum("ij,ij->i", self._padded_matrix[rows], latents[owners])
        return offsets[owners] + (self._padded_biases[rows] + products)

    def scores(self, user: UserFactors, item_ids: Sequence[str]) -> np.ndarray:
        """Predicted affinity of ``user`` for each of ``item_ids`` (unknown items: factors zero)."""
        unknown = len(self.ids)
        index = self.index
        return self.row_scores(user, np.array([index.get(item, unknown) for item in item_ids], dtype=np.intp))

    def similar_rows(self, seeds: Sequence[int], k: int) -> list[int]:
        """The ``ceil(k / len(seeds))`` items most similar (cosine) to each of the ``seeds`` rows
        (all others if fewer), each seed's best first (ties: smaller row), never the seed itself;
        rows may repeat.

        A seed's ``k`` nearest are computed once for this model's life (items' factors
        change only with the next snapshot), so each click pays a lookup for its seeds.

        >>> factors = ItemFactors(["a", "b", "c"], np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]),
        ...                       np.zeros(3), 0.0)
        >>> factors.similar_rows([0], k=1), factors.similar_rows([0, 2], k=3)
        ([1], [1, 2, 1, 0])
        """
        if not len(seeds) or k < 1:
            return []
        nearest = self._nearest
        depth = min(k, len(self.ids) - 1)
        missing = [row for row in dict.fromkeys(seeds) if row not in nearest or len(nearest[row]) < depth]
        if missing:
            self._find_nearest(missing, depth)
        per_seed = -(-k // len(seeds))
        found: list[int] = []
        for row in seeds:
            found += nearest[row][:per_seed]
        return found

    def _find_nearest(self, rows: list[int], count: int) -> None:
        if count < 1:
            for row in rows:
                self._nearest[row] = []
            return
        similarity = self.unit_t[:, rows].T @ self.unit_t
        similarity[np.arange(len(rows)), rows] = -np.inf
        # Each row's count-th best similarity; every item at least that good is a contender,
        # so that ties at the boundary go to the smaller row, as everywhere else.
        kth = len(self.ids) - count
        thresholds = np.partition(similarity, kth, axis=1)[:, kth]
        for row, similarities, threshold in zip(rows, similarity, thresholds.tolist(), strict=True):
            contenders = np.flatnonzero(similarities >= threshold)
            best = contenders[np.lexsort((contenders, -similarities[contenders]))]
            self._nearest[row] = best[:count].tolist()

    def __len__(self) -> int:
        return len(self.ids)

    def __reduce__(self) -> tuple[type, tuple[list[str], np.ndarray, np.ndarray, float]]:
        """Pickled as the factors alone: what is derived is derived again where it is unpickled."""
        return ItemFactors, (self.ids, self.matrix, self.biases, self.global_mean)


class Recommender:
    """River's ``BiasedMF`` holding item factors only; each step's user factors come with its example.

    >>> model = Recommender(n_factors=2, seed=1)
    >>> user = model.new_user("u1")
    >>> for _ in range(20):
    ...     example = model.training_example(user, "liked", 5.0)
    ...     user = model.learn_user(user, "liked", 5.0)
    ...     model.learn(example)
    ...     model.learn(model.training_example(user, "ignored", 0.0))
    >>> factors = model.item_factors()
    >>> [round(float(s), 2) for s in factors.scores(user, ["liked", "ignored"])]
    [4.49, 1.76]
    >>> len(model.mf.u_latents)  # users are never kept by the model
    0
    """

    def __init__(
        self,
        n_factors: int = N_FACTORS,
        learning_rate: float = 0.02,
        l2: float = 0.01,
        max_items: int = MAX_ITEMS,
        seed: int = 0,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.l2 = l2
        self.max_items = max_items
        self.seed = seed
        self.mf = reco.BiasedMF(
            n_factors=n_factors,
            bias_optimizer=optim.SGD(learning_rate),
            latent_optimizer=optim.SGD(learning_rate),
            l2_bias=l2,
            l2_latent=l2,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=_INIT_SIGMA, seed=seed),
            seed=seed,
        )
        # Items in the order they were last learned, oldest first (a dict as an ordered set).
        self._recent: dict[str, None] = {}
        self.learned = 0
        self.evicted = 0
        self._factors: ItemFactors | None = None

    # --- the learner's side ----------------------------------------------------------------

    def learn(self, example: TrainingExample) -> None:
        """Take the item's half of one SGD step, then forget the least recently learned items over the cap.

        This is ``BiasedMF.learn_one`` with the example's user factors, minus the user's half:
        River's global mean, item dictionaries (a new item's factors drawn by River's
        initializer), optimizers' learning rates and iteration counts, and its loss, each used
        as ``learn_one`` uses them.  The same to rounding: the dot product is summed in order
        where River calls ``np.dot`` (bit for bit at 10 factors, within 1e-15 at 16 or 32). In floats
        rather than River's per-step dictionaries and arrays: the one learner takes three of these per
        click for the whole cluster.
        """
        mf = self.mf
        mf.global_mean.update(example.target)
        item_id = example.item_id
        item_latent = mf.i_latents[item_id]  # a new item's: drawn by River's initializer, as learn_one does
        item_bias = mf.i_biases[item_id]
        latent = item_latent.tolist()
        user_latent = example.user_latent
        prediction = (
            mf.global_mean.get() + example.user_bias + item_bias + sum(map(operator.mul, user_latent, latent))
        )
        gradient = clamp(mf.loss.gradient(example.target, prediction), -mf.clip_gradient, mf.clip_gradient)
        bias_optimizer, latent_optimizer = mf.i_bias_optimizer, mf.i_latent_optimizer
        mf.i_biases[item_id] = item_bias - bias_optimizer.learning_rate * (gradient + mf.l2_bias * item_bias)
        rate, l2 = latent_optimizer.learning_rate, mf.l2_latent
        item_latent[:] = [
            v - rate * (gradient * u + l2 * v) for u, v in zip(user_latent, latent, strict=True)
        ]
        # learn_one steps all four optimizers; the users' two only count (their half is dropped).
        for optimizer in (mf.u_bias_optimizer, bias_optimizer, mf.u_latent_optimizer, latent_optimizer):
            optimizer.n_iterations += 1
        recent = self._recent
        recent.pop(example.item_id, None)
        recent[example.item_id] = None
        while len(recent) > self.max_items:
            oldest = next(iter(recent))
            del recent[oldest]
            mf.i_latents.pop(oldest, None)
            mf.i_biases.pop(oldest, None)
            self.evicted += 1
        self.learned += 1
        self._factors = None

    def item_factors(self) -> ItemFactors:
        """The item half as one matrix; built once until the next :meth:`learn`."""
        if self._factors is None:
            ids = list(self._recent)
            mf = self.mf
            matrix = (
                np.array([mf.i_latents[item] for item in ids], dtype=np.float64)
                if ids
                else np.zeros((0, self.n_factors))
            )
            biases = np.array([mf.i_biases[item] for item in ids], dtype=np.float64)
            self._factors = ItemFactors(ids, matrix, biases, float(mf.global_mean.get()))
        return self._factors

    # --- the user stage's side -------------------------------------------------------------

    def new_user(self, user_id: str) -> UserFactors:
        """A new user's factors: small random values drawn from the id, so that a replay draws the same."""
        rng = np.random.default_rng(zlib.crc32(user_id.encode()))
        return UserFactors(rng.normal(0.0, _INIT_SIGMA, self.n_factors), 0.0)

    def training_example(self, user: UserFactors, item_id: str, target: float) -> TrainingExample:
        """What the learner needs of a step: call it before :meth:`learn_user` takes the step."""
        return TrainingExample(item_id, tuple(user.latent.tolist()), user.bias, target)

    def learn_user(self, user: UserFactors, item_id: str, target: float) -> UserFactors:
        """The user's half of one SGD step towards ``target``, as ``BiasedMF.learn_one`` takes it.

        The item's factors are the newest this model has (zero for an item it does not know).
        """
        return self.learn_user_steps(user, [(item_id, target)])[1]

    def learn_user_steps(
        self, user: UserFactors, steps: Sequence[tuple[str, float]]
    ) -> tuple[list[TrainingExample], UserFactors]:
        """:meth:`learn_user` for each ``(item_id, target)`` in turn: each step's
        :meth:`training_example` (the factors before it), and the factors after the last.

        In floats rather than arrays: a step is ten multiply-adds, less than numpy's
        overhead per operation.
        """
        factors = self.item_factors()
        index, matrix, biases = factors.index, factors.matrix, factors.biases
        base = factors.global_mean
        mf = self.mf
        gradient_of, clip = mf.loss.gradient, mf.clip_gradient
        lr, l2 = self.learning_rate, self.l2
        latent, bias = user.latent.tolist(), user.bias
        zeros = [0.0] * len(latent)
        examples = []
        for item_id, target in steps:
            examples.append(TrainingExample(item_id, tuple(latent), bias, target))
            row = index.get(item_id)
            if row is None:
                item_latent, item_bias = zeros, 0.0
            else:
                item_latent, item_bias = matrix[row].tolist(), float(biases[row])
            prediction = base + bias + item_bias + sum(map(operator.mul, latent, item_latent))
            gradient = clamp(gradient_of(target, prediction), minimum=-clip, maximum=clip)
            latent = [u - lr * (gradient * v + l2 * u) for u, v in zip(latent, item_latent, strict=True)]
            bias = bias - lr * (gradient + l2 * bias)
        return examples, UserFactors(np.array(latent), bias)

    # --- snapshots -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Item factors packed into one array (one pickled object instead of one per item)."""
        factors = self.item_factors()
        mf = object.__new__(type(self.mf))
        mf.__dict__.update(self.mf.__dict__)
        mf.i_latents = type(self.mf.i_latents)(self.mf.i_latents.default_factory)
        mf.i_biases = type(self.mf.i_biases)(self.mf.i_biases.default_factory)
        state = {name: value for name, value in self.__dict__.items() if name not in {"mf", "_factors"}}
        return {**state, "mf": mf, "items": (factors.ids, factors.matrix, factors.biases)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        ids, matrix, biases = state.pop("items")
        self.__dict__.update(state)
        self._factors = None
        for item, latent, bias in zip(ids, matrix, biases.tolist(), strict=True):
            self.mf.i_latents[item] = latent.copy()
            self.mf.i_biases[item] = bias


def snapshot_bytes(model: Recommender) -> int:
    """Size of ``model`` pickled and compressed as a snapshot stores it (signature and header aside)."""
    return len(zlib.compress(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL), level=1))


# --- the learner -------------------------------------------------------------------------

MODEL_NAME = "recommendations"


class RecoLearner(Learner):
    """Applies training examples in order to the item half of one :class:`Recommender`.

    >>> learner = RecoLearner(Recommender(n_factors=2))
    >>> learner.apply(TrainingExample("i1", (0.1, 0.2), 0.0, 5.0))
    >>> learner.counts["examples"], len(learner.model.item_factors())
    (1, 1)
    """

    name = MODEL_NAME

    def apply(self, record: TrainingExample) -> None:
        self.model.learn(record)
        self.counts["examples"] += 1

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> RecoLearner:
        learner = cls(snapshot.model)
        learner.resume_from(snapshot)
        return learner

    def report(self) -> dict[str, Any]:
        return {
            "model_version": self.version,
            "training_offset": self.training_offset,
            "counts": dict(self.counts),
            "items_with_factors": len(self.model.item_factors()),
            "items_forgotten": self.model.evicted,
        }


def encode_training(examples: Sequence[TrainingExample]) -> bytes:
    """One training message of ``examples``.

    >>> data = encode_training([TrainingExample("i1", (0.5,), 0.0, 1.0)])
    >>> data
    b'[["i1",[0.5],0.0,1.0]]'
    >>> decode_training(data)
    [TrainingExample(item_id='i1', user_latent=(0.5,), user_bias=0.0, target=1.0)]
    """
    return orjson.dumps([[e.item_id, e.user_latent, e.user_bias, e.target] for e in examples])


def decode_training(data: bytes | None) -> list[TrainingExample]:
    """The examples of one training message; raises ``ValueError``/``TypeError`` on a bad one."""
    rows = orjson.loads(data or b"null")
    if not isinstance(rows, list):
        raise TypeError(f"expected a list of training examples, got {type(rows).__name__}")
    return [
        TrainingExample(str(item), tuple(map(float, latent)), float(bias), float(target))
        for item, latent, bias, target in rows
    ]
