"""Deterministic card-transaction stream with delayed fraud labels.

The stream is what a card issuer sees: card payments on the ``transactions``
topic and, ``label_delay_seconds`` later (chargebacks, investigations), one
label per transaction on the ``fraud-labels`` topic. Ground truth travels only
in :attr:`SimulatedEvent.truth`, never in a payload.

This module is the ``default`` scenario, described below; the ``handbook``
scenario (:mod:`app.simulation.handbook`, the simulator of the fraud detection
handbook) emits the same stream format.  :func:`generate_transaction_stream`
takes either's config and :func:`stream_config` builds one by scenario name.

Merchants
    Each merchant has a category (grocery, restaurant, fuel, pharmacy,
    transport, clothing, electronics, home, entertainment, digital,
    marketplace, travel) that sets its amount scale and its online share, a
    country (mostly DE and FR, some neighbours and holiday destinations; web
    shops also in IE, LU, GB, US, CN, HK) and a Zipf-like popularity. A
    transaction's ``country`` is its merchant's country.

Customers (cards)
    Each card has a home country (mostly DE or FR), a typical amount
    (lognormal, median clipped to 10-150 EUR) with its own spread, an activity
    rate (Pareto, 0.3-6 transactions per day, about 0.67 on average), a weekend
    factor, a shift of -1/0/+1 hour of the shared daily rhythm (quiet at night,
    peaks around noon and in the early evening, later on weekends) and 3-10
    favourite merchants that receive 65-90 % of its purchases. Other purchases
    go to merchants drawn by popularity among home-country and (less often)
    foreign online merchants, leisure categories being likelier on weekends.
    An amount is typical x category scale x merchant factor x lognormal noise.

Legitimate noise
    Trips abroad (about one per card-year, 2-14 days, most purchases at
    merchants of the destination, often preceded by a travel booking), rare big
    purchases (electronics, home, travel; 2-5x their usual amount), foreign web
    shops, new merchants and tiny amounts (transport, digital).

Fraud kinds, each about a quarter of the fraudulent transactions
    ``compromised_merchant``
        A few popular point-of-sale merchants are breached (skimmer or hacked
        terminal) for 3-10 days. About 60 % of the cards paying there in person
        during the window have their details sold: 1-21 days after the visit,
        1-4 card-not-present (online) purchases of 1.5-8x the card's typical
        amount follow at merchants new to the card, often abroad, spread over
        hours. The breached merchant's own transactions stay legitimate and the
        card keeps being used by its owner.
    ``stolen_card``
        A card is taken over at a random moment: 3-12 purchases within a few
        hours at merchants the card never used, 3-20x its typical amount,
        mostly online and often abroad, at any hour. Then the card is blocked:
        it has no later transactions.
    ``card_testing``
        5-30 purchases of 0.50-3.00 EUR within minutes at one or two online
        merchants (digital goods, entertainment, marketplaces), followed in
        half the cases by one 5-20x purchase at a new merchant.
    ``amount_anomaly``
        A single purchase 10-50x the card's typical amount at a plausible
        merchant (a favourite or a big-ticket shop), at night in 30 % of cases.

Only fraudulent transactions are labelled ``is_fraud=True``. Cards with fraud
are otherwise ordinary: their legitimate transactions stay ``False``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from app.simulation.handbook import HandbookStreamConfig

TRANSACTIONS_TOPIC = "transactions"
LABELS_TOPIC = "fraud-labels"
FRAUD_KINDS: tuple[str, ...] = (
    "compromised_merchant",
    "stolen_card",
    "card_testing",
    "amount_anomaly",
)

SCENARIOS: tuple[str, ...] = ("default", "handbook")  # "handbook": app/simulation/handbook.py
_LEGIT, _COMPROMISED, _STOLEN, _TESTING, _ANOMALY = range(5)  # 1 + index in FRAUD_KINDS
_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # ts, merchant, amount, online
_DAY = 86_400.0
_HOUR = 3_600.0


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """One record of the stream, with ground truth for transactions."""

    topic: str
    key: str
    value: dict
    event_time: float
    truth: dict | None


def check_stream_config(config: Any) -> None:
    """Refuse a stream config (of any scenario) whose size, span or label delay make no sense."""
    if config.seed < 0:
        raise ValueError("seed must be >= 0")
    if config.n_cards < 1 or config.n_merchants < 1:
        raise ValueError("n_cards and n_merchants must be >= 1")
    if config.days <= 0:
        raise ValueError("days must be > 0")
    if config.label_delay_seconds < 0 or config.label_jitter_seconds < 0:
        raise ValueError("label delay and jitter must be >= 0")


@dataclass(frozen=True, slots=True)
class TransactionStreamConfig:
    """Size, span, fraud share and label delay of a simulated stream."""

    seed: int = 0
    n_cards: int = 2_000
    n_merchants: int = 400
    start: float = 1_767_225_600.0
    days: float = 60.0
    fraud_share: float = 0.015
    label_delay_seconds: float = 7 * 86_400
    label_jitter_seconds: float = 0.0

    def __post_init__(self) -> None:
        check_stream_config(self)
        if not 0 <= self.fraud_share < 0.5:
            raise ValueError("fraud_share must be in [0, 0.5)")

    @property
    def scenario(self) -> str:
        return "default"

    @property
    def end(self) -> float:
        """First instant after the span of transactions."""
        return self.start + self.days * _DAY


def stream_config(scenario: str = "default", **fields: Any) -> TransactionStreamConfig | HandbookStreamConfig:
    """The config of a transaction stream of ``scenario`` (one of :data:`SCENARIOS`).

    Fields not given keep the scenario's defaults (the handbook's: 4,000 merchants).

    >>> stream_config("handbook", days=10.0).n_merchants, stream_config(days=10.0).n_merchants
    (4000, 400)
    """
    if scenario == "default":
        return TransactionStreamConfig(**fields)
    if scenario == "handbook":
        from app.simulation.handbook import HandbookStreamConfig

        return HandbookStreamConfig(**fields)
    raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")


def fraud_kinds(config: TransactionStreamConfig | HandbookStreamConfig) -> tuple[str, ...]:
    """The fraud kinds a stream of ``config`` labels transactions with.

    >>> fraud_kinds(stream_config("handbook"))
    ('high_amount', 'compromised_terminal', 'leaked_credentials')
    """
    if config.scenario == "handbook":
        from app.simulation.handbook import HANDBOOK_FRAUD_KINDS

        return HANDBOOK_FRAUD_KINDS
    return FRAUD_KINDS


@dataclass(frozen=True)
class _Category:
    name: str
    share: float  # share of merchants
    amount_scale: float  # relative to the card's typical amount
    online_share: float  # probability that a merchant of the category is a web shop
    weekend_boost: float  # popularity multiplier on weekends
    fraud_appeal: float  # attractiveness for cashing out stolen card details
    habit: float  # likelihood of becoming a favourite merchant


_CATEGORIES = (
    _Category("grocery", 0.21, 0.8, 0.03, 1.0, 0.1, 1.0),
    _Category("restaurant", 0.16, 0.7, 0.10, 1.6, 0.1, 0.8),
    _Category("fuel", 0.06, 1.3, 0.00, 0.6, 0.2, 0.6),
    _Category("pharmacy", 0.05, 0.5, 0.10, 0.6, 0.1, 0.5),
    _Category("transport", 0.05, 0.15, 0.30, 0.7, 0.3, 0.6),
    _Category("clothing", 0.10, 1.6, 0.35, 1.6, 1.5, 0.2),
    _Category("electronics", 0.06, 3.0, 0.50, 1.3, 4.0, 0.05),
    _Category("home", 0.05, 2.0, 0.30, 1.4, 1.0, 0.1),
    _Category("entertainment", 0.07, 0.6, 0.40, 1.8, 1.0, 0.3),
    _Category("digital", 0.08, 0.25, 1.00, 1.2, 2.0, 0.4),
    _Category("marketplace", 0.05, 1.0, 1.00, 1.1, 3.0, 0.3),
    _Category("travel", 0.05, 5.0, 0.70, 1.0, 2.0, 0.02),
)
_CATEGORY_INDEX = {category.name: i for i, category in enumerate(_CATEGORIES)}
_BIG_TICKET = ("electronics", "home", "travel")
_TESTED_AT = ("digital", "entertainment", "marketplace")

_CARD_COUNTRIES = {"DE": 0.62, "FR": 0.22, "NL": 0.06, "AT": 0.04, "BE": 0.03, "PL": 0.03}
_SHOP_COUNTRIES = {
    "DE": 0.42, "FR": 0.17, "NL": 0.05, "AT": 0.04, "BE": 0.03, "PL": 0.03, "ES": 0.07,
    "IT": 0.07, "PT": 0.03, "GR": 0.03, "HR": 0.02, "GB": 0.02, "US": 0.02,
}  # fmt: skip
_WEB_COUNTRIES = {
    "DE": 0.30, "FR": 0.10, "NL": 0.10, "IE": 0.10, "LU": 0.07, "GB": 0.12, "US": 0.14,
    "CN": 0.04, "HK": 0.03,
}  # fmt: skip
_COUNTRIES = tuple(dict.fromkeys([*_CARD_COUNTRIES, *_SHOP_COUNTRIES, *_WEB_COUNTRIES]))

# Relative activity per UTC hour.
_WEEKDAY_HOURS = np.array([
    0.15, 0.08, 0.04, 0.03, 0.04, 0.12, 0.35, 0.70, 0.90, 1.00, 1.10, 1.40,
    1.70, 1.50, 1.20, 1.20, 1.40, 1.70, 1.90, 1.80, 1.40, 1.00, 0.60, 0.30,
])  # fmt: skip
_WEEKEND_HOURS = np.array([
    0.30, 0.20, 0.10, 0.05, 0.04, 0.05, 0.10, 0.25, 0.50, 0.90, 1.30, 1.60,
    1.70, 1.60, 1.50, 1.50, 1.50, 1.60, 1.80, 1.90, 1.70, 1.30, 0.90, 0.50,
])  # fmt: skip
_WEEKDAY_CUM = np.cumsum(_WEEKDAY_HOURS) / _WEEKDAY_HOURS.sum()
_WEEKEND_CUM = np.cumsum(_WEEKEND_HOURS) / _WEEKEND_HOURS.sum()

_FOREIGN_WEB_SHARE = 0.1  # of routine purchases away from favourites
_FAVOURITE_EXPONENT = 0.6  # favourites are less concentrated than popularity
_BIG_PURCHASE_RATE = 0.006
_AWAY_SHARE = 0.75  # share of a trip's purchases made at the destination
_BOOKING_RATE = 0.6
_COMPROMISE_RATE = 0.6


@dataclass(frozen=True)
class _Pool:
    """Merchants with cumulative sampling weights."""

    merchants: np.ndarray
    cum: np.ndarray

    @classmethod
    def from_weights(cls, weights: np.ndarray) -> _Pool:
        """Pool of the positively weighted merchants, or of all merchants if none."""
        if not np.any(weights > 0):
            weights = np.ones_like(weights)
        merchants = np.flatnonzero(weights > 0)
        return cls(merchants, np.cumsum(weights[merchants]))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` merchants with replacement."""
        picks = np.searchsorted(self.cum, rng.random(size) * self.cum[-1], side="right")
        return self.merchants[np.minimum(picks, self.merchants.size - 1)]


