"""The handbook scenario: the transaction simulator of the fraud detection handbook, on eddy's contract.

This follows the simulator of *Reproducible Machine Learning for Credit Card
Fraud Detection - Practical Handbook* (Le Borgne, Siblini, Lebichot and
Bontempi; chapter 3, "Transaction data simulator"), with its customers as
cards (``card_id``) and its terminals as merchants (``merchant_id``).  The
stream is what :func:`~app.simulation.transactions.generate_transaction_stream`
emits for the default scenario: transactions on ``transactions`` and,
``label_delay_seconds`` (plus up to ``label_jitter_seconds``) later, one label
per transaction on ``fraud-labels``; ground truth travels only in
:attr:`~app.simulation.transactions.SimulatedEvent.truth`.

World
    Cards (customers) and terminals are points drawn uniformly on a 100 x 100
    grid.  A card has a mean amount drawn uniformly in [5, 100) EUR, an amount
    standard deviation of half its mean, and a mean number of transactions per
    day drawn uniformly in [0, 4).  It can pay at the terminals strictly within
    Euclidean distance :data:`RADIUS` (5) of its location, its *available
    terminals*; a card without any never pays.

Transactions
    Day ``d`` (0, 1, ... counted from ``start``) gives each card a
    Poisson(mean per day) number of transactions.  Each is at ``start + d days
    + s`` with ``s`` normal (mean 43,200 s, standard deviation 20,000 s), the
    transaction being dropped unless ``0 <= s < 86,400`` (about 3 % are); times
    are rounded to milliseconds and end before ``end``.  Its amount is
    normal(mean, standard deviation) of the card, redrawn uniformly in
    [0, 2 x mean) if negative, rounded to cents; its terminal is drawn uniformly
    among the card's available ones.  Every transaction has country ``BE`` and
    channel ``pos``: the handbook has neither field, and a terminal is a place.

Fraud, applied in this order, a later scenario overriding the kind of an earlier one
    ``high_amount``
        Every transaction above :data:`HIGH_AMOUNT` (220 EUR) is fraud.
    ``compromised_terminal``
        Each day ``d``, terminals are drawn at random (without replacement within
        the day); every transaction at a drawn terminal on days ``d`` to
        ``d + 27`` is fraud.
    ``leaked_credentials``
        Each day ``d``, cards are drawn at random (without replacement within the
        day); of the card's transactions on days ``d`` to ``d + 13``, ``n // 3``
        chosen at random (``n`` their number) are fraud and have their amount
        multiplied by 5 (then rounded to cents).  A transaction chosen again by a
        later draw stays fraud and is not multiplied a second time (the handbook
        would multiply it again; it happens to about 1 % of the cards drawn).

Population and fraud draws per day
    The handbook simulates 5,000 customers and 10,000 terminals and draws 2
    terminals and 3 customers a day.  The default here is 2,000 cards and 4,000
    terminals, so that 120 days are about 465,000 transactions (2 per card-day,
    3 % of times dropped): the size of eddy's soak.  The draws are scaled with
    the population, ``2 x n_merchants / 10,000`` terminals and
    ``3 x n_cards / 5,000`` cards a day (0.8 and 1.2 by default), because that
    keeps each scenario's share of the transactions where the handbook has it:
    at any time about 2 x 28 / 10,000 of the terminals are compromised (0.56 %
    of the traffic) and 3 x 14 / 5,000 of the cards leaked, a third of whose
    transactions are fraud (0.28 %), whatever the population.  A fractional
    number of draws is its whole part plus one more with the probability of its
    fraction, so the handbook's sizes draw exactly 2 and 3 a day.  With 2
    terminals per card, as in the handbook, a card has about 30 available
    terminals (fewer near the edges; 78 in the handbook) and a terminal about 1
    transaction a day.

Measured on the default 120-day stream (seed 0): 463,988 transactions, 0.77 %
of them fraud: 0.06 % ``high_amount``, 0.44 % ``compromised_terminal`` (below
the 0.56 % of the steady state: the compromised terminals accumulate over the
first 28 days) and 0.27 % ``leaked_credentials``.  The handbook reports about
0.8 %.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.simulation.transactions import LABELS_TOPIC, TRANSACTIONS_TOPIC, SimulatedEvent, check_stream_config

HANDBOOK_FRAUD_KINDS: tuple[str, ...] = ("high_amount", "compromised_terminal", "leaked_credentials")
GRID = 100.0  # side of the square of locations
RADIUS = 5.0  # a card pays at the terminals strictly closer than this
HIGH_AMOUNT = 220.0  # EUR: any transaction above is fraud
COMPROMISED_DAYS = 28  # a compromised terminal's days of fraud, the day of its draw included
LEAKED_DAYS = 14  # a leaked card's days of fraud, the day of its draw included
LEAKED_FACTOR = 5.0  # amount multiplier of a fraud on a leaked card
COUNTRY = "BE"
CHANNEL = "pos"

# The handbook's population and its draws per day.
_HANDBOOK_CARDS, _HANDBOOK_TERMINALS = 5_000, 10_000
_HANDBOOK_TERMINAL_DRAWS, _HANDBOOK_CARD_DRAWS = 2, 3
_NOON, _TIME_SPREAD = 43_200.0, 20_000.0
_DAY = 86_400.0
_LEGIT, _HIGH, _COMPROMISED, _LEAKED = range(4)  # 1 + index in HANDBOOK_FRAUD_KINDS
_DISTANCES_PER_CHUNK = 2_000_000  # card-terminal pairs measured at once


@dataclass(frozen=True, slots=True)
class HandbookStreamConfig:
    """Size, span and label delay of a handbook stream; the fraud follows from the size.

    ``n_merchants`` is the number of terminals.  There is no ``fraud_share``:
    the scenarios set it (about 0.85 %, see the module docstring).

    >>> config = HandbookStreamConfig(n_cards=5_000, n_merchants=10_000)
    >>> config.scenario, config.compromised_terminals_per_day, config.leaked_cards_per_day
    ('handbook', 2.0, 3.0)
    """

    seed: int = 0
    n_cards: int = 2_000
    n_merchants: int = 4_000
    start: float = 1_767_225_600.0
    days: float = 60.0
    label_delay_seconds: float = 7 * 86_400
    label_jitter_seconds: float = 0.0

    def __post_init__(self) -> None:
        check_stream_config(self)

    @property
    def scenario(self) -> str:
        return "handbook"

    @property
    def end(self) -> float:
        """First instant after the span of transactions."""
        return self.start + self.days * _DAY

    @property
    def n_days(self) -> int:
        """Days with transactions, the last one possibly cut at ``end``."""
        return math.ceil(self.days)

    @property
    def compromised_terminals_per_day(self) -> float:
        """Terminals drawn a day: the handbook's 2 per 10,000 terminals."""
        return _HANDBOOK_TERMINAL_DRAWS * self.n_merchants / _HANDBOOK_TERMINALS

    @property
    def leaked_cards_per_day(self) -> float:
        """Cards drawn a day: the handbook's 3 per 5,000 customers."""
        return _HANDBOOK_CARD_DRAWS * self.n_cards / _HANDBOOK_CARDS


