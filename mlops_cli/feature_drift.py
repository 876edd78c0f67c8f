"""Drift and data quality of a model's input features, per feature (pure: values in, figures out).

The reference is profiled once (`profile`): per numeric feature a quantile sketch, per
categorical feature its category counts, plus the missing share; a check (`check_features`)
compares the window's values with that profile only, so its cost does not grow with the
reference.

Tests, chosen by the feature's type in the reference:
- numeric (every value present in the reference is a number): the two-sample
  Kolmogorov-Smirnov test (D, p-value from `ks.py`, as for the predictions) and the
  Wasserstein-1 distance divided by the reference standard deviation as the effect
  (floor 0.1, as the predictions' alarm);
- categorical (strings, booleans, or a mix): Pearson's chi-square test of homogeneity on the
  2 x k table of reference and window counts, categories the reference never held counted as
  their own columns, and the Jensen-Shannon distance (base 2, in [0, 1]) as the effect
  (floor 0.1, Evidently's default threshold for it);
- data quality: the missing share (None, or the feature left out) and the share of values of
  a type the reference never held; a rise of either of at least 5 points is an alarm when the
  one-sided two-proportion z test says it is clear. The share outside the reference range and
  the new categories are reported.

Every alarm is the section 14 rule: p-value below the per-test level AND the effect at or
above its floor. The family-wise false alarm rate of a check is held at `drift.alarm_alpha`
over all features by Bonferroni: each of the 3 tests of each of the m features runs at
alarm_alpha / (3 m). Bonferroni holds whatever the dependence between features (inputs are
often correlated) and keeps each feature's verdict independent of the others' p-values;
Holm's step-down would gain little here, since the effect floors, not the p-values, decide
nearly every borderline case.

Quantile sketch: a feature with at most EXACT_MAX distinct reference values keeps them all with
their counts (exact, ties included); otherwise the reference values at ranks j n / K for
j = 0..K (K = SKETCH_K), with the CDF interpolated between them. Its rank error (the largest
gap between the sketch's CDF and the reference's ECDF) is at most 1 / K + 1 / n: every value
between two kept quantiles has a rank between theirs (tests/test_feature_drift.py checks it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from .errors import SKIP_INVALID, StateError

SKETCH_K = 2048
EXACT_MAX = 1000  # distinct values a numeric feature keeps exactly
CATEGORIES_MAX = 1000  # categories a profile keeps; the rarer are counted as `other`
FLOORS = {"drift_numeric": 0.1, "drift_categorical": 0.1, "missing": 0.05, "type_change": 0.05}
TESTS_PER_FEATURE = 3  # distribution, missing share, type change
PROFILE_VERSION = 1
NEW_CATEGORIES_SHOWN = 10


def kind_of(value: Any) -> str | None:
    """The type of one feature value: number, string, bool, or None when it is missing."""
    if value is None:
        return None
    t = type(value)
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "number"
    return "string"


def category_of(value: Any) -> str:
    """A categorical value as its category name."""
    if type(value) is bool:
        return "true" if value else "false"
    return value if type(value) is str else repr(value)


def columns(rows: Sequence[Mapping[str, Any] | None]) -> Mapping[str, Sequence[Any]]:
    """The features of the samples as one sequence per feature name (None where a sample
    lacks it). Rows whose features share one key order (one producer) are transposed in C."""
    present = [r for r in rows if r]
    if not present:
        return {}
    n = len(rows)
    names = list(present[0])
    if len(present) == n and set(map(len, present)) == {len(names)}:
        # Every sample has as many features as the first: if each has each of its names,
        # they have the same names; each sample's values are picked in the first's order
        # (one C-level lookup each) and the rows turned into columns by zip.
        try:
            if len(names) == 1:
                return {names[0]: list(map(itemgetter(names[0]), present))}
            picked = map(itemgetter(*names), present)  # a tuple per sample, of len(names)
            return dict(zip(names, zip(*picked, strict=True), strict=True))
        except KeyError:
            pass
    out: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        if not row:
            continue
        for name, value in row.items():
            col = out.get(name)
            if col is None:
                col = out[name] = [None] * n
            col[i] = value
    return out


# -- the reference's profile -------------------------------------------------------------------


def profile(rows: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """The reference's profile: per feature its kind, missing share and sketch (JSON-ready)."""
    return profile_chunks([rows])