@dataclass(frozen=True)
class _Merchants:
    category: np.ndarray
    country: np.ndarray
    online_share: np.ndarray
    popularity: np.ndarray
    amount_scale: np.ndarray  # category scale x merchant factor


@dataclass(frozen=True)
class _Card:
    home: int
    typical: float
    spread: float
    rate: float
    weekend_factor: float
    hour_shift: int
    favourite_share: float
    favourites: _Pool
    trips: tuple[tuple[float, float, int], ...]  # (begin, end, destination country)


@dataclass(frozen=True)
class _World:
    merchants: _Merchants
    cards: tuple[_Card, ...]
    routine: dict[tuple[int, bool], _Pool]  # (home country, weekend)
    big_ticket: dict[int, _Pool]  # home country
    cash_out: dict[int, _Pool]  # home country
    destination: dict[int, _Pool]  # country -> its point-of-sale merchants
    booking: _Pool
    testing: _Pool


@dataclass(frozen=True)
class _Batch:
    """Transactions of one card and one kind, within the span."""

    card: int
    kind: int
    ts: np.ndarray
    merchant: np.ndarray
    amount: np.ndarray
    online: np.ndarray

    def before(self, moment: float) -> _Batch:
        """The transactions strictly before ``moment``."""
        keep = self.ts < moment
        fields = (self.ts, self.merchant, self.amount, self.online)
        return _Batch(self.card, self.kind, *(field[keep] for field in fields))