@dataclass(frozen=True)
class _World:
    card_xy: np.ndarray  # (n_cards, 2)
    mean_amount: np.ndarray
    std_amount: np.ndarray
    tx_per_day: np.ndarray
    terminal_xy: np.ndarray  # (n_merchants, 2)
    reach_start: np.ndarray  # card i's available terminals: reach[reach_start[i]:reach_start[i + 1]]
    reach: np.ndarray


@dataclass(frozen=True)
class _Transactions:
    """Transactions in generation order: by card, then day."""

    card: np.ndarray
    day: np.ndarray
    ts: np.ndarray
    terminal: np.ndarray
    amount: np.ndarray
    kind: np.ndarray


def generate_handbook_stream(config: HandbookStreamConfig) -> Iterator[SimulatedEvent]:
    """Transactions and their labels, merged in non-decreasing event_time order.

    >>> config = HandbookStreamConfig(seed=1, n_cards=100, n_merchants=200, days=14)
    >>> first = next(generate_handbook_stream(config))
    >>> first.topic, first.value["channel"], sorted(first.truth)
    ('transactions', 'pos', ['fraud_kind', 'is_fraud'])
    >>> topics = [event.topic for event in generate_handbook_stream(config)]
    >>> topics.count("transactions") == topics.count("fraud-labels") > 1_000
    True
    """
    world_rng, tx_rng, terminal_rng, card_rng, label_rng = (
        np.random.default_rng(seed) for seed in np.random.SeedSequence(config.seed).spawn(5)
    )
    world = _build_world(config, world_rng)
    txs = _transactions(world, config, tx_rng)
    _compromise_terminals(txs, config, terminal_rng)
    _leak_credentials(txs, config, card_rng)
    yield from _emit(txs, config, label_rng)


