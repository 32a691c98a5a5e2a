from benchmarks.soak import completion


def _decision(tx_id: str, score: float = 0.1, decision: str = "approve", version: int = 3) -> dict:
    return {"tx_id": tx_id, "score": score, "decision": decision, "model_version": version}


def test_completion_counts_lost_repeated_and_differently_repeated_transactions():
    decisions = [
        _decision("t1"),
        _decision("t1"),  # an identical repeat
        _decision("t2"),
        _decision("t2", score=0.9, decision="review"),  # a repeat with another outcome
        _decision("t3"),
    ]
    done = completion(5, decisions)
    assert (done.decided, done.lost, done.repeated, done.repeated_differently) == (3, 2, 2, 1)


def test_completion_of_a_clean_run_has_nothing_lost_or_repeated():
    done = completion(2, [_decision("a"), _decision("b")])
    assert (done.lost, done.repeated, done.repeated_differently) == (0, 0, 0)
