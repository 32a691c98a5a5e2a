import random

from app.stages.lag import LagSample


def test_quantiles_from_one_sort_equal_each_quantile_sorted_on_its_own():
    rng = random.Random(3)
    lags = LagSample(size=1_000)
    for _ in range(2_500):  # more than it keeps: the last 1,000 count
        lags.add(rng.expovariate(20.0))
    kept = list(lags.values)
    qs = (0.0, 0.5, 0.95, 0.99, 1.0)
    assert lags.quantiles(*qs) == [sorted(kept)[min(len(kept) - 1, int(q * len(kept)))] for q in qs]
    assert lags.report() == {
        "p50_ms": round(lags.quantile(0.5) * 1000.0, 1),
        "p99_ms": round(lags.quantile(0.99) * 1000.0, 1),
        "max_ms": round(max(kept) * 1000.0, 1),
    }


def test_an_empty_sample_has_no_quantiles():
    assert LagSample().quantiles(0.5, 0.99) == [None, None]
    assert LagSample().report() == {"p50_ms": None, "p99_ms": None, "max_ms": None}