def profile_chunks(
    chunks: Iterable[Sequence[Mapping[str, Any] | None]], lenient: bool = False
) -> dict[str, Any]:
    """`profile` of the rows of every chunk (each chunk's objects dropped once taken apart;
    `lenient`: as `gather`)."""
    return profile_splits(*gather(chunks, lenient))


def profile_splits(splits: Mapping[str, Split], n: int) -> dict[str, Any]:
    """`profile` of n samples' features already taken apart (`gather`)."""
    features = {name: _profile_feature(split, n) for name, split in sorted(splits.items())}
    return {"version": PROFILE_VERSION, "rows": n, "features": features}


def gather(
    chunks: Iterable[Sequence[Mapping[str, Any] | None]], lenient: bool = False
) -> tuple[dict[str, Split], int]:
    """Per feature its values taken apart (`Split`), over chunks of samples' features, and the
    number of samples; a feature a sample lacks is missing in it. A value that no sample may
    hold (a list or an object: a log edited by hand) is an error naming the feature, or, when
    `lenient` (--skip-invalid), missing.

    The cyclic garbage collector is paused meanwhile: the samples' objects hold no cycles,
    and a window's hundreds of thousands of them would have it walk every live object again
    and again (a tenth of the time)."""
    import gc

    paused = gc.isenabled()
    gc.disable()
    try:
        return _gather(chunks, lenient)
    finally:
        if paused:
            gc.enable()


def _gather(
    chunks: Iterable[Sequence[Mapping[str, Any] | None]], lenient: bool
) -> tuple[dict[str, Split], int]:
    parts: dict[str, list[Split]] = {}
    n = 0
    for rows in _pieces(chunks):
        cols = columns(rows)
        for name, values in cols.items():
            try:
                part = Split(values)
            except _NotAFeatureValue as exc:
                if not lenient:
                    raise StateError(
                        f"a stored sample's input feature {name!r} holds {exc}, which no "
                        f"feature may hold (a number, a string, a boolean or null); {SKIP_INVALID}"
                    ) from None
                part = Split([v if type(v) in _FEATURE_TYPES else None for v in values])
            have = parts.get(name)
            if have is None:
                part.missing += n  # the samples before lacked it
                parts[name] = [part]
            else:
                have.append(part)
        for name, have in parts.items():
            if name not in cols:
                have[-1].missing += len(rows)
        n += len(rows)
    return {name: Split.joined(have) for name, have in parts.items()}, n


def gather_ordered(
    chunks: Iterable[Sequence[Mapping[str, Any] | None]], lenient: bool = False
) -> tuple[dict[str, Split], int]:
    """`gather`, each feature's numbers sorted (`Split.ordered`): what a check sorts anyway,
    done where the part was read, so the two parts of a window folded in two processes are
    sorted side by side and only merged (`join_gathered`)."""
    splits, n = gather(chunks, lenient)
    for split in splits.values():
        split.order()
    return splits, n


def join_gathered(
    first: tuple[dict[str, Split], int], later: tuple[dict[str, Split], int]
) -> tuple[dict[str, Split], int]:
    """Two consecutive parts of a window `gather`ed apart, as one `gather` of both gives them:
    a feature one part lacks is missing in each of that part's samples."""
    (a, n_a), (b, n_b) = first, later
    out: dict[str, Split] = {}
    for name, split in a.items():
        other = b.get(name)
        if other is None:
            split.missing += n_b
            out[name] = split
        else:
            out[name] = Split.merged(split, other)
    for name, split in b.items():
        if name not in a:
            split.missing += n_a
            out[name] = split
    return out, n_a + n_b


GATHER_ROWS = 512
"""Samples taken apart at a time: their objects stay in the CPU's caches while each feature's
values are picked from them (a store's larger chunks are cut to this)."""


