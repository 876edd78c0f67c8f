"""The Kolmogorov-Smirnov p-values of `ks.py` and `stats.ks_two_sample` against scipy.stats."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from mlops_cli import ks
from mlops_cli.ks import KS_EXACT_MAX_N, kolmogorov_sf, smirnov_sf
from mlops_cli.stats import ks_two_sample

SIZES = (100, 1000, 10000, 100000, 1000000)
PAIRS = [*itertools.combinations(SIZES, 2), (137, 9999), (9999, 137), (101, 103), (4999, 5003)]
PAIRS += [(100, 100), (1000, 1000), (10000, 10000), (9999, 10000), (5000, 10000), (3000, 7001)]
# Shifts of the second sample in units of 1/sqrt(effective size): D from 0 to beyond p = 1e-10.
SHIFTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 9.0, 12.0, 20.0)


def agrees(got: float, want: float) -> bool:
    """The contract with scipy: 1e-6 relative or 1e-12 absolute."""
    return abs(got - want) <= max(1e-6 * abs(want), 1e-12)


def sample(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=size)


@pytest.mark.parametrize(("m", "n"), PAIRS)
def test_two_sample_pvalue_matches_scipy_on_real_samples(m: int, n: int) -> None:
    method = "exact" if max(m, n) <= KS_EXACT_MAX_N else "asymp"
    a = sample(m, m)
    scale = 1 / math.sqrt(m * n / (m + n))
    seen = set()
    for i, shift in enumerate(SHIFTS):
        b = sample(n, n + 7919 * i) + shift * scale
        d, p = ks_two_sample(a, b)
        want = scipy.stats.ks_2samp(a, b, method=method)
        assert d == pytest.approx(float(want.statistic), rel=1e-12, abs=1e-15)
        assert agrees(p, float(want.pvalue)), (m, n, shift, d, p, float(want.pvalue))
        seen.add(float(want.pvalue) > 1e-10)
    assert seen == {True, False}  # the shifts reach both sides of the cut


@pytest.mark.parametrize(("m", "n"), [(2000, 2000), (3, 5), (10, 7), (999, 1001), (9999, 10000)])
def test_small_samples_keep_the_exact_distribution(m: int, n: int) -> None:
    a, b = sample(m, 1), sample(n, 2) + 0.08
    d, p = ks_two_sample(a, b)
    want = scipy.stats.ks_2samp(a, b, method="exact")
    assert d == float(want.statistic) and agrees(p, float(want.pvalue))
    assert p != pytest.approx(float(scipy.stats.ks_2samp(a, b, method="asymp").pvalue), rel=1e-4)


# Effective sizes that reach every branch of the Simard-L'Ecuyer selection: n <= 140 (Durbin,
# Pomeranz, Smirnov), n <= 100000 (Durbin), larger (Pelz-Good), and the closed forms.
EFFECTIVE = (1, 2, 3, 10, 91, 137, 140, 141, 990, 9090, 50000, 90909, 99999, 100001, 499999)
EFFECTIVE += (1_000_001, 4_999_999)  # scipy approximates the one-sided tail above 1,000,000


@pytest.mark.parametrize("n", EFFECTIVE)
def test_kolmogorov_sf_matches_scipy_kstwo(n: int) -> None:
    # the whole range, and densely where P is between 1e-10 and 1 (n d^2 below about 12);
    # sparser for large n, where scipy takes up to a second a point
    statistics = np.concatenate(
        [
            np.linspace(1e-4, 0.999, 40),
            np.geomspace(1e-5, 0.5, 30),
            np.sqrt(np.linspace(0.01, 12, 40 if n <= 10000 else 12 if n <= 100001 else 6) / n),
        ]
    )
    statistics = statistics[statistics < 1]
    want = scipy.stats.kstwo.sf(statistics, n)
    for d, w in zip(statistics.tolist(), want.tolist(), strict=True):
        assert agrees(kolmogorov_sf(n, d), w), (n, d, kolmogorov_sf(n, d), w)


@pytest.mark.parametrize("n", (5, 50, 500, 5000, 50000))
def test_smirnov_sf_matches_scipy_special(n: int) -> None:
    import scipy.special

    for d in np.linspace(0.001, 0.99, 97).tolist():
        want = float(scipy.special.smirnov(n, d))
        assert agrees(smirnov_sf(n, d), want), (n, d, smirnov_sf(n, d), want)


def test_edges() -> None:
    assert kolmogorov_sf(100, 0.0) == 1.0 and kolmogorov_sf(100, 1.0) == 0.0
    assert kolmogorov_sf(100, 0.004) == 1.0  # below 1/(2n): D_n >= 1/(2n) always
    assert math.isnan(kolmogorov_sf(0, 0.5))
    assert ks_two_sample(np.arange(500.0), np.arange(500.0) + 0.5)[1] == pytest.approx(
        float(scipy.stats.ks_2samp(np.arange(500.0), np.arange(500.0) + 0.5).pvalue)
    )


def test_the_drift_statistics_import_no_scipy() -> None:
    code = (
        "import sys, numpy as np\n"
        "from mlops_cli.stats import ks_two_sample\n"
        "rng = np.random.default_rng(0)\n"
        "ks_two_sample(rng.normal(size=3000), rng.normal(size=70000))\n"
        "ks_two_sample(rng.normal(size=20000), rng.normal(size=20000))\n"
        "from mlops_cli.drift import components\n"
        "for n in (300, 5000, 30000):\n"
        "    components(rng.normal(size=n), rng.random(n), rng.normal(size=700), rng.random(700))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("m", "n"), [(300, 700), (7000, 30000)])
def test_ties_match_scipy(m: int, n: int) -> None:
    a, b = np.round(sample(m, 11), 1), np.round(sample(n, 12) + 0.05, 1)
    d, p = ks_two_sample(a, b)
    want = scipy.stats.ks_2samp(a, b)  # "auto": exact up to 10,000, as ks_two_sample
    assert d == pytest.approx(float(want.statistic), rel=1e-12)
    assert agrees(p, float(want.pvalue)), (p, float(want.pvalue))


def _exact_by_counting(m: int, n: int, d: float) -> float:
    """The two-sided p-value by counting merge orders that stay inside the band, in exact
    integers (Hodges 1958): independent of the code under test, for small sizes."""
    from fractions import Fraction

    lcm = m * n // math.gcd(m, n)
    h, a, b = round(d * lcm), lcm // m, lcm // n
    row = [0] * (n + 1)
    for i in range(m + 1):
        new = [0] * (n + 1)
        for j in range(n + 1):
            if abs(i * a - j * b) >= h:
                continue
            new[j] = 1 if i == j == 0 else (row[j] if i else 0) + (new[j - 1] if j else 0)
        row = new
    return float(1 - Fraction(row[n], math.comb(m + n, m)))


@pytest.mark.parametrize(("m", "n"), [(50, 80), (120, 70), (200, 90), (7, 300)])
def test_exact_share_equals_counting_merge_orders(m: int, n: int) -> None:
    lcm = m * n // math.gcd(m, n)
    for frac in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8):
        h = max(1, round(frac * lcm))
        want = _exact_by_counting(m, n, h / lcm)
        assert ks.ks_two_sample_exact_pvalue(m, n, h / lcm)[1] == pytest.approx(
            want, rel=1e-9, abs=1e-14
        )


def test_wide_bands_keep_the_diagonal() -> None:
    """Near-equal sizes and a large D: lattice counts along a row span more than a double's
    range, and the band is cut where no path's weight can matter (the p-value is tiny, as
    scipy's; a loss of the diagonal's counts would give a p-value near 1)."""
    for m, n, d in [(4999, 5003, 0.18), (9999, 10000, 0.1), (3000, 7001, 0.3)]:
        lcm = m * n // math.gcd(m, n)
        h = round(d * lcm)
        p = ks.ks_two_sample_exact_pvalue(m, n, h / lcm)[1]
        a = np.arange(m) / m
        b = np.arange(n) / n + h / lcm - 0.5 / n / m
        want = float(scipy.stats.ks_2samp(a, b, method="exact").pvalue)
        assert agrees(p, want), (m, n, p, want)


def test_exact_tail_at_demo_sizes_matches_scipy() -> None:
    """5,000 reference and 2,000 window samples, p from 1e-3 to 1e-69."""
    rng = np.random.default_rng(7)
    for shift in (0.1, 0.2, 0.55):
        a, b = rng.normal(0, 1, 5000), rng.normal(shift, 1, 2000)
        want = scipy.stats.ks_2samp(a, b, method="exact")
        _, p = ks.ks_two_sample_exact_pvalue(5000, 2000, float(want.statistic))
        assert agrees(p, float(want.pvalue))