def generate_transaction_stream(
    config: TransactionStreamConfig | HandbookStreamConfig,
) -> Iterator[SimulatedEvent]:
    """Transactions and their labels, merged in non-decreasing event_time order.

    A :class:`~app.simulation.handbook.HandbookStreamConfig` gives the handbook
    scenario (:func:`~app.simulation.handbook.generate_handbook_stream`), this
    module's config the default one described above.

    >>> config = TransactionStreamConfig(seed=1, n_cards=100, days=14)
    >>> first = next(generate_transaction_stream(config))
    >>> first.topic, first.value["currency"], first.truth is not None
    ('transactions', 'EUR', True)
    >>> topics = [event.topic for event in generate_transaction_stream(config)]
    >>> topics.count("transactions") == topics.count("fraud-labels") > 0
    True
    """
    if config.scenario == "handbook":
        from app.simulation.handbook import generate_handbook_stream

        yield from generate_handbook_stream(config)  # type: ignore[arg-type]
        return
    assert isinstance(config, TransactionStreamConfig)
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    world_rng, legit_rng, fraud_rng, label_rng = (np.random.default_rng(s) for s in seeds)
    world = _build_world(config, world_rng)
    legit = [_legit_transactions(world, card, config, legit_rng) for card in range(config.n_cards)]
    batches = _add_fraud(world, legit, config, fraud_rng)
    yield from _emit(world, batches, config, label_rng)