def _pieces(
    chunks: Iterable[Sequence[Mapping[str, Any] | None]],
) -> Iterator[Sequence[Mapping[str, Any] | None]]:
    for rows in chunks:
        if len(rows) <= GATHER_ROWS:
            yield rows
        else:
            for start in range(0, len(rows), GATHER_ROWS):
                yield rows[start : start + GATHER_ROWS]


class Split:
    """One feature's values taken apart: the numbers (an array), the missing count, and the
    other values as counts per (kind, category)."""

    def __init__(self, values: Sequence[Any]) -> None:
        import numpy as np

        types = set(map(type, values))
        if not types <= _FEATURE_TYPES:
            odd = sorted(t.__name__ for t in types - _FEATURE_TYPES)
            raise _NotAFeatureValue("a " + " and a ".join(odd))
        self.others: Counter[tuple[str, str]] = Counter()
        self.ordered = False  # whether `numbers` is sorted (`order`)
        if types <= _NUMERIC_OR_NONE:  # the common case, converted in C (None is NaN)
            x = np.array(values, dtype=np.float64)
            if type(None) in types:
                gap = np.isnan(x)
                self.missing = int(np.count_nonzero(gap))
                x = x[~gap]
            else:
                self.missing = 0
            self.numbers = x
            return
        self.missing = 0
        if types == {str}:  # a categorical feature without gaps: counted in C
            self.numbers = np.empty(0)
            self.others = Counter({("string", k): c for k, c in Counter(values).items()})
            return
        numbers: list[Any] = []
        for (t, v), count in Counter(zip(map(type, values), values, strict=True)).items():
            if v is None:
                self.missing += count
            elif t is int or t is float:
                numbers += [v] * count
            else:
                self.others[(kind_of(v) or "", category_of(v))] += count
        self.numbers = np.array(numbers, dtype=np.float64)

    @classmethod
    def joined(cls, parts: Sequence[Split]) -> Split:
        """One feature's chunks taken apart, as one (the numbers joined once)."""
        import numpy as np

        out = parts[0]
        if len(parts) > 1:
            for other in parts[1:]:
                out.missing += other.missing
                if other.others:
                    out.others.update(other.others)
            out.numbers = np.concatenate([p.numbers for p in parts])
            out.ordered = False
        return out

    @classmethod
    def merged(cls, first: Split, later: Split) -> Split:
        """`joined` of two parts; two sorted parts give their numbers sorted, merged in one
        pass (the stable sort finds the two runs)."""
        import numpy as np

        both = first.ordered and later.ordered
        out = cls.joined([first, later])
        if both:
            out.numbers = np.sort(out.numbers, kind="stable")
            out.ordered = True
        return out

    def order(self) -> None:
        """Sort the numbers (their order means nothing to a test, a profile or a histogram)."""
        import numpy as np

        if not self.ordered:
            self.numbers = np.sort(self.numbers)
            self.ordered = True

    def kinds(self) -> set[str]:
        found = {k for k, _ in self.others}
        return found | {"number"} if len(self.numbers) else found

    def categories(self) -> Counter[str]:
        """Every value present as a category (numbers by their repr)."""
        out: Counter[str] = Counter()
        for (_, name), count in self.others.items():
            out[name] += count
        if len(self.numbers):
            import numpy as np

            distinct, counts = np.unique(self.numbers, return_counts=True)
            for v, c in zip(distinct.tolist(), counts.tolist(), strict=True):
                out[repr(v)] += c
        return out


_NUMERIC_OR_NONE = {int, float, type(None)}
_FEATURE_TYPES = _NUMERIC_OR_NONE | {str, bool}


class _NotAFeatureValue(TypeError):
    """A value of a type no validated sample holds (its types named)."""


