"""Kolmogorov-Smirnov p-values without scipy.stats: written for this project from the papers.

Two-sample, two-sided, as `scipy.stats.ks_2samp(method="auto")` defines them:
- exact (neither sample above 10,000): the share of the C(m+n, m) equally likely merge orders
  of the two samples whose ECDF gap stays below D (Hodges 1958), counted row by row on the
  lattice; equal sizes in the closed form of Gnedenko and Korolyuk (1951);
- asymptotic: the one-sample distribution of D_k at k = round(m n / (m + n)).

The one-sample tail P(D_k >= d) follows the method selection of Simard and L'Ecuyer (2011),
"Computing the Two-Sided Kolmogorov-Smirnov Distribution", J. Stat. Software 39(11), section 4:
the Ruben-Gambino closed forms near the ends, Durbin's matrix formula as Marsaglia, Tsang and
Wang (2003) evaluate it, the Pelz-Good (1976) asymptotic series, and twice the one-sided
Smirnov tail (Birnbaum and Tingey 1951; Miller 1956) in the far tail. The Smirnov tail is summed
with Loader's (2000) saddle-point binomial terms ("Fast and Accurate Computation of Binomial
Probabilities"). Durbin's formula stands in for Pomeranz's recursion where the paper picks the
latter (n <= 140, 0.754693 < n d^2 <= 4): both are exact, Durbin's is the simpler to state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_LOG_2PI = math.log(2 * math.pi)
_MINLOG = -708.3964185322641  # log of the smallest normal double
_SMIRNOV_MAX_COMPUTE_N = 1000000  # above it the one-sided tail is Miller's approximation
_SCALE_BITS = 512  # matrix powers are rescaled by 2**-512 past 2**512
_TOP = math.ldexp(1.0, 960)  # lattice counts are rescaled by 2**-60 past 2**960
_STEP_BITS = 60
_STEP_DOWN = math.ldexp(1.0, -_STEP_BITS)


# -- two samples -----------------------------------------------------------------------------


KS_EXACT_MAX_N = 10000  # scipy's `method="auto"`: exact p-values up to this sample size


def ecdf_distances(a_sorted: Any, b_sorted: Any) -> tuple[float, float]:
    """The Kolmogorov-Smirnov statistic D (the largest gap between the two ECDFs) and the
    Wasserstein-1 distance (the area between them) of two sorted, non-empty samples, from one
    pass over the merged values."""
    merged, from_a = merge_sorted(a_sorted, b_sorted)
    return merged_ecdf_distances(merged, from_a)


def merge_sorted(a_sorted: Any, b_sorted: Any) -> tuple[Any, Any]:
    """The values of two sorted samples in one sorted array, as a stable sort of the two
    concatenated would order them (at a tie the first sample's first), and which came from
    the first. Each value's place is its rank in its own sample plus the count of the other
    sample's values before it: one binary search per value of the smaller sample."""
    n1, n2 = len(a_sorted), len(b_sorted)
    merged = np.empty(n1 + n2, dtype=np.result_type(a_sorted, b_sorted))
    from_a = np.zeros(n1 + n2, dtype=bool)
    if n1 <= n2:
        places = np.arange(n1) + np.searchsorted(b_sorted, a_sorted, side="left")
        from_a[places] = True
        merged[places] = a_sorted
        merged[~from_a] = b_sorted
    else:
        places = np.arange(n2) + np.searchsorted(a_sorted, b_sorted, side="right")
        from_a[:] = True
        from_a[places] = False
        merged[places] = b_sorted
        merged[from_a] = a_sorted
    return merged, from_a


def merged_ecdf_distances(merged: Any, from_a: Any) -> tuple[float, float]:
    """ecdf_distances from the merge of the two samples (see merge_sorted): the ECDF gap
    after each merged value is a running count; D is read where a run of equal values ends.
    (Written for a window of a million: few temporaries, the count taken over bytes.)"""
    n = len(merged)
    n1 = int(np.count_nonzero(from_a))
    n2 = n - n1
    # After the i-th merged value (i from 1): seen/n1 - (i - seen)/n2.
    seen = np.cumsum(from_a.view(np.uint8), dtype=np.int64)
    gaps = seen / n1
    others = np.arange(1, n + 1, dtype=np.int64)
    others -= seen
    gaps -= others / n2
    distinct = merged[1:] != merged[:-1]
    ends = gaps if distinct.all() else gaps[np.append(distinct, True)]
    d = max(float(ends.max()), -float(ends.min()))
    np.abs(gaps, out=gaps)
    widths = np.diff(merged)
    widths *= gaps[:-1]
    return min(d, 1.0), float(widths.sum())


def ks_two_sample_pvalue(n1: int, n2: int, d: float) -> tuple[float, float]:
    """(D, two-sided p-value) as scipy's `ks_2samp(method="auto")`: exact when neither sample
    exceeds 10,000 (D then rounded to its lattice), else asymptotic."""
    if max(n1, n2) <= KS_EXACT_MAX_N:
        return ks_two_sample_exact_pvalue(n1, n2, d)
    return d, ks_two_sample_asymp_pvalue(n1, n2, d)



def ks_two_sample_exact_pvalue(n1: int, n2: int, d: float) -> tuple[float, float]:
    """The exact two-sided (D, p-value) of two samples of sizes n1 and n2, for any sizes.

    D takes values on the lattice of steps 1/lcm(n1, n2) and is rounded to it first.
    """
    lcm = n1 // math.gcd(n1, n2) * n2
    h = round(d * lcm)
    if h == 0:
        return 0.0, 1.0
    if n1 == n2:
        return h / lcm, _equal_sizes_tail(n1, h)
    tail = _clip(1.0 - _inside_share(n1, n2, h))
    return h / lcm, min(tail, _gap_tail_bound(n1, n2, h / lcm))


def _equal_sizes_tail(n: int, h: int) -> float:
    """P(D_{n,n} >= h/n) = 2 sum_{k >= 1} (-1)^(k-1) C(2n, n - k h) / C(2n, n) (Gnedenko and
    Korolyuk 1951, by reflection). C(2n, n - r) / C(2n, n) is the product over j < r of
    (n - j) / (n + 1 + j); the terms fall at least geometrically, so the sum cancels nothing."""
    j = np.arange(n, dtype=np.float64)
    ratios = np.cumprod((n - j) / (n + 1.0 + j))  # ratios[r - 1] = C(2n, n - r) / C(2n, n)
    terms = ratios[h - 1 :: h]
    signs = np.where(np.arange(terms.size) % 2 == 0, 1.0, -1.0)
    return _clip(2.0 * float(np.sum(terms[::-1] * signs[::-1])))


def _inside_share(n1: int, n2: int, h: int) -> float:
    """The share of merge orders whose ECDF gap stays below h / lcm all the way.

    A merge order is a lattice path from (0, 0) to (n1, n2) in unit steps: i elements of the
    first sample and j of the second seen so far. The gap there is |i a - j b| / lcm with
    a = lcm / n1, b = lcm / n2, so in row i the allowed columns form one interval [lo_i, hi_i],
    and both ends only move right as i grows. Paths reaching (i, j) come from (i - 1, j) or
    (i, j - 1), so a row's counts are the running sum of the previous row's over the interval.
    Counts are scaled by powers of two (exact) and divided by C(n1 + n2, n1) at the end.

    Counts grow by up to a factor 2 a column along a row, so a wide band spans more than a
    double's range; cells beyond the gap `_negligible_gap` carry less than 1e-40 of all paths,
    so the band is cut there (the share then errs by under 1e-40) and keeps the cells near the
    diagonal, which carry the answer, within 1,500 bits of the row's largest count.
    """
    if n1 > n2:  # rows along the smaller sample: fewer numpy calls
        n1, n2 = n2, n1
    lcm = n1 // math.gcd(n1, n2) * n2
    a, b = lcm // n1, lcm // n2
    h = min(h, math.ceil(_negligible_gap(n1, n2) * lcm))
    rows = np.arange(n1 + 1, dtype=np.int64)
    los = np.maximum(0, (rows * a - h) // b + 1)
    his = np.minimum(n2, -((-(rows * a + h)) // b) - 1)
    if np.any(los > np.minimum(his, np.concatenate(([n2], his[:-1])))):
        return 0.0  # some row holds no cell that a path from the row above can reach
    row = np.zeros(n2 + 1)
    row[: int(his[0]) + 1] = 1.0
    exponent = 0
    # Columns left of a row's band are never read again, and those right of it were never
    # written, so each row is one running sum in place.
    for lo, hi in zip(los[1:].tolist(), his[1:].tolist(), strict=True):
        band = row[lo : hi + 1]
        np.cumsum(band, out=band)
        # The running sums end at the row's largest count, which never falls down the rows:
        # keep it between 2^900 and 2^972, so the diagonal's counts stay normal doubles.
        if band[-1] > _TOP:
            band *= _STEP_DOWN
            exponent += _STEP_BITS
    count = float(row[n2])
    if his[-1] < n2 or count == 0.0:
        return 0.0
    total = math.comb(n1 + n2, n1)
    shift = max(total.bit_length() - 64, 0)
    return _clip(math.ldexp(count / float(total >> shift), exponent - shift))


def _negligible_gap(n1: int, n2: int) -> float:
    """A gap that the ECDFs of two equal distributions exceed anywhere with probability under
    1e-40: after k of N = n1 + n2 merged elements, the count i from the first sample is
    hypergeometric, and Hoeffding's (1963, theorems 1 and 4) bound P(|i - k n1/N| >= s) <=
    2 exp(-2 s^2 / min(k, N - k)) with the gap x = s N / (n1 n2), summed over k, gives
    P(max gap >= x) <= 2 N exp(-4 x^2 n1^2 n2^2 / N^3)."""
    total = n1 + n2
    return math.sqrt((math.log(2.0 * total) + 40 * math.log(10.0)) * total**3 / 4.0) / (n1 * n2)


def _gap_tail_bound(n1: int, n2: int, d: float) -> float:
    """The bound of `_negligible_gap` at gap d: P(D >= d) <= 2 N exp(-4 d^2 n1^2 n2^2 / N^3)."""
    total = n1 + n2
    return 2.0 * total * math.exp(-4.0 * d * d * (n1 * n2) ** 2 / total**3)


def ks_two_sample_asymp_pvalue(n1: int, n2: int, d: float) -> float:
    """The asymptotic two-sided p-value: P(D_k >= d) at k = round(m n / (m + n))."""
    m, n = float(n1), float(n2)
    return kolmogorov_sf(round(m * n / (m + n)), d)


# -- one sample ------------------------------------------------------------------------------


def kolmogorov_sf(n: int, d: float) -> float:
    """P(D_n >= d) for the two-sided one-sample statistic of a sample of size n, the method
    picked per (n, d) as Simard and L'Ecuyer (2011, section 4) do."""
    if n <= 0:
        return math.nan
    if d >= 1.0:
        return 0.0
    if d <= 0.0:
        return 1.0
    t = n * d
    if t <= 0.5:
        return 1.0  # D_n >= 1/(2n) always
    if t <= 1.0:  # Ruben and Gambino (1982): P(D_n < d) = n! / n^n (2 n d - 1)^n
        return _clip(1.0 - math.exp(_log_factorial_over_power(n) + n * math.log(2 * t - 1)))
    if t >= n - 1:  # Ruben and Gambino: P(D_n >= d) = 2 (1 - d)^n
        return _clip(2.0 * (1.0 - d) ** n)
    if d >= 0.5:  # the two one-sided tails cannot both be reached: exactly twice one
        return _clip(2.0 * smirnov_sf(n, d))
    nd2 = t * d
    if n <= 140:
        if nd2 <= 4.0:
            return _clip(1.0 - _durbin_cdf(n, d))
        return _clip(2.0 * smirnov_sf(n, d))
    if nd2 >= 370.0:
        return 0.0
    if nd2 >= 2.2:
        return _clip(2.0 * smirnov_sf(n, d))
    if n <= 100000 and n * d**1.5 <= 1.4:
        return _clip(1.0 - _durbin_cdf(n, d))
    return _clip(1.0 - _pelz_good_cdf(n, d))


def _log_factorial_over_power(n: int) -> float:
    """log(n! / n^n), by Stirling's series past n = 20 (no n log n to cancel)."""
    if n < 20:
        return math.lgamma(n + 1.0) - n * math.log(n)
    r = 1.0 / n
    r2 = r * r
    series = r * (1 / 12 - r2 * (1 / 360 - r2 * (1 / 1260 - r2 * (1 / 1680 - r2 / 1188))))
    return -n + 0.5 * (_LOG_2PI + math.log(n)) + series


def _durbin_cdf(n: int, d: float) -> float:
    """P(D_n < d) = n!/n^n (H^n)_{kk} (Durbin 1973), H of order 2k - 1 as in Marsaglia, Tsang
    and Wang (2003): k = floor(n d) + 1, h = k - n d, H_ij = 1/(i - j + 1)! where i - j + 1 >= 0,
    the first column and last row reduced by h^r / r!, the corner raised by (2h - 1)_+^m / m!."""
    k = math.floor(n * d) + 1
    h = k - n * d
    m = 2 * k - 1
    inv_fact = np.concatenate(([1.0], np.cumprod(1.0 / np.arange(1, m + 1))))  # 1/r!
    order = np.arange(m)
    lag = order[:, None] - order[None, :] + 1
    matrix = np.where(lag >= 0, inv_fact[np.clip(lag, 0, m)], 0.0)
    h_powers = h ** np.arange(1, m + 1, dtype=np.float64)  # h^1 .. h^m
    matrix[:, 0] -= h_powers * inv_fact[1 : m + 1]
    matrix[m - 1, :] -= h_powers[::-1] * inv_fact[m:0:-1]
    matrix[m - 1, 0] += max(0.0, 2 * h - 1) ** m * inv_fact[m]
    power, exponent = _matrix_power(matrix, n)
    entry = float(power[k - 1, k - 1])
    if entry <= 0.0:
        return 0.0
    log_cdf = math.log(entry) + exponent * math.log(2.0) + _log_factorial_over_power(n)
    return math.exp(min(log_cdf, 0.0))


def _matrix_power(matrix: Any, n: int) -> tuple[Any, int]:
    """matrix^n as (M, e) with matrix^n = M 2^e: square and multiply, rescaled by powers of two
    whenever an entry passes 2^512, so nothing overflows."""
    big = math.ldexp(1.0, _SCALE_BITS)
    result, result_exp = None, 0
    base, base_exp = matrix, 0
    while True:
        if n & 1:
            if result is None:
                result, result_exp = base.copy(), base_exp
            else:
                result = result @ base
                result_exp += base_exp
                if np.abs(result).max() > big:
                    result *= 1.0 / big
                    result_exp += _SCALE_BITS
        n >>= 1
        if not n:
            return result, result_exp
        base = base @ base
        base_exp *= 2
        if np.abs(base).max() > big:
            base *= 1.0 / big
            base_exp += _SCALE_BITS


def _pelz_good_cdf(n: int, d: float) -> float:
    """P(D_n <= d) ~ K0 + K1/sqrt(n) + K2/n + K3/n^(3/2), z = d sqrt(n): the Pelz-Good (1976)
    series as Simard and L'Ecuyer (2011, eq. 7) write it, with u_k = pi^2 (k - 1/2)^2 (the
    sums over all integers folded onto k >= 1)."""
    z = d * math.sqrt(n)
    z2 = z * z
    if math.pi**2 / (8 * z2) > -_MINLOG:
        return 0.0
    terms = max(3, int(5.0 * z) + 5)  # exp(-pi^2 (k - 1/2)^2 / (2 z^2)) is negligible beyond
    k = np.arange(1, terms + 1, dtype=np.float64)
    u = (math.pi * (k - 0.5)) ** 2
    e_odd = np.exp(-u / (2 * z2))
    v = (math.pi * k) ** 2
    e_even = np.exp(-v / (2 * z2))
    z4, z6 = z2 * z2, z2 * z2 * z2
    s = math.sqrt(2 * math.pi)
    k0 = s / z * float(np.sum(e_odd))
    k1 = s / (6 * z4) * float(np.sum((u - z2) * e_odd))
    k2 = s / (72 * z6 * z) * float(
        np.sum((6 * z6 + 2 * z4 + (2 * z4 - 5 * z2) * u + (1 - 2 * z2) * u * u) * e_odd)
    ) - s / (36 * z2 * z) * float(np.sum(v * e_even))
    k3 = s / (6480 * z6 * z4) * float(
        np.sum(
            (
                -30 * z6
                - 90 * z6 * z2
                + (135 * z4 - 96 * z6) * u
                + (212 * z4 - 60 * z2) * u * u
                + (5 - 30 * z2) * u**3
            )
            * e_odd
        )
    ) + s / (216 * z6) * float(np.sum((3 * z2 - v) * v * e_even))
    root = math.sqrt(n)
    return k0 + k1 / root + k2 / n + k3 / (n * root)


# -- the one-sided tail ----------------------------------------------------------------------


def smirnov_sf(n: int, d: float) -> float:
    """P(D_n^+ >= d), the one-sided statistic: Birnbaum & Tingey's finite sum.

    d * sum_{v=0}^{floor(n(1-d))} C(n, v) (d + v/n)^(v-1) (1 - d - v/n)^(n-v); each term is
    (d / p) * P(Binomial(n, p) = v) at p = d + v/n, computed by Loader's method. All n terms
    count (they spread over the whole range), so this is O(n): 0.1 s at n = 500,000.
    """
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    if -2 * n * d * d < _MINLOG:
        return 0.0
    if n > _SMIRNOV_MAX_COMPUTE_N:  # scipy's approximation: p ~ exp(-(6nd+1)^2 / (18n))
        return math.exp(-((6.0 * n * d + 1) ** 2) / 18.0 / n)
    v = np.arange(0, math.floor(n * (1.0 - d)) + 1, dtype=np.float64)
    q = (n - v) / n - d  # 1 - d - v/n
    keep = q > 0
    v, q = v[keep], q[keep]
    p = d + v / n
    first = math.exp(n * math.log1p(-d))  # v = 0: (1 - d)^n
    rest = v > 0
    terms = d / p[rest] * _binomial_pmf(v[rest], n, p[rest], q[rest])
    return float(first + np.sum(terms))


def _clip(p: float) -> float:
    return min(max(float(p), 0.0), 1.0)


def _stirlerr(k: np.ndarray) -> np.ndarray:
    """log(k!) - log(sqrt(2 pi k) (k/e)^k), for k >= 1 (Loader 2000)."""
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    kk = k * k
    out: np.ndarray = (s0 - (s1 - (s2 - (s3 - s4 / kk) / kk) / kk) / kk) / k
    small = k <= 15
    if np.any(small):
        ks = k[small]
        out[small] = [
            math.lgamma(x + 1) - (x + 0.5) * math.log(x) + x - _LOG_2PI / 2 for x in ks.tolist()
        ]
    return out


def _bd0(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """x log(x / mu) + mu - x without cancellation (Loader 2000)."""
    out: np.ndarray = x * np.log(x / mu) + mu - x
    near = np.abs(x - mu) < 0.1 * (x + mu)
    if np.any(near):
        xs, ms = x[near], mu[near]
        v = (xs - ms) / (xs + ms)
        s = (xs - ms) * v
        ej = 2 * xs * v
        v2 = v * v
        for j in range(1, 10):  # |v| < 0.1: each term is 100 times smaller than the last
            ej = ej * v2
            s = s + ej / (2 * j + 1)
        out[near] = s
    return out


def _binomial_pmf(v: np.ndarray, n: int, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """P(Binomial(n, p) = v) for 0 < v < n, q = 1 - p given accurately (Loader 2000)."""
    nf = float(n)
    lc = (
        _stirlerr(np.array([nf]))[0]
        - _stirlerr(v)
        - _stirlerr(nf - v)
        - _bd0(v, nf * p)
        - _bd0(nf - v, nf * q)
    )
    lf = _LOG_2PI + np.log(v) + np.log1p(-v / nf)
    result: np.ndarray = np.exp(lc - 0.5 * lf)
    return result
