"""A flush's recommendations as records: its clicks' rankings computed together and encoded.

The user stage computes them as its flush starts (:class:`~app.stages.flushed.FlushedOutputs`),
in the worker (:func:`encoded_recommendations`) or in its helper process on the other
core (:func:`encoded_in_helper`, the same function on the same inputs, byte for byte):
a :class:`RankingEntry` travels to the helper as :func:`wire_entry`, without the model,
which goes once per snapshot as the chunks' context (:func:`ranking_context`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from app.contracts import ScoredItem
from models.reco_steps import DEFAULT_SETTINGS, RankingRequest, RecoSettings, rank, recommendations_for
from models.recommender import ItemFactors
from tables.user_history import UserFactors


class RankingEntry(NamedTuple):
    """One click's recommendations to compute: for whom, with which model, at what event time."""

    user_id: str
    model_version: int
    ts: float
    request: RankingRequest


def encoded_recommendations(
    entries: Sequence[RankingEntry], settings: RecoSettings = DEFAULT_SETTINGS
) -> list[bytes]:
    """Each entry's ``recommendations`` record, ranked together (:func:`~models.reco_steps.rank`)."""
    rankings = rank([entry.request for entry in entries], settings)
    return [
        recommendations_for(entry.user_id, items, entry.model_version, entry.ts).encode()
        for entry, items in zip(entries, rankings, strict=True)
    ]


# An entry as the helper receives it: the user's factors as bytes, the model left out.
WireEntry = tuple[
    str, int, float, int, "list[ScoredItem] | None", "bytes | None", float, tuple, tuple, frozenset
]


def wire_entry(entry: RankingEntry) -> WireEntry:
    """``entry`` without its model (the chunk's context) and with the user's factors as bytes."""
    request = entry.request
    user = request.user
    return (
        entry.user_id,
        entry.model_version,
        entry.ts,
        request.k,
        request.ranked,
        None if user is None else user.latent.tobytes(),
        0.0 if user is None else user.bias,
        request.trending,
        request.recent,
        request.purchased,
    )


def ranking_context(
    entry: RankingEntry, settings: RecoSettings = DEFAULT_SETTINGS
) -> tuple[object, Callable[[], Any]] | None:
    """What the helper needs besides ``entry``: its model's item factors (the key: one context per
    model) and the settings; ``None`` for an entry ranked already (a user's first click)."""
    request = entry.request
    if request.ranked is not None:
        return None
    factors = request.factors
    return factors, lambda: (factors, settings)


def encoded_in_helper(
    context: tuple[ItemFactors, RecoSettings] | None, wired: Sequence[WireEntry]
) -> list[bytes]:
    """:func:`encoded_recommendations` of the entries :func:`wire_entry` sent, in the context
    :func:`ranking_context` gave."""
    factors, settings = context if context is not None else (None, DEFAULT_SETTINGS)
    entries = []
    for user_id, version, ts, k, ranked, latent, bias, trending, recent, purchased in wired:
        user = None if latent is None else UserFactors(np.frombuffer(latent), bias)
        request = RankingRequest(
            k,
            ranked=ranked,
            factors=None if ranked is not None else factors,
            user=user,
            trending=trending,
            recent=recent,
            purchased=purchased,
        )
        entries.append(RankingEntry(user_id, version, ts, request))
    return encoded_recommendations(entries, settings)