def _profile_feature(split: Split, n: int) -> dict[str, Any]:
    import numpy as np

    kinds = split.kinds()
    missing = split.missing
    base: dict[str, Any] = {"rows": n, "missing": missing, "kinds": sorted(kinds)}
    if kinds == {"number"}:
        x = np.sort(split.numbers)
        base.update(kind="numeric", count=len(x), mean=float(np.mean(x)), sd=_sd(x))
        base["min"], base["max"] = float(x[0]), float(x[-1])
        distinct, counts = np.unique(x, return_counts=True)
        if len(distinct) <= EXACT_MAX:
            base["sketch"] = {"exact": True, "values": distinct.tolist(), "counts": counts.tolist()}
        else:
            ranks = np.round(np.arange(SKETCH_K + 1) * (len(x) - 1) / SKETCH_K).astype(np.int64)
            base["sketch"] = {"exact": False, "quantiles": x[ranks].tolist()}
        return base
    counts_by = split.categories()
    count = sum(counts_by.values())
    kept = dict(sorted(counts_by.items(), key=lambda kv: (-kv[1], kv[0]))[:CATEGORIES_MAX])
    base.update(
        kind="categorical", count=count, categories=kept, other=count - sum(kept.values())
    )
    return base


def _sd(x: Any) -> float:
    import numpy as np

    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def sketch_cdf(sketch: Mapping[str, Any], x: Any, left: bool = False) -> Any:
    """The reference CDF at the points `x` from its sketch: F(x), or with `left` F(x-) (the
    share strictly below; the same as F(x) for an interpolated sketch)."""
    right, below = sketch_cdfs(sketch, x)
    return below if left else right


def sketch_cdfs(sketch: Mapping[str, Any], x: Any) -> tuple[Any, Any]:
    """(F(x), F(x-)) of the sketch at the points `x`, from one search of the sketch each."""
    import numpy as np

    if sketch["exact"]:
        values = np.asarray(sketch["values"], dtype=np.float64)
        cum = np.concatenate(([0], np.cumsum(sketch["counts"]))) / float(sum(sketch["counts"]))
        return (
            cum[np.searchsorted(values, x, side="right")],
            cum[np.searchsorted(values, x, side="left")],
        )
    q = np.asarray(sketch["quantiles"], dtype=np.float64)
    last = len(q) - 1
    grid = np.arange(len(q)) / last
    x = np.asarray(x, dtype=np.float64)
    hi = np.searchsorted(q, x, side="right")
    lo = np.searchsorted(q, x, side="left")
    # Between two kept quantiles q[hi - 1] < x < q[hi] the CDF is linear; at a kept quantile
    # it jumps from the share of its first copy (F(x-)) to that of its last (F(x)).
    below, above = np.clip(hi - 1, 0, last), np.clip(hi, 0, last)
    gap = q[above] - q[below]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(gap > 0, (x - q[below]) / gap, 0.0)
    out = grid[below] + frac * (grid[above] - grid[below])
    out = np.where(hi == 0, 0.0, np.where(hi > last, 1.0, out))
    tied = hi > lo
    return (
        np.where(tied, grid[below], out),
        np.where(tied, grid[np.clip(lo, 0, last)], out),
    )


def _window_cdfs(points: Any, window_sorted: Any) -> tuple[Any, Any, Any]:
    """The distinct values of the sketch's points and the window's (sorted), with the
    window's counts at or below each and strictly below each: what np.unique of both and two
    searches of the window give, from one pass over the sorted window."""
    import numpy as np

    w = window_sorted
    if not len(w):
        p = np.unique(points)
        return p, np.zeros(len(p), dtype=np.int64), np.zeros(len(p), dtype=np.int64)
    first = np.flatnonzero(np.concatenate(([True], w[1:] != w[:-1])))  # each value's first
    distinct = w[first]
    after = np.append(first[1:], len(w))
    p = np.unique(points)
    at = np.searchsorted(distinct, p)
    found = at < len(distinct)
    found[found] = distinct[at[found]] == p[found]
    extra = p[~found]  # the sketch's points the window lacks
    place = at[~found]
    merged = np.insert(distinct, place, extra)
    is_extra = np.zeros(len(merged), dtype=bool)
    is_extra[place + np.arange(len(extra))] = True
    right = np.empty(len(merged), dtype=np.int64)
    left = np.empty(len(merged), dtype=np.int64)
    right[~is_extra], left[~is_extra] = after, first
    right[is_extra] = left[is_extra] = np.searchsorted(w, extra)
    return merged, right, left


