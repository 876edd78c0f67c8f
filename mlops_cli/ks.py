"""Survival function of the two-sided one-sample Kolmogorov-Smirnov statistic, without scipy.

`kolmogorov_sf(n, d)` is P(D_n >= d), what `scipy.stats.kstwo.sf(d, n)` returns; the
two-sample test's asymptotic p-value (`ks_2samp(method="asymp")`) is it at n = round(m n/(m+n)).
It follows Simard & L'Ecuyer (2011), "Computing the Two-Sided Kolmogorov-Smirnov Distribution",
J. Stat. Software 39(11), which picks per (n, d) among:
- Ruben & Gambino (1982): closed forms for d <= 1/n and d >= 1 - 1/n;
- Durbin (1968) matrix algorithm, evaluated as Marsaglia, Tsang & Wang (2003);
- Pomeranz (1974) recursion (Algorithm 487);
- Pelz & Good (1976) asymptotic series;
- twice the one-sided Smirnov tail (Birnbaum & Tingey 1951), exact for d >= 1/2.
The selection thresholds and the three algorithms are ported from scipy's
`scipy/stats/_ksstats.py` (BSD-3-Clause, Copyright (c) 2001-2002 Enthought, Inc. and
2003-2024 SciPy Developers). The Smirnov tail is summed here with Loader's (2000) saddle-point
binomial terms ("Fast and Accurate Computation of Binomial Probabilities") instead of scipy's
double-double arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

_E128 = 128
_EP128 = math.ldexp(1.0, _E128)
_EM128 = math.ldexp(1.0, -_E128)
_SQRT2PI = math.sqrt(2 * math.pi)
_LOG_2PI = math.log(2 * math.pi)
_MIN_LOG = -708
_MINLOG = -708.3964185322641  # log of the smallest normal double
_SMIRNOV_MAX_COMPUTE_N = 1000000  # above it scipy approximates the one-sided tail
# B_{2j} / (2j) / (2j - 1) for j = 8, ..., 1: Stirling's series for log n!.
_STIRLING_COEFFS = (
    -2.955065359477124183e-2,
    6.4102564102564102564e-3,
    -1.9175269175269175269e-3,
    8.4175084175084175084e-4,
    -5.952380952380952381e-4,
    7.9365079365079365079e-4,
    -2.7777777777777777778e-3,
    8.3333333333333333333e-2,
)


def ks_two_sample_asymp_pvalue(n1: int, n2: int, d: float) -> float:
    """scipy's `ks_2samp(method="asymp")` two-sided p-value: kstwo.sf(d, round(m n / (m + n)))."""
    m, n = sorted((float(n1), float(n2)), reverse=True)
    return kolmogorov_sf(round(m * n / (m + n)), d)


def kolmogorov_sf(n: int, d: float) -> float:
    """P(D_n >= d) for the two-sided one-sample statistic of a sample of size n."""
    if n <= 0:
        return math.nan
    if d >= 1.0:
        return 0.0
    if d <= 0.0:
        return 1.0
    t = n * d
    if t <= 1.0:  # Ruben-Gambino: 1/(2n) <= d <= 1/n
        if t <= 0.5:
            return 1.0
        if n <= 140:
            cdf = 1.0
            for i in range(1, n + 1):
                cdf *= i / n * (2 * t - 1)
        else:
            cdf = math.exp(_log_nfactorial_div_n_pow_n(n) + n * math.log(2 * t - 1))
        return _clip(1.0 - cdf)
    if t >= n - 1:  # Ruben-Gambino
        return _clip(2 * (1.0 - d) ** n)
    if d >= 0.5:  # exact: the one-sided tails are disjoint
        return _clip(2 * smirnov_sf(n, d))
    nd2 = t * d
    if n <= 140:
        if nd2 <= 0.754693:
            return _clip(1.0 - _durbin_cdf(n, d))
        if nd2 <= 4:
            return _clip(1.0 - _pomeranz_cdf(n, d))
        return _clip(2 * smirnov_sf(n, d))  # Miller's approximation
    if nd2 >= 370.0:
        return 0.0
    if nd2 >= 2.2:
        return _clip(2 * smirnov_sf(n, d))
    if n <= 100000 and n * d**1.5 <= 1.4:
        return _clip(1.0 - _durbin_cdf(n, d))
    return _clip(1.0 - _pelz_good_cdf(n, d))


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


# -- helpers ---------------------------------------------------------------------------------


def _clip(p: float) -> float:
    return min(max(float(p), 0.0), 1.0)


