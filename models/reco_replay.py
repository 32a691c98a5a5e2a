"""The recommendations user stage replayed in one process, as deployed.

The quality evaluation (:mod:`models.reco_quality`) and the in-process benchmark
(:mod:`benchmarks.reco_in_process`) replay a click stream in event-time order through
the pipeline's own steps (:mod:`models.reco_steps`) with this harness:

* each user's state is learned with the newest *snapshot* of the one learner (a copy,
  refreshed every ``snapshot_every`` training examples), as a worker holds it;
* item popularity is updated once per ``flush_every`` clicks, as the user stage's flush
  sends the item stage its deltas.
"""

from __future__ import annotations

import pickle

from app.contracts import Click
from models.reco_steps import DEFAULT_SETTINGS, RecoSettings, record_interaction
from models.recommender import Recommender, TrainingExample
from tables.item_popularity import ItemDeltas, ItemPopularity
from tables.user_history import UserHistory


class UserStageReplay:
    """Users' states, the popularity view and the served model of one replay, with its learner.

    >>> replay = UserStageReplay(Recommender(n_factors=2), flush_every=2)
    >>> for ts in (0.0, 1.0):
    ...     click = Click("u1", "i1", "view", ts)
    ...     replay.learn(replay.record(replay.user("u1"), click))
    ...     if replay.flush_due():
    ...         replay.flush()
    >>> replay.popularity.trending(1.0, k=1, horizon="hour"), replay.learner.learned  # no negatives yet
    ([('i1', 2.0)], 2)
    """

    def __init__(
        self,
        learner: Recommender,
        settings: RecoSettings = DEFAULT_SETTINGS,
        *,
        snapshot_every: int = 2_000,
        flush_every: int = 100,
    ) -> None:
        self.learner = learner
        self.served = served_copy(learner)
        self.settings = settings
        self.snapshot_every = snapshot_every
        self.flush_every = flush_every
        self.users: dict[str, UserHistory] = {}
        self.popularity = ItemPopularity()
        self.deltas = ItemDeltas()
        self.clicks = 0
        self.snapshots = 0
        self._since_snapshot = 0

    def user(self, user_id: str) -> UserHistory:
        """The user's state (a new user's when never seen)."""
        user = self.users.get(user_id)
        if user is None:
            user = self.users[user_id] = UserHistory()
        return user

    def record(self, user: UserHistory, click: Click) -> list[TrainingExample]:
        """:func:`~models.reco_steps.record_interaction` with the served model, into this flush's deltas."""
        self.clicks += 1
        return record_interaction(user, click, self.served, self.deltas, self.settings)

    def learn(self, examples: list[TrainingExample]) -> None:
        """The learner's side: apply ``examples``; serve a new snapshot every ``snapshot_every`` of them."""
        for example in examples:
            self.learner.learn(example)
        self._since_snapshot += len(examples)
        if self._since_snapshot >= self.snapshot_every:
            self.served, self._since_snapshot = served_copy(self.learner), 0
            self.snapshots += 1

    def flush_due(self) -> bool:
        """Whether the user stage flushes after the click just recorded."""
        return self.clicks % self.flush_every == 0

    def flush(self) -> None:
        """Apply the flush's deltas to the popularity view and start the next flush's."""
        self.popularity.apply(self.deltas)
        self.deltas = ItemDeltas()


def served_copy(model: Recommender) -> Recommender:
    """What a worker holds after decoding a snapshot: a copy, never the learner's own model."""
    copy: Recommender = pickle.loads(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return copy