def numeric_distances(sketch: Mapping[str, Any], window_sorted: Any) -> tuple[float, float]:
    """(KS statistic D, Wasserstein-1 distance) between the window's ECDF and the reference's
    sketched CDF. D is the largest gap, taken at every window value and sketch point from both
    sides; W1 the area between the two CDFs (exact for an exact sketch; for a quantile sketch
    the CDF is linear between its points and the area of each piece is integrated exactly)."""
    import numpy as np

    points = np.asarray(
        sketch["values"] if sketch["exact"] else sketch["quantiles"], dtype=np.float64
    )
    merged, right, left = _window_cdfs(points, window_sorted)
    n = len(window_sorted)
    fw, fw_left = right / n, left / n
    fr, fr_left = sketch_cdfs(sketch, merged)
    d = float(max(np.max(np.abs(fw - fr)), np.max(np.abs(fw_left - fr_left))))
    widths = np.diff(merged)
    c = fw[:-1]  # the window's CDF on each piece
    if sketch["exact"]:
        area = float(np.sum(np.abs(c - fr[:-1]) * widths))
    else:  # the sketch's CDF goes linearly from a to b on each piece
        a, b = fr[:-1], fr_left[1:]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        span = hi - lo
        outside = (c <= lo) | (c >= hi) | (span == 0)
        mid = np.abs(c - (a + b) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing = ((c - lo) ** 2 + (hi - c) ** 2) / (2 * span)
        area = float(np.sum(np.where(outside, mid, crossing) * widths))
    return d, area


# -- the window's check ------------------------------------------------------------------------


def _rise_pvalue(ref_hits: int, ref_n: int, win_hits: int, win_n: int) -> float:
    """One-sided two-proportion z test (pooled) that the window's share is higher."""
    p1, p2 = ref_hits / ref_n, win_hits / win_n
    pooled = (ref_hits + win_hits) / (ref_n + win_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / ref_n + 1 / win_n))
    if se == 0:
        return 1.0 if p2 <= p1 else 0.0
    z = (p2 - p1) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi_square(ref_counts: Sequence[int], win_counts: Sequence[int]) -> tuple[float, float]:
    """Pearson's chi-square test of homogeneity of a 2 x k table: (statistic, p-value); the
    columns empty on both sides dropped, k - 1 degrees of freedom."""
    pairs = [(r, w) for r, w in zip(ref_counts, win_counts, strict=True) if r or w]
    n_r, n_w = sum(r for r, _ in pairs), sum(w for _, w in pairs)
    if len(pairs) < 2 or not n_r or not n_w:
        return 0.0, 1.0
    total = n_r + n_w
    stat = 0.0
    for r, w in pairs:
        col = r + w
        e_r, e_w = n_r * col / total, n_w * col / total
        stat += (r - e_r) ** 2 / e_r + (w - e_w) ** 2 / e_w
    return stat, chi2_sf(stat, len(pairs) - 1)


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X chi-square with `dof` degrees of freedom: the regularised upper
    incomplete gamma function Q(dof / 2, x / 2), by its power series below a + 1 and its
    continued fraction (modified Lentz) above (Abramowitz and Stegun 6.5.29 and 6.5.31);
    written here so a check does not import scipy.special (about 0.3 s)."""
    if x <= 0:
        return 1.0
    a, z = dof / 2.0, x / 2.0
    log_front = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1:  # P(a, z) = z^a e^-z / Gamma(a + 1) * sum z^n / ((a + 1)...(a + n))
        term = total = 1.0 / a
        k = a
        while abs(term) > abs(total) * 1e-16:
            k += 1
            term *= z / k
            total += term
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-16:
            break
    return math.exp(log_front) * h


def jensen_shannon(ref_counts: Sequence[int], win_counts: Sequence[int]) -> float:
    """The Jensen-Shannon distance (square root of the divergence, base 2) of two count
    vectors over the same categories: 0 for the same shares, 1 for disjoint ones."""
    n_r, n_w = sum(ref_counts), sum(win_counts)
    if not n_r or not n_w:
        return 0.0
    div = 0.0
    for r, w in zip(ref_counts, win_counts, strict=True):
        p, q = r / n_r, w / n_w
        m = (p + q) / 2
        if p:
            div += 0.5 * p * math.log2(p / m)
        if q:
            div += 0.5 * q * math.log2(q / m)
    return math.sqrt(max(div, 0.0))


def _alarm(
    effect: float | None, p_value: float | None, floor: float, alpha: float
) -> dict[str, Any]:
    fired = effect is not None and p_value is not None and p_value < alpha and effect >= floor
    return {"alarm": fired, "effect": effect, "p_value": p_value, "floor": floor}


def check_features(
    prof: Mapping[str, Any],
    window_rows: Sequence[Mapping[str, Any] | None],
    alpha: float,
    min_samples: int,
) -> dict[str, Any]:
    """Per feature of the reference's profile: the drift test, data quality and the alarms,
    at the Bonferroni level alpha / (3 m); features the window adds are listed, not tested."""
    return check_chunks(prof, [window_rows], alpha, min_samples)


def check_chunks(
    prof: Mapping[str, Any],
    chunks: Iterable[Sequence[Mapping[str, Any] | None]],
    alpha: float,
    min_samples: int,
) -> dict[str, Any]:
    """`check_features` of the window's samples read in chunks."""
    splits, n = gather(chunks)
    return check_gathered(prof, splits, n, alpha, min_samples)