# World


def _build_world(config: HandbookStreamConfig, rng: np.random.Generator) -> _World:
    """Card and terminal profiles, and each card's available terminals."""
    card_xy = rng.uniform(0.0, GRID, (config.n_cards, 2))
    mean_amount = rng.uniform(5.0, 100.0, config.n_cards)
    tx_per_day = rng.uniform(0.0, 4.0, config.n_cards)
    terminal_xy = rng.uniform(0.0, GRID, (config.n_merchants, 2))
    reach_start, reach = available_terminals(card_xy, terminal_xy, RADIUS)
    return _World(card_xy, mean_amount, mean_amount / 2.0, tx_per_day, terminal_xy, reach_start, reach)


def available_terminals(
    card_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Terminals strictly within ``radius`` of each card, as ``(start, terminals)``.

    Card ``i``'s terminals, in increasing order, are ``terminals[start[i]:start[i + 1]]``.

    >>> start, terminals = available_terminals(
    ...     np.array([[0.0, 0.0], [10.0, 10.0]]), np.array([[3.0, 4.0], [1.0, 1.0], [9.0, 9.0]]), 5.0)
    >>> start.tolist(), terminals.tolist()  # (3, 4) is at distance 5: not within
    ([0, 1, 2], [1, 2])
    """
    chunk = max(1, _DISTANCES_PER_CHUNK // max(1, len(terminal_xy)))
    counts, found = [], []
    for low in range(0, len(card_xy), chunk):
        block = card_xy[low : low + chunk]
        dx = block[:, 0, None] - terminal_xy[None, :, 0]
        dy = block[:, 1, None] - terminal_xy[None, :, 1]
        rows, columns = np.nonzero(dx * dx + dy * dy < radius * radius)  # row-major: sorted per card
        counts.append(np.bincount(rows, minlength=len(block)))
        found.append(columns)
    start = np.concatenate([[0], np.cumsum(np.concatenate(counts))]) if counts else np.zeros(1, int)
    terminals = np.concatenate(found) if found else np.zeros(0, int)
    return start.astype(np.int64), terminals.astype(np.int64)


# Transactions


def _transactions(world: _World, config: HandbookStreamConfig, rng: np.random.Generator) -> _Transactions:
    """Every card's transactions of every day, before fraud (kinds: ``high_amount`` only)."""
    n_cards, n_days = config.n_cards, config.n_days
    counts = rng.poisson(np.repeat(world.tx_per_day, n_days)).reshape(n_cards, n_days)
    card = np.repeat(np.arange(n_cards), counts.sum(axis=1))
    day = np.repeat(np.tile(np.arange(n_days), n_cards), counts.ravel())
    seconds = rng.normal(_NOON, _TIME_SPREAD, card.size)
    amount = rng.normal(world.mean_amount[card], world.std_amount[card])
    negative = amount < 0
    amount[negative] = rng.uniform(0.0, 2.0 * world.mean_amount[card[negative]])
    draw = rng.random(card.size)

    n_reach = np.diff(world.reach_start)
    ts = np.round(config.start + day * _DAY + seconds, 3)
    keep = (seconds >= 0.0) & (seconds < _DAY) & (ts < config.end) & (n_reach[card] > 0)
    card, day, ts, amount, draw = card[keep], day[keep], ts[keep], np.round(amount[keep], 2), draw[keep]
    pick = np.minimum((draw * n_reach[card]).astype(np.int64), n_reach[card] - 1)
    terminal = world.reach[world.reach_start[card] + pick]
    kind = np.where(amount > HIGH_AMOUNT, _HIGH, _LEGIT)
    return _Transactions(card, day, ts, terminal, amount, kind)


# Fraud


def daily_draws(rng: np.random.Generator, population: int, per_day: float, days: int) -> list[np.ndarray]:
    """For each day, ``per_day`` members of ``range(population)`` drawn without replacement.

    A fractional ``per_day`` draws its whole part, and one more with the
    probability of its fraction: ``per_day`` on average.

    >>> draws = daily_draws(np.random.default_rng(0), 10, 2.0, 3)
    >>> [len(day) for day in draws], all(len(set(day)) == 2 for day in draws)
    ([2, 2, 2], True)
    >>> sum(map(len, daily_draws(np.random.default_rng(0), 10, 0.25, 4_000))) / 4_000
    0.2585
    """
    whole, fraction = divmod(per_day, 1.0)
    draws = []
    for _ in range(days):
        count = min(population, int(whole) + int(rng.random() < fraction))
        draws.append(rng.choice(population, count, replace=False))
    return draws


def _compromise_terminals(txs: _Transactions, config: HandbookStreamConfig, rng: np.random.Generator) -> None:
    """Mark every transaction at a compromised terminal in its 28 days as ``compromised_terminal``."""
    n_days = config.n_days
    compromised = np.zeros((config.n_merchants, n_days), dtype=bool)
    for day, terminals in enumerate(
        daily_draws(rng, config.n_merchants, config.compromised_terminals_per_day, n_days)
    ):
        compromised[terminals, day : day + COMPROMISED_DAYS] = True
    txs.kind[compromised[txs.terminal, txs.day]] = _COMPROMISED


def _leak_credentials(txs: _Transactions, config: HandbookStreamConfig, rng: np.random.Generator) -> None:
    """Mark a third of a leaked card's transactions in its 14 days as ``leaked_credentials``, amount x 5."""
    card_start = np.searchsorted(txs.card, np.arange(config.n_cards + 1))  # txs are by card, then day
    for day, cards in enumerate(daily_draws(rng, config.n_cards, config.leaked_cards_per_day, config.n_days)):
        for card in cards.tolist():
            low, high = card_start[card], card_start[card + 1]
            days = txs.day[low:high]
            window = low + np.flatnonzero((days >= day) & (days < day + LEAKED_DAYS))
            chosen = rng.choice(window, window.size // 3, replace=False)
            fresh = chosen[txs.kind[chosen] != _LEAKED]
            txs.amount[fresh] = np.round(txs.amount[fresh] * LEAKED_FACTOR, 2)
            txs.kind[chosen] = _LEAKED


# Emission


def _emit(
    txs: _Transactions, config: HandbookStreamConfig, rng: np.random.Generator
) -> Iterator[SimulatedEvent]:
    """Transactions in time order, with each label released once its time has come."""
    order = np.argsort(txs.ts, kind="stable")
    ts = txs.ts[order]
    delay = config.label_delay_seconds + rng.uniform(0.0, config.label_jitter_seconds, ts.size)
    label_ts = np.round(ts + delay, 3).tolist()
    card_ids = [f"card-{i:04d}" for i in range(config.n_cards)]
    merchant_ids = [f"m-{i:04d}" for i in range(config.n_merchants)]
    columns = (txs.card[order].tolist(), txs.terminal[order].tolist(), txs.amount[order].tolist())
    kinds = txs.kind[order].tolist()
    pending: list[tuple[float, int, str, bool]] = []
    for seq, (moment, card, terminal, amount, kind) in enumerate(
        zip(ts.tolist(), *columns, kinds, strict=True)
    ):
        while pending and pending[0][0] <= moment:
            yield _label(*heapq.heappop(pending))
        tx_id = f"tx-{seq:09d}"
        is_fraud = kind != _LEGIT
        value = {
            "tx_id": tx_id,
            "card_id": card_ids[card],
            "merchant_id": merchant_ids[terminal],
            "amount": amount,
            "ts": moment,
            "currency": "EUR",
            "country": COUNTRY,
            "channel": CHANNEL,
        }
        truth = {"is_fraud": is_fraud, "fraud_kind": HANDBOOK_FRAUD_KINDS[kind - 1] if is_fraud else None}
        yield SimulatedEvent(TRANSACTIONS_TOPIC, value["card_id"], value, moment, truth)
        heapq.heappush(pending, (label_ts[seq], seq, tx_id, is_fraud))
    while pending:
        yield _label(*heapq.heappop(pending))


def _label(moment: float, _seq: int, tx_id: str, is_fraud: bool) -> SimulatedEvent:
    """The label event of a pending ``(ts, seq, tx_id, is_fraud)`` entry."""
    return SimulatedEvent(
        LABELS_TOPIC, tx_id, {"tx_id": tx_id, "is_fraud": is_fraud, "ts": moment}, moment, None
    )