def _log_nfactorial_div_n_pow_n(n: int) -> float:
    """log(n! / n^n) by Stirling's series, with n log n taken out to avoid cancellation."""
    rn = 1.0 / n
    series = 0.0
    for c in _STIRLING_COEFFS:
        series = series * (rn / n) + c
    return math.log(n) / 2 - n + _LOG_2PI / 2 + rn * series


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


def _durbin_cdf(n: int, d: float) -> float:
    """P(D_n <= d): Durbin's matrix, the k-th diagonal entry of H^n, as Marsaglia-Tsang-Wang."""
    nd = n * d
    if nd <= 0.5:
        return 0.0
    k = math.ceil(nd)
    h = k - nd
    m = 2 * k - 1
    powers = np.arange(1, m + 1)
    v = 1.0 - h**powers
    w = np.empty(m)
    fac = 1.0
    for j in range(1, m + 1):
        w[j - 1] = fac
        fac /= j  # may underflow harmlessly
        v[j - 1] *= fac
    v[-1] = (1.0 + max(2 * h - 1.0, 0) ** m - 2 * h**m) * fac
    big = np.zeros((m, m))
    for i in range(1, m):
        big[i - 1 :, i] = w[: m - i + 1]
    big[:, 0] = v
    big[-1, :] = v[::-1]

    result = np.eye(m)
    exponent = 0  # result is scaled by 2**-exponent
    big_exponent = 0
    remaining = n
    while remaining > 0:
        if remaining % 2:
            result = result @ big
            exponent += big_exponent
        big = big @ big
        big_exponent *= 2
        if abs(big[k - 1, k - 1]) > _EP128:
            big /= _EP128
            big_exponent += _E128
        remaining //= 2
    p = float(result[k - 1, k - 1])
    if p <= 0.0:
        return 0.0
    # Multiply by n!/n^n in logs: the product of n factors underflows for large n.
    if n < 256:
        log_scale = math.lgamma(n + 1.0) - n * math.log(n)
    else:
        log_scale = _log_nfactorial_div_n_pow_n(n)
    return math.exp(math.log(p) + exponent * math.log(2.0) + log_scale)


def _pomeranz_bounds(i: int, n: int, ll: int, ceilf: int, roundf: int) -> tuple[int, int]:
    """The interval of row i of Pomeranz's recursion that can be non-zero."""
    if i == 0:
        j1, j2 = -ll - ceilf - 1, ll + ceilf - 1
    else:
        half, odd = divmod(i + 1, 2)
        if odd == 0:  # i is odd
            if half == n + 1:
                j1, j2 = n - ll - ceilf - 1, n + ll + ceilf - 1
            else:
                j1, j2 = half - 1 - ll - roundf - 1, half + ll - 1 + ceilf - 1
        else:
            j1, j2 = half - 1 - ll - 1, half + ll + roundf - 1
    return max(j1 + 2, 0), min(j2, n)


def _pomeranz_cdf(n: int, d: float) -> float:
    """P(D_n <= d) by Pomeranz's recursion: rows are convolutions with Poisson-like weights."""
    t = n * d
    ll = math.floor(t)
    f = t - ll
    g = min(f, 1.0 - f)
    ceilf = 1 if f > 0 else 0
    roundf = 1 if f > 0.5 else 0
    size = 2 * (ll + 1)
    gpower, twogpower, onem2gpower = np.empty(size), np.empty(size), np.empty(size)
    gpower[0] = twogpower[0] = onem2gpower[0] = 1.0
    for j in range(1, size):
        gpower[j] = gpower[j - 1] * (g / n) / j
        twogpower[j] = twogpower[j - 1] * (2 * g / n) / j
        onem2gpower[j] = onem2gpower[j - 1] * ((1 - 2 * g) / n) / j

    row0, row1 = np.zeros(size), np.zeros(size)
    row1[0] = 1.0
    start0 = start1 = 0
    exponent = 0
    j1, _j2 = _pomeranz_bounds(0, n, ll, ceilf, roundf)
    for i in range(1, 2 * n + 2):
        k1 = j1
        row0, row1 = row1, row0
        start0, start1 = start1, start0
        row1.fill(0.0)
        j1, j2 = _pomeranz_bounds(i, n, ll, ceilf, roundf)
        # The first and last rows convolve with (g/n)^j/j!, odd rows (2g/n)^j/j!, even (1-2g)/n.
        weights = gpower if i in (1, 2 * n + 1) else twogpower if i % 2 else onem2gpower
        length = j2 - k1 + 1
        if length > 0:
            conv = np.convolve(row0[k1 - start0 : k1 - start0 + length], weights[:length])
            count = j2 - j1 + 1
            row1[:count] = conv[j1 - k1 : j1 - k1 + count]
            if 0 < np.max(row1) < _EM128:  # rescale before underflow
                row1 *= _EP128
                exponent -= _E128
            start1 = start0 + j1 - k1
    answer = float(row1[n - start1])
    for j in range(1, n + 1):  # times n!
        if abs(answer) > _EP128:
            answer *= _EM128
            exponent += _E128
        answer *= j
    return math.ldexp(answer, exponent)