# World


def _weights(table: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Country indices and normalised probabilities of a country table."""
    codes = np.array([_COUNTRIES.index(code) for code in table])
    probabilities = np.array(list(table.values()))
    return codes, probabilities / probabilities.sum()


def _build_merchants(n: int, rng: np.random.Generator) -> _Merchants:
    shares = np.array([category.share for category in _CATEGORIES])
    category = rng.choice(len(_CATEGORIES), size=n, p=shares / shares.sum())
    category_online = np.array([c.online_share for c in _CATEGORIES])[category]
    web = rng.random(n) < category_online
    online_share = np.where(web, np.maximum(0.9, category_online), 0.03)
    shop_codes, shop_p = _weights(_SHOP_COUNTRIES)
    web_codes, web_p = _weights(_WEB_COUNTRIES)
    country = np.where(web, rng.choice(web_codes, n, p=web_p), rng.choice(shop_codes, n, p=shop_p))
    popularity = 1.0 / (1.0 + rng.permutation(n))
    scale = np.array([c.amount_scale for c in _CATEGORIES])[category]
    factor = rng.lognormal(0.0, 0.25, n)
    return _Merchants(category, country, online_share, popularity, scale * factor)


def _in_categories(merchants: _Merchants, names: tuple[str, ...]) -> np.ndarray:
    """Mask of the merchants in the named categories."""
    return np.isin(merchants.category, [_CATEGORY_INDEX[name] for name in names])


def _reachable(merchants: _Merchants, home: int, exponent: float) -> np.ndarray:
    """Popularity**exponent weights: home-country merchants, and foreign web shops at 10 %."""
    local = merchants.country == home
    foreign_web = ~local & (merchants.online_share > 0.5)
    weights = np.zeros(local.size)
    for group, share in ((local, 1 - _FOREIGN_WEB_SHARE), (foreign_web, _FOREIGN_WEB_SHARE)):
        if group.any():
            group_weights = merchants.popularity[group] ** exponent
            weights[group] = share * group_weights / group_weights.sum()
    return weights


def _home_pools(merchants: _Merchants, home: int) -> dict[str, _Pool]:
    """Merchant pools for the cards of one home country."""
    local = merchants.country == home
    reachable = _reachable(merchants, home, 1.0)
    habit = np.array([c.habit for c in _CATEGORIES])[merchants.category]
    boost = np.array([c.weekend_boost for c in _CATEGORIES])[merchants.category]
    appeal = np.array([c.fraud_appeal for c in _CATEGORIES])[merchants.category]
    cash_out = np.sqrt(merchants.popularity) * appeal * (0.2 + merchants.online_share)
    return {
        "favourite": _Pool.from_weights(habit * _reachable(merchants, home, _FAVOURITE_EXPONENT)),
        "weekday": _Pool.from_weights(reachable),
        "weekend": _Pool.from_weights(reachable * boost),
        "big_ticket": _Pool.from_weights(reachable * _in_categories(merchants, _BIG_TICKET)),
        "cash_out": _Pool.from_weights(cash_out * np.where(local, 1.5, 1.0)),
    }


def _build_world(config: TransactionStreamConfig, rng: np.random.Generator) -> _World:
    """Merchants, cards and the merchant pools they draw from."""
    merchants = _build_merchants(config.n_merchants, rng)
    homes = [_COUNTRIES.index(code) for code in _CARD_COUNTRIES]
    pools = {home: _home_pools(merchants, home) for home in homes}
    shops = merchants.online_share < 0.5
    destination = {
        int(country): _Pool.from_weights(merchants.popularity * (shops & (merchants.country == country)))
        for country in np.unique(merchants.country[shops])
    }
    web = merchants.online_share > 0.5
    testing = np.sqrt(merchants.popularity) * (web & _in_categories(merchants, _TESTED_AT))
    travel = merchants.popularity * _in_categories(merchants, ("travel",))
    cards = tuple(_build_card(config, merchants, pools, destination, rng) for _ in range(config.n_cards))
    return _World(
        merchants=merchants,
        cards=cards,
        routine={(h, w): pools[h]["weekend" if w else "weekday"] for h in homes for w in (False, True)},
        big_ticket={h: pools[h]["big_ticket"] for h in homes},
        cash_out={h: pools[h]["cash_out"] for h in homes},
        destination=destination,
        booking=_Pool.from_weights(travel),
        testing=_Pool.from_weights(testing),
    )


def _build_card(
    config: TransactionStreamConfig,
    merchants: _Merchants,
    pools: dict[int, dict[str, _Pool]],
    destination: dict[int, _Pool],
    rng: np.random.Generator,
) -> _Card:
    """A card with random habits, favourites and trips."""
    codes, probabilities = _weights(_CARD_COUNTRIES)
    home = int(rng.choice(codes, p=probabilities))
    return _Card(
        home=home,
        typical=float(np.clip(rng.lognormal(math.log(40.0), 0.6), 10.0, 150.0)),
        spread=float(rng.uniform(0.3, 0.8)),
        rate=float(min(6.0, 0.3 * (1.0 + rng.pareto(1.8)))),
        weekend_factor=float(rng.uniform(0.6, 1.4)),
        hour_shift=int(rng.integers(-1, 2)),
        favourite_share=float(rng.uniform(0.65, 0.9)),
        favourites=_favourites(pools[home]["favourite"], rng),
        trips=_trips(config, home, merchants, destination, rng),
    )


def _favourites(candidates: _Pool, rng: np.random.Generator) -> _Pool:
    """3-10 distinct candidates with random preferences."""
    weights = np.diff(candidates.cum, prepend=0.0)
    count = min(int(rng.integers(3, 11)), candidates.merchants.size)
    chosen = rng.choice(candidates.merchants, count, replace=False, p=weights / weights.sum())
    return _Pool(chosen, np.cumsum(rng.exponential(1.0, count)))


def _trips(
    config: TransactionStreamConfig,
    home: int,
    merchants: _Merchants,
    destination: dict[int, _Pool],
    rng: np.random.Generator,
) -> tuple[tuple[float, float, int], ...]:
    """Trips abroad, about one per card-year, to countries with shops."""
    countries = [country for country in destination if country != home]
    if not countries:
        return ()
    appeal = np.array([merchants.popularity[destination[c].merchants].sum() for c in countries])
    trips = []
    for _ in range(rng.poisson(config.days / 365.0)):
        begin = float(rng.uniform(config.start - 3 * _DAY, config.end))
        end = begin + float(rng.uniform(2.0, 14.0)) * _DAY
        trips.append((begin, end, int(rng.choice(countries, p=appeal / appeal.sum()))))
    return tuple(trips)


# Legitimate transactions


def _hours(rng: np.random.Generator, weekend: np.ndarray, shift: int) -> np.ndarray:
    """Fractional UTC hours following the daily rhythm, shifted by ``shift`` hours."""
    draws = rng.random(weekend.size)
    picks = np.where(weekend, np.searchsorted(_WEEKEND_CUM, draws), np.searchsorted(_WEEKDAY_CUM, draws))
    return (np.minimum(picks, 23) + shift + rng.random(weekend.size)) % 24.0


def _calendar(config: TransactionStreamConfig) -> tuple[np.ndarray, np.ndarray]:
    """UTC day numbers overlapping the span and whether each is a weekend day."""
    days = np.arange(math.floor(config.start / _DAY), math.ceil(config.end / _DAY))
    return days, (days + 3) % 7 >= 5  # 1970-01-01 was a Thursday


def _amounts(world: _World, card: _Card, merchant: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Usual amounts of ``card`` at ``merchant``."""
    noise = rng.lognormal(0.0, card.spread, merchant.size)
    return card.typical * world.merchants.amount_scale[merchant] * noise


def _batch(
    config: TransactionStreamConfig,
    card: int,
    kind: int,
    ts: np.ndarray,
    merchant: np.ndarray,
    amount: np.ndarray,
    online: np.ndarray,
) -> _Batch:
    """Round times to milliseconds and amounts to cents; keep the span only."""
    ts = np.round(ts, 3)
    keep = (ts >= config.start) & (ts < config.end)
    amount = np.round(np.maximum(amount[keep], 0.01), 2)
    return _Batch(card, kind, ts[keep], merchant[keep].astype(np.int64), amount, online[keep])


def _legit_transactions(
    world: _World, index: int, config: TransactionStreamConfig, rng: np.random.Generator
) -> _Batch:
    """All legitimate transactions of card ``index``."""
    card = world.cards[index]
    parts = (_purchases(world, card, config, rng), _bookings(world, card, rng))
    ts, merchant, amount, online = (np.concatenate(field) for field in zip(*parts, strict=True))
    return _batch(config, index, _LEGIT, ts, merchant, amount, online)


def _purchases(
    world: _World, card: _Card, config: TransactionStreamConfig, rng: np.random.Generator
) -> _Arrays:
    """Everyday purchases, including trips abroad and rare big purchases."""
    days, weekend_days = _calendar(config)
    counts = rng.poisson(card.rate * np.where(weekend_days, card.weekend_factor, 1.0))
    weekend = np.repeat(weekend_days, counts)
    ts = np.repeat(days, counts) * _DAY + _hours(rng, weekend, card.hour_shift) * _HOUR

    merchant = card.favourites.sample(rng, ts.size)
    for is_weekend in (False, True):
        routine = (rng.random(ts.size) >= card.favourite_share) & (weekend == is_weekend)
        merchant[routine] = world.routine[card.home, is_weekend].sample(rng, int(routine.sum()))
    boost = np.ones(ts.size)
    for begin, end, country in card.trips:
        away = (ts >= begin) & (ts < end) & (rng.random(ts.size) < _AWAY_SHARE)
        merchant[away] = world.destination[country].sample(rng, int(away.sum()))
        boost[away] = 1.2
    big = rng.random(ts.size) < _BIG_PURCHASE_RATE
    merchant[big] = world.big_ticket[card.home].sample(rng, int(big.sum()))
    boost[big] = rng.uniform(2.0, 5.0, int(big.sum()))
    online = rng.random(ts.size) < world.merchants.online_share[merchant]
    return ts, merchant, _amounts(world, card, merchant, rng) * boost, online


def _bookings(world: _World, card: _Card, rng: np.random.Generator) -> _Arrays:
    """Online travel bookings made 3-60 days before some of the card's trips."""
    booked = [trip for trip in card.trips if rng.random() < _BOOKING_RATE]
    ts = np.array([begin - rng.uniform(3.0, 60.0) * _DAY for begin, _, _ in booked])
    merchant = world.booking.sample(rng, ts.size)
    return ts, merchant, _amounts(world, card, merchant, rng), np.ones(ts.size, dtype=bool)


# Fraud


def _log_uniform(rng: np.random.Generator, low: float, high: float, size: int) -> np.ndarray:
    """Log-uniform factors in [low, high)."""
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def _burst(rng: np.random.Generator, first: float, count: int, mean_gap: float) -> np.ndarray:
    """``count`` times from ``first`` with exponential gaps."""
    return first + np.concatenate(([0.0], np.cumsum(rng.exponential(mean_gap, count - 1))))


def _new_merchants(pool: _Pool, used: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` merchants from ``pool``, avoiding ``used`` ones when possible."""
    candidates = pool.sample(rng, 4 * size)
    fresh = candidates[~np.isin(candidates, used)]
    return np.concatenate([fresh, candidates])[:size]


def _collect(target: float, incidents: Iterator[_Batch]) -> list[_Batch]:
    """Consume incidents until they hold ``target`` transactions or run out."""
    batches: list[_Batch] = []
    count = 0
    if target <= 0:
        return batches
    for batch in incidents:
        if batch.ts.size:
            batches.append(batch)
            count += batch.ts.size
        if count >= target:
            break
    return batches


def _add_fraud(
    world: _World, legit: list[_Batch], config: TransactionStreamConfig, rng: np.random.Generator
) -> list[_Batch]:
    """Legitimate batches (stolen cards cut at the theft) followed by fraud batches."""
    odds = config.fraud_share / (1.0 - config.fraud_share)
    per_kind = odds * sum(batch.ts.size for batch in legit) / len(FRAUD_KINDS)
    stolen = _collect(per_kind, _stolen_cards(world, legit, config, rng))
    for batch in stolen:
        legit[batch.card] = legit[batch.card].before(batch.ts[0])
    remaining = odds * sum(batch.ts.size for batch in legit) - sum(b.ts.size for b in stolen)
    per_kind = remaining / (len(FRAUD_KINDS) - 1)
    honest = np.setdiff1d(np.arange(config.n_cards), [batch.card for batch in stolen])
    if honest.size == 0:
        return legit + stolen
    return (
        legit
        + stolen
        + _collect(per_kind, _compromised_merchants(world, legit, honest, config, rng))
        + _collect(per_kind, _card_testing(world, legit, honest, config, rng))
        + _collect(per_kind, _amount_anomalies(world, honest, config, rng))
    )


def _stolen_cards(
    world: _World, legit: list[_Batch], config: TransactionStreamConfig, rng: np.random.Generator
) -> Iterator[_Batch]:
    """Takeover bursts on cards in random order."""
    for index in rng.permutation(config.n_cards):
        card = world.cards[index]
        count = int(rng.integers(3, 13))
        theft = rng.uniform(config.start + 0.1 * config.days * _DAY, config.end)
        merchant = _new_merchants(world.cash_out[card.home], legit[index].merchant, rng, count)
        yield _batch(
            config,
            int(index),
            _STOLEN,
            _burst(rng, theft, count, 0.75 * _HOUR),
            merchant,
            card.typical * _log_uniform(rng, 3.0, 20.0, count),
            rng.random(count) < world.merchants.online_share[merchant],
        )


def _compromised_merchants(
    world: _World,
    legit: list[_Batch],
    honest: np.ndarray,
    config: TransactionStreamConfig,
    rng: np.random.Generator,
) -> Iterator[_Batch]:
    """Card-not-present fraud on cards that visited breached shops."""
    merchants = world.merchants
    ts = np.concatenate([batch.ts for batch in legit])
    card = np.concatenate([np.full(batch.ts.size, batch.card) for batch in legit])
    merchant = np.concatenate([batch.merchant for batch in legit])
    in_person = ~np.concatenate([batch.online for batch in legit]) & np.isin(card, honest)
    shops = np.flatnonzero(merchants.online_share < 0.5)
    if shops.size == 0:
        return
    weights = merchants.popularity[shops]
    compromised: set[int] = set()
    for shop in rng.choice(shops, size=shops.size, replace=False, p=weights / weights.sum()):
        opens = rng.uniform(config.start, config.start + 0.6 * config.days * _DAY)
        closes = opens + rng.uniform(3.0, 10.0) * _DAY
        exposed = in_person & (merchant == shop) & (ts >= opens) & (ts < closes)
        order = np.argsort(ts[exposed], kind="stable")
        victims, first = np.unique(card[exposed][order], return_index=True)
        visits = ts[exposed][order][first]
        for victim, visit in zip(victims.tolist(), visits.tolist(), strict=True):
            if victim in compromised or rng.random() >= _COMPROMISE_RATE:
                continue
            compromised.add(victim)
            owner = world.cards[victim]
            count = int(rng.integers(1, 5))
            yield _batch(
                config,
                victim,
                _COMPROMISED,
                _burst(rng, visit + rng.uniform(1.0, 21.0) * _DAY, count, 6 * _HOUR),
                _new_merchants(world.cash_out[owner.home], legit[victim].merchant, rng, count),
                owner.typical * _log_uniform(rng, 1.5, 8.0, count),
                np.ones(count, dtype=bool),
            )


def _card_testing(
    world: _World,
    legit: list[_Batch],
    honest: np.ndarray,
    config: TransactionStreamConfig,
    rng: np.random.Generator,
) -> Iterator[_Batch]:
    """Bursts of tiny online purchases on random honest cards."""
    while True:
        index = int(rng.choice(honest))
        card = world.cards[index]
        count = int(rng.integers(5, 31))
        ts = _burst(rng, rng.uniform(config.start, config.end), count, rng.uniform(5.0, 40.0))
        merchant = world.testing.sample(rng, 2)[(rng.random(count) < 0.2).astype(int)]
        amount = rng.uniform(0.5, 3.0, count)
        if rng.random() < 0.5:
            ts = np.append(ts, ts[-1] + rng.uniform(600.0, 3 * _HOUR))
            cash_out = _new_merchants(world.cash_out[card.home], legit[index].merchant, rng, 1)
            merchant = np.append(merchant, cash_out)
            amount = np.append(amount, card.typical * _log_uniform(rng, 5.0, 20.0, 1))
        yield _batch(config, index, _TESTING, ts, merchant, amount, np.ones(ts.size, dtype=bool))


def _amount_anomalies(
    world: _World, honest: np.ndarray, config: TransactionStreamConfig, rng: np.random.Generator
) -> Iterator[_Batch]:
    """Single purchases far above habit on random honest cards."""
    while True:
        index = int(rng.choice(honest))
        card = world.cards[index]
        moment = rng.uniform(config.start, config.end, 1)
        day = np.floor(moment / _DAY)
        if rng.random() < 0.3:
            hour = rng.uniform(0.0, 5.0, 1)
        else:
            hour = _hours(rng, (day + 3) % 7 >= 5, card.hour_shift)
        at_hour = day * _DAY + hour * _HOUR
        in_span = (at_hour >= config.start) & (at_hour < config.end)
        favourite = rng.random() < 0.5
        merchant = (card.favourites if favourite else world.big_ticket[card.home]).sample(rng, 1)
        yield _batch(
            config,
            index,
            _ANOMALY,
            np.where(in_span, at_hour, moment),
            merchant,
            card.typical * _log_uniform(rng, 10.0, 50.0, 1),
            rng.random(1) < world.merchants.online_share[merchant],
        )


# Emission


def _emit(
    world: _World, batches: list[_Batch], config: TransactionStreamConfig, rng: np.random.Generator
) -> Iterator[SimulatedEvent]:
    """Transactions in time order, with each label released once its time has come."""
    sizes = [batch.ts.size for batch in batches]
    ts = np.concatenate([batch.ts for batch in batches])
    order = np.argsort(ts, kind="stable")
    card = np.repeat([batch.card for batch in batches], sizes)[order].tolist()
    kind = np.repeat([batch.kind for batch in batches], sizes)[order].tolist()
    merchant = np.concatenate([batch.merchant for batch in batches])[order].tolist()
    amount = np.concatenate([batch.amount for batch in batches])[order].tolist()
    online = np.concatenate([batch.online for batch in batches])[order].tolist()
    delay = config.label_delay_seconds + rng.uniform(0.0, config.label_jitter_seconds, ts.size)
    label_ts = np.round(ts[order] + delay, 3).tolist()
    ts = ts[order].tolist()

    card_ids = [f"card-{i:04d}" for i in range(config.n_cards)]
    merchant_ids = [f"m-{i:04d}" for i in range(config.n_merchants)]
    countries = [_COUNTRIES[c] for c in world.merchants.country.tolist()]
    pending: list[tuple[float, int, str, bool]] = []
    for seq, moment in enumerate(ts):
        while pending and pending[0][0] <= moment:
            yield _label(*heapq.heappop(pending))
        tx_id = f"tx-{seq:09d}"
        is_fraud = kind[seq] != _LEGIT
        value = {
            "tx_id": tx_id,
            "card_id": card_ids[card[seq]],
            "merchant_id": merchant_ids[merchant[seq]],
            "amount": amount[seq],
            "ts": moment,
            "currency": "EUR",
            "country": countries[merchant[seq]],
            "channel": "online" if online[seq] else "pos",
        }
        truth = {
            "is_fraud": is_fraud,
            "fraud_kind": FRAUD_KINDS[kind[seq] - 1] if is_fraud else None,
        }
        yield SimulatedEvent(TRANSACTIONS_TOPIC, value["card_id"], value, moment, truth)
        heapq.heappush(pending, (label_ts[seq], seq, tx_id, is_fraud))
    while pending:
        yield _label(*heapq.heappop(pending))


def _label(moment: float, _seq: int, tx_id: str, is_fraud: bool) -> SimulatedEvent:
    """The label event of a pending ``(ts, seq, tx_id, is_fraud)`` entry."""
    value = {"tx_id": tx_id, "is_fraud": is_fraud, "ts": moment}
    return SimulatedEvent(LABELS_TOPIC, tx_id, value, moment, None)