def check_gathered(
    prof: Mapping[str, Any],
    splits: Mapping[str, Split],
    n: int,
    alpha: float,
    min_samples: int,
    beside: bool = False,
) -> dict[str, Any]:
    """`check_features` of a window already taken apart (`gather`). `beside`: a window of
    TESTS_BESIDE_VALUES values or more has about half of its features tested by a forked
    child (forked.py) where one may be made: the same figures, in the same order."""
    feats: Mapping[str, Any] = prof["features"]
    m = len(feats)
    level = alpha / (TESTS_PER_FEATURE * m) if m else alpha

    def tested(names: Iterable[str]) -> dict[str, Any]:
        return {
            name: _check_one(
                feats[name], splits.get(name) or Split([None] * n), n, level, min_samples,
                ks_pvalue,
            )
            for name in names
        }

    work = {name: _work(splits.get(name)) for name in feats}
    if beside and m > 1 and sum(work.values()) >= TESTS_BESIDE_VALUES:
        found = _tested_beside(tested, work)
        out = {name: found[name] for name in feats}
    else:
        out = tested(feats)
    drifted = sorted(k for k, v in out.items() if v["alarm"])
    return {
        "features": out,
        "drifted": drifted,
        "drifted_share": len(drifted) / m if m else 0.0,
        "new_features": sorted(set(splits) - set(feats)),
        "alpha_per_test": level,
        "tests": TESTS_PER_FEATURE * m,
    }


TESTS_BESIDE_VALUES = 1_000_000
"""Values of a window's features from which a check tests them in two processes: a fork and
the results sent back cost a few milliseconds; the tests of 60 features over 100,000 rows
about 0.3 s (numpy's sorts and searches, one feature at a time)."""


def _work(split: Split | None) -> int:
    """What testing one feature costs, roughly: its values."""
    return 1 if split is None else len(split.numbers) + len(split.others) + 1


def _tested_beside(
    tested: Callable[[Iterable[str]], dict[str, Any]], work: Mapping[str, int]
) -> dict[str, Any]:
    """`tested` of every feature, about half of the work (by `work`) done by a forked child
    where one may be made; a child that fails leaves its features to this process, so the
    figures, and any error, are those of one process."""
    import pickle

    from . import forked

    if not forked.may_fork():
        return tested(work)
    mine: list[str] = []
    theirs: list[str] = []
    load = [0, 0]
    for name in sorted(work, key=lambda k: -work[k]):  # the heaviest first, to the lighter side
        side = 0 if load[0] <= load[1] else 1
        (mine, theirs)[side].append(name)
        load[side] += work[name]
    child = forked.Child(lambda: pickle.dumps(tested(theirs), protocol=5))
    try:
        out = tested(mine)
        found = child.result()
    finally:
        child.cancel()
    out.update(pickle.loads(found) if found is not None else tested(theirs))
    return out