def _pelz_good_cdf(n: int, d: float) -> float:
    """P(D_n <= d) by the Pelz-Good series (Li-Chien/Korolyuk terms in Jacobi theta form)."""
    if d <= 0.0:
        return 0.0
    if d >= 1.0:
        return 1.0
    pi2, pi4, pi6 = math.pi**2, math.pi**4, math.pi**6
    z = math.sqrt(n) * d
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    qlog = -pi2 / 8 / z2
    if qlog < _MIN_LOG:
        return 0.0
    q = math.exp(qlog)
    k1a, k1b = -z2, pi2 / 4
    k2a = 6 * z6 + 2 * z4
    k2b = (2 * z4 - 5 * z2) * pi2 / 4
    k2c = pi4 * (1 - 2 * z2) / 16
    k3d = pi6 * (5 - 30 * z2) / 64
    k3c = pi4 * (-60 * z2 + 212 * z4) / 16
    k3b = pi2 * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8

    terms = [0.0, 0.0, 0.0, 0.0]
    maxk = math.ceil(16 * z / math.pi)
    for k in range(maxk, 0, -1):  # Horner scheme in q over the odd integers m = 2k - 1
        m = 2 * k - 1
        m2, m4, m6 = m**2, m**4, m**6
        qpower = q ** (8 * k)
        coeffs = (
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        )
        terms = [t * qpower + c for t, c in zip(terms, coeffs, strict=True)]
    scale = (z, 6 * z4, 72 * z**7, 6480 * z**10)
    terms = [t * q * _SQRT2PI / s for t, s in zip(terms, scale, strict=True)]

    # The sums over all integers k in K_2 and K_3.
    q = math.exp(-pi2 / 2 / z2)
    ks = np.arange(maxk, 0, -1, dtype=np.float64)
    k2s = ks**2
    qpowers = q**k2s
    terms[2] += float(np.sum(k2s * qpowers)) * pi2 * _SQRT2PI / (-36 * z3)
    sqrt3z, kspi = math.sqrt(3) * z, math.pi * ks
    terms[3] += float(np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * k2s * qpowers)) * (
        pi2 * _SQRT2PI / (216 * z6)
    )
    return float(sum(t / float(n) ** (i / 2.0) for i, t in enumerate(terms)))


def ks_two_sample_exact_pvalue(n1: int, n2: int, d: float) -> tuple[float, float]:
    """scipy's `ks_2samp(method="exact")` two-sided (D, p-value), for any two sizes.

    D lives on the lattice of steps 1/lcm(n1, n2) (rounded to it as scipy does). Under the null
    every merge order of the two samples is equally likely: walk the merge as a path from
    (0, 0) to (n1, n2), one step per element, carrying the probability of each cell reached
    while the ECDF difference |i/n1 - j/n2| stayed below D. The p-value is the probability that
    leaves the band, summed where it leaves: positive terms only, so it stays accurate when tiny
    (no 1 - inside/total cancellation; the aim of Viehmann 2021, arXiv:2102.08037). One numpy
    pass per anti-diagonal over the cells inside the band: O((n1 + n2) x band width).
    """
    g = math.gcd(n1, n2)
    lcm = n1 // g * n2
    a, b = lcm // n1, lcm // n2  # the cell (i, j) is inside when |i a - j b| < h
    h = round(d * lcm)
    if h == 0:
        return 0.0, 1.0
    total = n1 + n2
    lo = 0  # i of the first cell held on the current anti-diagonal i + j = k
    mass = np.ones(1)
    outside = 0.0
    for k in range(total):
        i = np.arange(lo, lo + mass.size)
        j = k - i
        left = total - k
        to_1 = mass * ((n1 - i) / left)  # the next element is from sample 1: (i + 1, j)
        to_2 = mass * ((n2 - j) / left)  # from sample 2: (i, j + 1)
        in_1 = np.abs((i + 1) * a - j * b) < h
        in_2 = np.abs(i * a - (j + 1) * b) < h
        outside += float(to_1[~in_1].sum() + to_2[~in_2].sum())
        step = np.zeros(mass.size + 1)
        step[1:] += np.where(in_1, to_1, 0.0)
        step[:-1] += np.where(in_2, to_2, 0.0)
        held = np.flatnonzero(step)
        if held.size == 0:
            break
        mass = step[held[0] : held[-1] + 1]
        lo += int(held[0])
    return h / lcm, _clip(outside)
