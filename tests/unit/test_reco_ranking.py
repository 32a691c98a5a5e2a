"""A flush's recommendations ranked in the helper process are the worker's own, byte for byte."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from app.contracts import CLICK_ACTIONS, Click
from app.stages.helper import HelperProcess
from models.reco_ranking import (
    RankingEntry,
    encoded_in_helper,
    encoded_recommendations,
    ranking_context,
    wire_entry,
)
from models.reco_steps import RecoSettings, ranking_request, record_interaction
from tables.user_history import UserHistory
from tests.unit.test_reco_steps import flush_clicks, popular, trained_model


def _entries(clicks: list[tuple[str, str, str]], k: int, new_model_midway: bool) -> list[RankingEntry]:
    """Each click's entry as the agent takes it: users clicking again, purchases, items the model
    never learned, first clicks (ranked already) and, if asked, a second model from midway."""
    model, version = trained_model([f"i{n}" for n in range(40)]), 1
    popularity = popular({f"i{n}": float(n % 7) for n in range(0, 45, 2)})
    users: dict[str, UserHistory] = {}
    entries = []
    for n, (user_id, item, action) in enumerate(clicks):
        if new_model_midway and n == len(clicks) // 2:
            model, version = trained_model([f"i{n}" for n in range(5, 42)]), 2
        user = users.setdefault(user_id, UserHistory())
        if n % 5 == 0:
            user = users[user_id] = UserHistory()  # a first click: trending, no model
        request = ranking_request(user, popularity, model, k, float(n))
        record_interaction(user, Click(user_id, item, action, float(n)), model)
        entries.append(RankingEntry(user_id, version, float(n), request))
    return entries


def _through_the_wire(entries: list[RankingEntry], settings_: RecoSettings) -> list[bytes]:
    """What the helper answers, run by run of one model as FlushedOutputs sends them (pickled both ways)."""
    answers: list[bytes] = []
    context = None
    run: list[RankingEntry] = []
    for entry in [*entries, None]:
        needs = None if entry is None else ranking_context(entry, settings_)
        if entry is None or (needs is not None and context is not None and needs[0] is not context[0]):
            wired = pickle.loads(pickle.dumps([wire_entry(e) for e in run]))
            sent = None if context is None else pickle.loads(pickle.dumps(context[1]()))
            answers += encoded_in_helper(sent, wired)
            run = []
        if entry is not None:
            context = needs or context
            run.append(entry)
    return answers


@settings(max_examples=60, deadline=None)
@given(
    flush_clicks,
    st.integers(1, 12),
    st.booleans(),
    st.sampled_from([RecoSettings(), RecoSettings(similar_candidates=7, history_seeds=2)]),
)
def test_the_helper_ranks_what_the_worker_ranks_byte_for_byte(clicks, k, new_model_midway, settings_):
    entries = _entries(clicks, k, new_model_midway)
    assert _through_the_wire(entries, settings_) == encoded_recommendations(entries, settings_)


def test_a_helper_process_answers_the_agents_chunks_with_the_worker_s_bytes():
    clicks = [(f"u{n % 7}", f"i{(n * 11) % 45}", CLICK_ACTIONS[n % 4]) for n in range(200)]
    entries = _entries(clicks, 10, new_model_midway=True)
    helper = HelperProcess("models.reco_ranking:encoded_in_helper")
    try:
        chunks = []
        for start in range(0, len(entries), 50):  # each chunk of one model, as FlushedOutputs sends them
            chunk = entries[start : start + 50]
            context = ranking_context(chunk[-1])
            assert context is not None
            chunks.append(helper.submit(context[0], context[1], [wire_entry(entry) for entry in chunk]))
        answers = [output for chunk in chunks for output in helper.results(chunk) or [b"lost"]]
    finally:
        helper.close()
    assert answers == encoded_recommendations(entries)
    assert helper.counts["contexts"] == 2