EXACT_KS_MAX = 1000  # the smaller sample's size up to which the KS p-value is exact


def ks_pvalue(n_ref: int, n_win: int, d: float) -> float:
    """The two-sided KS p-value of D: exact (`ks.ks_two_sample_pvalue`, as scipy's
    `method="auto"`) where that is cheap (equal sizes, or the smaller sample at most
    EXACT_KS_MAX and neither above 10,000), else the asymptotic Kolmogorov distribution (as
    scipy's `method="asymp"`): the exact lattice for two unequal samples of 10,000 costs about
    50 ms, a check of 50 features would spend seconds on it."""
    from .ks import KS_EXACT_MAX_N, ks_two_sample_asymp_pvalue, ks_two_sample_pvalue

    if max(n_ref, n_win) <= KS_EXACT_MAX_N and (
        n_ref == n_win or min(n_ref, n_win) <= EXACT_KS_MAX
    ):
        return ks_two_sample_pvalue(n_ref, n_win, d)[1]
    return ks_two_sample_asymp_pvalue(n_ref, n_win, d)


def _check_one(
    ref: Mapping[str, Any], split: Split, n: int, level: float, min_samples: int, ks: Any
) -> dict[str, Any]:
    import numpy as np

    numeric = ref["kind"] == "numeric"
    ref_kinds = set(ref["kinds"])
    missing = split.missing
    if numeric:  # a value that is no number is a type change, left out of the test
        changed = sum(split.others.values())
        n_good = len(split.numbers)
    else:  # a value of a kind the reference never held is still a category (and new)
        changed = sum(c for (k, _), c in split.others.items() if k not in ref_kinds)
        if "number" not in ref_kinds:
            changed += len(split.numbers)
        n_good = n - missing
    quality: dict[str, Any] = {
        "missing_share": missing / n if n else 0.0,
        "missing_share_reference": ref["missing"] / ref["rows"] if ref["rows"] else 0.0,
        "type_changed_share": changed / n if n else 0.0,
        "out_of_range_share": None,
        "new_categories": [],
        "new_category_share": None,
    }
    result: dict[str, Any] = {"kind": ref["kind"], "n_window": n_good, "quality": quality}
    rows_ok = n >= min_samples and ref["rows"] >= min_samples
    miss_p = _rise_pvalue(ref["missing"], ref["rows"], missing, n) if rows_ok else None
    miss_rise = quality["missing_share"] - quality["missing_share_reference"] if rows_ok else None
    type_p = _rise_pvalue(0, ref["rows"], changed, n) if rows_ok else None
    enough = rows_ok and n_good >= min_samples and ref["count"] >= min_samples
    effect = p_value = None
    if numeric:
        floor = FLOORS["drift_numeric"]
        x = split.numbers if split.ordered else np.sort(split.numbers)
        if len(x):
            quality["out_of_range_share"] = float(
                (np.searchsorted(x, ref["min"], "left") + len(x)
                 - np.searchsorted(x, ref["max"], "right")) / len(x)
            )
        if enough:
            d, area = numeric_distances(ref["sketch"], x)
            sd = float(ref["sd"])
            effect = area / sd if sd > 0 else (0.0 if area == 0 else math.inf)
            p_value = ks(int(ref["count"]), len(x), d)
            result["ks_statistic"] = d
    else:
        floor = FLOORS["drift_categorical"]
        counts = split.categories()
        known: dict[str, int] = ref["categories"]
        other = int(ref.get("other", 0))
        new = {c: k for c, k in counts.items() if c not in known}
        # With rare reference categories pooled as `other`, an unknown one may be one of
        # them: it is counted there, not as new.
        new_shown = {} if other else new
        quality["new_categories"] = sorted(new_shown, key=lambda c: (-new_shown[c], c))[
            :NEW_CATEGORIES_SHOWN
        ]
        quality["new_category_share"] = sum(new_shown.values()) / n_good if n_good else 0.0
        if enough:
            names = list(known)
            ref_c = [known[c] for c in names] + [other] + [0] * len(new_shown)
            win = [counts.get(c, 0) for c in names] + [sum(new.values()) if other else 0]
            win += list(new_shown.values())
            _, p_value = chi_square(ref_c, win)
            effect = jensen_shannon(ref_c, win)
    drift = _alarm(effect, p_value, floor, level)
    drift["test"] = "ks+wasserstein" if numeric else "chi_square+jensen_shannon"
    result["drift"] = drift
    result["missing"] = _alarm(miss_rise, miss_p, FLOORS["missing"], level)
    result["type_change"] = _alarm(
        quality["type_changed_share"] if rows_ok else None, type_p, FLOORS["type_change"], level
    )
    result["alarm"] = any(result[k]["alarm"] for k in ("drift", "missing", "type_change"))
    # A score to rank features by: the drift effect over its floor (0 without figures).
    result["score"] = (effect / floor) if effect is not None and math.isfinite(effect) else (
        0.0 if effect is None else 1e9
    )
    return result


