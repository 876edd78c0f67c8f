"""Input features: their validation, the reference's profile (sketch error bound), the
per-feature tests against scipy and by hand, and each alarm boundary."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats

from mlops_cli import ValidationError
from mlops_cli import feature_drift as fd
from mlops_cli.features import validate_features

# -- validation --------------------------------------------------------------------------------


def test_every_kind_of_value_passes() -> None:
    doc = {"a": 1, "b": 2.5, "c": "x", "d": True, "e": None, "f.g:h-i_j": -3}
    assert validate_features(doc) == doc


def test_numpy_scalars_become_their_python_values() -> None:
    got = validate_features({"a": np.float64(1.5), "b": np.int64(3), "c": np.bool_(True)})
    assert got == {"a": 1.5, "b": 3, "c": True}
    assert [type(v) for v in got.values()] == [float, int, bool]


def test_at_most_1000_features() -> None:
    validate_features({f"f{i}": 1 for i in range(1000)})
    with pytest.raises(ValidationError, match="1,001 features; at most 1,000"):
        validate_features({f"f{i}": 1 for i in range(1001)})


def test_names_up_to_128_characters_of_the_allowed_set() -> None:
    validate_features({"n" * 128: 1})
    for bad in ("n" * 129, "", "a b", "é", "a/b", 5):
        with pytest.raises(ValidationError, match="feature name"):
            validate_features({bad: 1})


def test_strings_up_to_256_bytes_of_utf8() -> None:
    validate_features({"a": "x" * 256, "b": "é" * 128})
    with pytest.raises(ValidationError, match="257 bytes long; at most 256"):
        validate_features({"a": "x" * 255 + "é"})
    with pytest.raises(ValidationError, match="NUL"):
        validate_features({"a": "x\x00"})
    with pytest.raises(ValidationError, match="UTF-8"):
        validate_features({"a": "\ud800"})


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, [1], {"x": 1}, b"x"]
)
def test_values_that_cannot_be_features(value: Any) -> None:
    with pytest.raises(ValidationError, match="feature 'a'"):
        validate_features({"a": value})


def test_features_must_be_a_mapping() -> None:
    with pytest.raises(ValidationError, match="features must be an object"):
        validate_features([1, 2])


# -- the profile and its sketch ----------------------------------------------------------------


def _cdf_error(sketch: dict[str, Any], x: np.ndarray) -> float:
    xs = np.sort(x)
    right = np.searchsorted(xs, xs, "right") / len(xs)
    left = np.searchsorted(xs, xs, "left") / len(xs)
    return float(
        max(
            np.max(np.abs(fd.sketch_cdf(sketch, xs) - right)),
            np.max(np.abs(fd.sketch_cdf(sketch, xs, left=True) - left)),
        )
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, n: rng.normal(size=n),
        lambda rng, n: rng.lognormal(size=n),
        # many distinct values with long runs of ties (more than EXACT_MAX distinct)
        lambda rng, n: np.floor(rng.exponential(300, size=n)),
    ],
)
@pytest.mark.parametrize("n", [5_000, 200_000])
def test_quantile_sketch_rank_error_is_within_its_bound(make: Any, n: int) -> None:
    rng = np.random.default_rng(n)
    x = make(rng, n)
    sketch = fd.profile([{"x": float(v)} for v in x])["features"]["x"]["sketch"]
    assert not sketch["exact"] and len(sketch["quantiles"]) == fd.SKETCH_K + 1
    assert _cdf_error(sketch, x) <= 1 / fd.SKETCH_K + 1 / n


def test_few_distinct_values_are_kept_exactly() -> None:
    x = np.random.default_rng(1).integers(0, 7, 10_000).astype(float)
    sketch = fd.profile([{"x": float(v)} for v in x])["features"]["x"]["sketch"]
    assert sketch["exact"] and sketch["values"] == list(range(7))
    assert sum(sketch["counts"]) == 10_000
    assert _cdf_error(sketch, x) == 0.0


def test_profile_of_kinds_missing_and_categories() -> None:
    rows: list[dict[str, Any] | None] = [
        {"n": 1.0, "s": "a", "b": True},
        {"n": 2, "s": "b", "b": False},
        {"n": None, "s": "a"},
        None,
    ]
    prof = fd.profile(rows)["features"]
    assert prof["n"]["kind"] == "numeric" and prof["n"]["missing"] == 2 and prof["n"]["rows"] == 4
    assert prof["n"]["min"] == 1.0 and prof["n"]["max"] == 2.0
    assert prof["s"]["kind"] == "categorical" and prof["s"]["categories"] == {"a": 2, "b": 1}
    assert prof["b"]["categories"] == {"false": 1, "true": 1}
    assert prof["b"]["missing"] == 2


# -- the tests against scipy -------------------------------------------------------------------


@pytest.mark.parametrize("exact", [True, False])
def test_ks_and_wasserstein_match_scipy(exact: bool) -> None:
    rng = np.random.default_rng(5)
    if exact:
        ref, win = rng.integers(0, 20, 20_000) * 1.0, rng.integers(1, 21, 3_000) * 1.0
    else:
        ref, win = rng.normal(size=50_000), rng.normal(0.2, 1.1, size=3_000)
    sketch = fd.profile([{"x": float(v)} for v in ref])["features"]["x"]["sketch"]
    assert sketch["exact"] is exact
    d, area = fd.numeric_distances(sketch, np.sort(win))
    ks = scipy.stats.ks_2samp(ref, win)
    w1 = scipy.stats.wasserstein_distance(ref, win)
    if exact:
        assert d == pytest.approx(ks.statistic, abs=1e-12)
        assert area == pytest.approx(w1, rel=1e-9)
    else:  # within the sketch's rank error; the area within a small share
        assert abs(d - ks.statistic) <= 1 / fd.SKETCH_K + 1 / len(ref)
        assert area == pytest.approx(w1, rel=0.01)


def test_chi_square_matches_scipy() -> None:
    ref, win = [500, 300, 200, 0], [40, 30, 20, 10]
    stat, p = fd.chi_square(ref, win)
    expected = scipy.stats.chi2_contingency(np.array([ref, win]), correction=False)
    assert stat == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)
    assert fd.chi_square([5, 0], [0, 0]) == (0.0, 1.0)  # nothing to compare: no evidence


def test_jensen_shannon_matches_scipy() -> None:
    ref, win = [500, 300, 200, 0], [40, 30, 20, 10]
    expected = scipy.spatial.distance.jensenshannon(
        np.array(ref) / 1000, np.array(win) / 100, base=2
    )
    assert fd.jensen_shannon(ref, win) == pytest.approx(expected, rel=1e-12)
    assert fd.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)


def test_ten_percent_new_category_jensen_shannon_by_hand() -> None:
    # p = shares s, q = 0.9 s + 0.1 new; m = 0.95 s + 0.05 new:
    # JS = 0.5 (-log2 0.95) + 0.5 (0.9 log2(0.9 / 0.95) + 0.1 log2 2)
    js = 0.5 * -math.log2(0.95) + 0.5 * (0.9 * math.log2(0.9 / 0.95) + 0.1)
    assert fd.jensen_shannon([600, 400, 0], [540, 360, 100]) == pytest.approx(math.sqrt(js))


def test_missing_rise_pvalue_by_hand() -> None:
    # pooled p = 30 / 2000; z = (0.02 - 0.01) / sqrt(p (1 - p) (2 / 1000))
    pooled = 30 / 2000
    z = 0.01 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert fd._rise_pvalue(10, 1000, 20, 1000) == pytest.approx(scipy.stats.norm.sf(z))
    assert fd._rise_pvalue(0, 1000, 0, 1000) == 1.0


# -- the check and its alarm boundaries --------------------------------------------------------


def _prof(rows: list[dict[str, Any] | None]) -> dict[str, Any]:
    return fd.profile(rows)


def test_alarm_rule_boundaries() -> None:
    assert fd._alarm(0.1, 0.0009, 0.1, 0.001)["alarm"] is True  # effect at its floor
    assert fd._alarm(0.0999, 0.0, 0.1, 0.001)["alarm"] is False  # just below the floor
    assert fd._alarm(0.5, 0.001, 0.1, 0.001)["alarm"] is False  # p not below alpha
    assert fd._alarm(None, None, 0.1, 0.001) == {
        "alarm": False, "effect": None, "p_value": None, "floor": 0.1
    }


def test_bonferroni_level_over_three_tests_per_feature() -> None:
    ref = [{"a": float(i % 10), "b": "x"} for i in range(200)]
    out = fd.check_features(_prof(ref), ref, alpha=0.003, min_samples=100)
    assert out["tests"] == 6
    assert out["alpha_per_test"] == pytest.approx(0.003 / 6)


def test_missing_share_rise_of_five_points_is_an_alarm_and_just_below_is_not() -> None:
    rng = np.random.default_rng(2)
    ref = [{"a": float(v)} for v in rng.normal(size=20_000)]
    prof = _prof(ref)

    def window(missing: int) -> list[dict[str, Any] | None]:
        values = rng.normal(size=20_000)
        return [{"a": None if i < missing else float(v)} for i, v in enumerate(values)]

    at = fd.check_features(prof, window(1000), alpha=0.001, min_samples=100)["features"]["a"]
    assert at["missing"]["effect"] == pytest.approx(0.05) and at["missing"]["alarm"]
    below = fd.check_features(prof, window(999), alpha=0.001, min_samples=100)["features"]["a"]
    assert below["missing"]["effect"] < 0.05 and not below["missing"]["alarm"]
    assert below["missing"]["p_value"] < 1e-100  # clear, yet under the floor: no alarm


def test_shift_new_category_and_type_change_are_flagged_on_their_feature() -> None:
    rng = np.random.default_rng(3)
    n = 10_000
    ref = [
        {"num": float(rng.normal()), "cat": str(rng.choice(["a", "b", "c"])), "k": 1.0}
        for _ in range(n)
    ]
    win = [
        {
            "num": float(rng.normal(0.25)),
            "cat": "new" if i % 10 == 0 else str(rng.choice(["a", "b", "c"])),
            "k": "one" if i % 10 == 0 else 1.0,
        }
        for i in range(n)
    ]
    out = fd.check_features(_prof(ref), win, alpha=0.001, min_samples=100)
    feats = out["features"]
    assert out["drifted"] == ["cat", "k", "num"] and out["drifted_share"] == 1.0
    assert feats["num"]["drift"]["alarm"] and feats["num"]["drift"]["effect"] == pytest.approx(
        0.25, abs=0.03
    )
    assert feats["cat"]["drift"]["alarm"] and feats["cat"]["quality"]["new_categories"] == ["new"]
    assert feats["cat"]["quality"]["new_category_share"] == pytest.approx(0.1)
    assert feats["k"]["type_change"]["alarm"] and not feats["k"]["missing"]["alarm"]
    assert feats["k"]["quality"]["type_changed_share"] == pytest.approx(0.1)


def test_out_of_range_share_and_too_few_values() -> None:
    ref = [{"a": float(i)} for i in range(100)]
    win = [{"a": float(i + 50)} for i in range(100)]
    a = fd.check_features(_prof(ref), win, alpha=0.001, min_samples=100)["features"]["a"]
    assert a["quality"]["out_of_range_share"] == pytest.approx(0.5)  # 100..149 of 50..149
    few = fd.check_features(_prof(ref), win[:99], alpha=0.001, min_samples=100)["features"]["a"]
    assert few["drift"]["effect"] is None and not few["alarm"]


def test_a_feature_the_window_lacks_is_all_missing_and_a_new_one_is_listed() -> None:
    ref = [{"a": float(i % 7)} for i in range(500)]
    out = fd.check_features(
        _prof(ref), [{"b": 1.0} for _ in range(500)], alpha=0.001, min_samples=100
    )
    assert out["features"]["a"]["quality"]["missing_share"] == 1.0
    assert out["features"]["a"]["missing"]["alarm"] and out["new_features"] == ["b"]


def test_ranked_and_capped() -> None:
    feats = {
        "z": {"alarm": True, "score": 1.5},
        "a": {"alarm": False, "score": 3.0},
        "m": {"alarm": True, "score": 4.0},
        "b": {"alarm": False, "score": 3.0},
    }
    assert fd.ranked(feats) == ["m", "z", "a", "b"]
    assert fd.capped(["c", "a", "b"], 2) == ["a", "b"]


def test_values_are_split_by_type_never_merged_by_equality() -> None:
    # True == 1 == 1.0 in Python: each keeps its kind
    split = fd.Split([True, 1, 1.0, None, "a", "a", False])
    assert split.numbers.tolist() == [1.0, 1.0] and split.missing == 1
    assert split.others == {("bool", "true"): 1, ("bool", "false"): 1, ("string", "a"): 2}
    assert split.kinds() == {"bool", "number", "string"}
    assert split.categories() == {"true": 1, "false": 1, "a": 2, "1.0": 2}
    fast = fd.Split([1, 2.5, None, None])
    assert fast.numbers.tolist() == [1.0, 2.5] and fast.missing == 2 and not fast.others


def test_chunks_give_what_one_read_gives() -> None:
    rng = np.random.default_rng(9)
    rows: list[dict[str, Any] | None] = []
    for i in range(3000):
        row: dict[str, Any] = {"a": float(rng.normal())}
        if i >= 1000:  # a feature that starts part way, and samples without features
            row["b"] = str(rng.choice(["x", "y"]))
        rows.append(None if i % 7 == 0 else row)
    chunks = [rows[:500], rows[500:1700], rows[1700:]]
    assert fd.profile_chunks(chunks) == fd.profile(rows)
    assert fd.profile(rows)["features"]["b"]["missing"] == 1000 + sum(
        1 for i in range(1000, 3000) if i % 7 == 0
    )
    prof = fd.profile(rows[:1500])
    assert fd.check_chunks(prof, chunks, 0.001, 100) == fd.check_features(prof, rows, 0.001, 100)


@pytest.mark.parametrize(
    ("n_ref", "n_win", "method"),
    [(800, 800, "exact"), (10_000, 1_000, "exact"), (10_000, 9_000, "asymp"), (50_000, 500, "asymp")],
)
def test_ks_pvalue_exact_where_cheap_else_asymptotic(n_ref: int, n_win: int, method: str) -> None:
    rng = np.random.default_rng(n_ref + n_win)
    ref, win = rng.normal(size=n_ref), rng.normal(0.08, 1, size=n_win)
    expected = scipy.stats.ks_2samp(ref, win, method=method)
    assert fd.ks_pvalue(n_ref, n_win, expected.statistic) == pytest.approx(
        expected.pvalue, rel=1e-6
    )


@pytest.mark.parametrize("exact", [True, False])
def test_histogram_of_the_reference_from_its_profile_matches_numpy(exact: bool) -> None:
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 30, 5000).astype(float) if exact else rng.normal(size=20_000)
    win = ref[:3000] + 0.5
    prof = fd.profile([{"x": float(v)} for v in ref])["features"]["x"]
    got = fd.histogram(prof, fd.Split(win.tolist()), bins=10)
    edges = np.linspace(min(ref.min(), win.min()), max(ref.max(), win.max()), 11)
    assert got["edges"] == pytest.approx(edges, abs=1e-6)
    want_ref = np.histogram(ref, edges)[0] / len(ref)
    tolerance = 1e-6 if exact else 2 / fd.SKETCH_K + 2 / len(ref)
    assert np.abs(np.array(got["reference"]) - want_ref).max() <= tolerance
    assert got["window"] == pytest.approx(np.histogram(win, edges)[0] / len(win), abs=1e-6)


def test_histogram_of_a_categorical_feature() -> None:
    prof = fd.profile([{"c": v} for v in ["a"] * 60 + ["b"] * 40])["features"]["c"]
    got = fd.histogram(prof, fd.Split(["a"] * 50 + ["new"] * 50))
    assert got["categories"] == ["a", "new", "b", "other"]
    assert got["reference"] == [0.6, 0.0, 0.4, 0.0]
    assert got["window"] == [0.5, 0.5, 0.0, 0.0]


def test_without_features_leaves_the_outputs_as_the_seeds_lines() -> None:
    from mlops_cli.columns import sample_columns
    from mlops_cli.features import without_features

    lines = [
        b'{"ts":"2026-01-01T00:00:00Z","prediction":0.5,"confidence":0.25,"features":{"a":{}}}',
        b'{"ts":"2026-01-01T00:00:00Z","prediction":-1.5,"confidence":1}',
        b'{"ts":"2026-01-01T00:00:00Z","prediction":2,"confidence":0.5,"features":{"b":"}"}}',
    ]
    stripped = without_features(b"\n".join(lines) + b"\n")
    assert stripped is not None
    found = sample_columns(stripped)
    assert found is not None
    assert found[0].tolist() == [0.5, -1.5, 2.0] and found[1].tolist() == [0.25, 1.0, 0.5]
    assert without_features(lines[1] + b"\n") is None  # no features: the block as it is
    # features not last, or spelled with a space: kept, so the fast reader refuses the block
    first = b'{"features":{"a":1},"ts":"2026-01-01T00:00:00Z","prediction":1,"confidence":1}\n'
    spaced = b'{"ts":"2026-01-01T00:00:00Z","prediction":1,"confidence":1,"features": {}}\n'
    for block in (first, spaced):
        assert sample_columns(without_features(block) or block) is None


@pytest.mark.parametrize("dof", [1, 2, 3, 7, 20, 150, 999])
@pytest.mark.parametrize("quantile", [1e-6, 0.01, 0.3, 0.5, 0.9, 0.999, 1 - 1e-9])
def test_chi2_sf_matches_scipy(dof: int, quantile: float) -> None:
    x = scipy.stats.chi2.ppf(quantile, dof)
    assert fd.chi2_sf(x, dof) == pytest.approx(scipy.stats.chi2.sf(x, dof), rel=1e-9, abs=1e-300)


def test_chi2_sf_far_tail_and_zero() -> None:
    assert fd.chi2_sf(0.0, 3) == 1.0
    assert fd.chi2_sf(2000.0, 5) == pytest.approx(scipy.stats.chi2.sf(2000.0, 5), rel=1e-9)


# -- reading a window's features: pieces, distances by definition -------------------------------


def test_pieces_of_a_large_chunk_give_the_counts_by_hand() -> None:
    # 3 pieces of GATHER_ROWS: `b` starts in the second, `c` stops after the first, `d`
    # changes kind between pieces; the missing counts are counted here by hand.
    n = 3 * fd.GATHER_ROWS
    rows: list[dict[str, Any] | None] = []
    for i in range(n):
        row: dict[str, Any] = {"a": i * 0.5}
        if i >= fd.GATHER_ROWS + 7:
            row["b"] = "x" if i % 2 else "y"
        if i < 10:
            row["c"] = 1
        row["d"] = True if i < fd.GATHER_ROWS else (None if i % 3 == 0 else 2.5)
        rows.append(None if i % 5 == 0 else row)
    splits, got_n = fd.gather([rows])
    assert got_n == n
    absent = {i for i in range(n) if i % 5 == 0}
    assert splits["a"].numbers.tolist() == [i * 0.5 for i in range(n) if i not in absent]
    assert splits["a"].missing == len(absent)
    b_rows = [i for i in range(fd.GATHER_ROWS + 7, n) if i not in absent]
    assert splits["b"].missing == n - len(b_rows)
    assert splits["b"].others == {
        ("string", "x"): sum(i % 2 for i in b_rows),
        ("string", "y"): sum(1 - i % 2 for i in b_rows),
    }
    assert splits["c"].missing == n - len([i for i in range(10) if i not in absent])
    d_rows = [i for i in range(n) if i not in absent]
    assert splits["d"].others == {("bool", "true"): len([i for i in d_rows if i < fd.GATHER_ROWS])}
    later = [i for i in d_rows if i >= fd.GATHER_ROWS]
    assert splits["d"].numbers.tolist() == [2.5] * len([i for i in later if i % 3])
    assert splits["d"].missing == len(absent) + len([i for i in later if i % 3 == 0])


def test_the_garbage_collector_is_running_again_after_a_gather_even_a_failed_one() -> None:
    import gc

    def broken() -> Any:
        yield [{"a": 1.0}]
        raise RuntimeError("read failed")

    assert gc.isenabled()
    fd.gather([[{"a": 1.0}]])
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        fd.gather(broken())
    assert gc.isenabled()
    gc.disable()
    try:  # paused by the caller: left paused
        fd.gather([[{"a": 1.0}]])
        assert not gc.isenabled()
    finally:
        gc.enable()


def _distances_by_definition(sketch: dict[str, Any], window: np.ndarray) -> tuple[float, float]:
    """D and W1 from the definitions, each point searched on its own: the window's ECDF from
    both sides at every distinct value of the window and the sketch, against the sketch's CDF
    (sketch_cdf, tested above), with the area piece by piece as numeric_distances states it."""
    points = sketch["values"] if sketch["exact"] else sketch["quantiles"]
    xs = sorted(set(points) | set(window.tolist()))
    w = np.sort(window)
    n = len(w)
    fw = [np.searchsorted(w, x, "right") / n for x in xs]
    fwl = [np.searchsorted(w, x, "left") / n for x in xs]
    fr = fd.sketch_cdf(sketch, np.array(xs)).tolist()
    frl = fd.sketch_cdf(sketch, np.array(xs), left=True).tolist()
    d = max(
        max(abs(a - b) for a, b in zip(fw, fr, strict=True)),
        max(abs(a - b) for a, b in zip(fwl, frl, strict=True)),
    )
    area = 0.0
    for i in range(len(xs) - 1):
        width, c = xs[i + 1] - xs[i], fw[i]
        if sketch["exact"]:
            area += abs(c - fr[i]) * width
            continue
        lo, hi = min(fr[i], frl[i + 1]), max(fr[i], frl[i + 1])
        if c <= lo or c >= hi or hi == lo:
            area += abs(c - (fr[i] + frl[i + 1]) / 2) * width
        else:
            area += ((c - lo) ** 2 + (hi - c) ** 2) / (2 * (hi - lo)) * width
    return d, area


@pytest.mark.parametrize("case", ["exact", "quantiles", "tied quantiles", "outside"])
def test_distances_match_the_definition_point_by_point(case: str) -> None:
    rng = np.random.default_rng(17)
    if case == "exact":  # sketch values the window lacks, window values the sketch lacks
        ref, win = rng.integers(0, 30, 5_000) * 1.0, rng.integers(5, 40, 700) * 1.0
    elif case == "quantiles":
        ref, win = rng.normal(size=20_000), np.round(rng.normal(0.3, 1.2, 900), 2)
    elif case == "tied quantiles":  # a value a fifth of the reference holds, and ties
        ref = np.concatenate((np.zeros(4_000), rng.exponential(3.0, 16_000)))
        win = np.concatenate((np.zeros(100), np.round(rng.exponential(3.0, 800), 1)))
    else:  # the window partly below and above the whole reference
        ref, win = rng.uniform(0, 1, 20_000), rng.uniform(-0.5, 1.5, 600)
    sketch = fd.profile([{"x": float(v)} for v in ref])["features"]["x"]["sketch"]
    assert sketch["exact"] is (case == "exact")
    d, area = fd.numeric_distances(sketch, np.sort(win))
    want_d, want_area = _distances_by_definition(sketch, win)
    assert d == pytest.approx(want_d, abs=1e-15)
    assert area == pytest.approx(want_area, rel=1e-12)