def ranked(features: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Feature names, most drifted first: alarms first, then by score, then by name."""
    return sorted(features, key=lambda k: (not features[k]["alarm"], -features[k]["score"], k))


def capped(names: Iterable[str], cap: int) -> list[str]:
    """At most `cap` feature names, picked stably: the first by name."""
    return sorted(names)[:cap]


HISTOGRAM_BINS = 20
CATEGORIES_SHOWN = 20


def histogram(ref: Mapping[str, Any], split: Split, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """One feature's reference (from its profile) and window distributions, as shares:
    numeric on shared bins over both ranges (the reference's shares from its sketch's CDF at
    the edges), categorical per category (the most frequent of both, the rest as `other`)."""
    import numpy as np

    if ref["kind"] == "numeric":
        x = split.numbers
        low = min(float(ref["min"]), float(x.min()) if len(x) else math.inf)
        high = max(float(ref["max"]), float(x.max()) if len(x) else -math.inf)
        if high <= low:
            high = low + 1.0
        edges = np.linspace(low, high, bins + 1)
        # Bins closed on the left, the last on both sides, as np.histogram's: the share
        # below each lower edge, then all of it.
        below = sketch_cdf(ref["sketch"], edges[:-1], left=True)
        ref_shares = np.diff(np.append(below, 1.0))
        counts = np.histogram(x, edges)[0] if len(x) else np.zeros(bins)
        total = int(counts.sum())
        return {
            "kind": "numeric",
            "edges": [round(float(e), 6) for e in edges],
            "reference": [round(float(s), 6) for s in ref_shares],
            "window": [round(float(c) / total, 6) if total else 0.0 for c in counts],
        }
    ref_counts: Mapping[str, int] = ref["categories"]
    win_counts = split.categories()
    n_ref = sum(ref_counts.values()) + int(ref.get("other", 0))
    n_win = sum(win_counts.values())
    both = Counter(
        {c: k / n_ref for c, k in ref_counts.items()} if n_ref else {}
    ) + Counter({c: k / n_win for c, k in win_counts.items()} if n_win else {})
    shown = [c for c, _ in sorted(both.items(), key=lambda kv: (-kv[1], kv[0]))]
    shown = shown[:CATEGORIES_SHOWN]

    def shares(counts: Mapping[str, int], n: int) -> list[float]:
        out = [round(counts.get(c, 0) / n, 6) if n else 0.0 for c in shown]
        return [*out, round(1 - sum(out), 6) if n else 0.0]

    return {
        "kind": "categorical",
        "categories": [*shown, "other"],
        "reference": shares(ref_counts, n_ref),
        "window": shares(win_counts, n_win),
    }
