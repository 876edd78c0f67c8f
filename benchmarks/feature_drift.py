"""Input-feature drift with fixed seeds: calibration and power, then speed against Evidently.

    python benchmarks/feature_drift.py [--quick] [--runs 200] [--only simulation speed]

60 features: 50 numeric (30 normal, 10 lognormal, 5 Poisson counts and 5 rounded or floored
values, so with ties: 10 are kept exactly by the profile, 2 by its quantile sketch with ties)
and 10 categorical (3 to 21 categories with fixed uneven shares).

1. Simulation (`feature_drift.profile_splits` and `check_gathered`, the functions a check
   calls, at the default drift.alarm_alpha): a fresh reference of 10,000 rows and fresh windows
   per run. Targets: without drift at most 1% of checks raise any feature alarm (windows 1,000
   and 10,000); at window 10,000 a 0.25 sd shift of one numeric feature, a new category taking
   10% of one categorical feature, and 20% missing values in one numeric feature are each
   flagged on that feature in at least 95% of checks.
2. Speed: the same 60 features, 100,000 reference and 100,000 window rows as JSONL samples in a
   project: `mlops drift check` (the output's check and the features', from the command line)
   against Evidently's DataDriftPreset on the same rows (its `Report.run` on DataFrames read
   from Parquet, so its reading is not counted), both timed in this run; the check's peak
   memory; and the feature check of a 10,000-row window against a 1,000,000-row reference
   against a 10,000-row one (the reference's profile is built when it is set, so only the
   window is read).
`--quick` uses 10,000 rows for the speed case, 100,000 for the large reference, 30 runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlops_cli import feature_drift as fd  # noqa: E402
from mlops_cli.schema import DEFAULT_SETTINGS  # noqa: E402

ALPHA = float(DEFAULT_SETTINGS["drift"]["alarm_alpha"])
MIN_SAMPLES = int(DEFAULT_SETTINGS["drift"]["min_samples"])
PY = sys.executable
MLOPS = str(Path(PY).with_name("mlops"))
PEERS = ROOT / "benchmarks" / ".peers"
NUMERIC, CATEGORICAL = 50, 10
TS = "2026-11-26T00:00:00.000000Z"


def _shares(j: int) -> np.ndarray:
    k = 3 + 2 * j
    weights = np.random.default_rng(1000 + j).dirichlet(np.full(k, 2.0))
    return weights / weights.sum()


def columns(rng: np.random.Generator, n: int) -> dict[str, Any]:
    """One draw of every feature: numpy arrays (numeric) and lists of strings (categorical)."""
    out: dict[str, Any] = {}
    for i in range(NUMERIC):
        if i < 30:
            x = rng.normal(i, 1 + i / 10, n)
        elif i < 40:
            x = rng.lognormal(0, 0.5 + (i - 30) / 20, n)
        elif i < 45:
            x = rng.poisson(1 + (i - 40), n).astype(np.float64)
        elif i < 48:
            x = np.round(rng.normal(0, 1, n), 1)
        else:
            x = np.floor(rng.exponential(300, n))
        out[f"num_{i:02d}"] = x
    for j in range(CATEGORICAL):
        shares = _shares(j)
        names = np.array([f"c{j}_{k}" for k in range(len(shares))])
        out[f"cat_{j}"] = names[rng.choice(len(shares), n, p=shares)].tolist()
    return out


def sd_of(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1))


def scenario(rng: np.random.Generator, n: int, name: str, ref_sd: float) -> dict[str, Any]:
    cols = columns(rng, n)
    if name == "shift":
        cols["num_00"] = cols["num_00"] + 0.25 * ref_sd
    elif name == "new_category":
        cats = cols["cat_0"]
        for i in np.flatnonzero(rng.random(n) < 0.10):
            cats[i] = "unseen"
    elif name == "missing":
        x = cols["num_01"].astype(object)
        x[rng.random(n) < 0.20] = None
        cols["num_01"] = x
    return cols


def splits(cols: dict[str, Any]) -> dict[str, fd.Split]:
    return {
        k: fd.Split(v.tolist() if isinstance(v, np.ndarray) else v) for k, v in cols.items()
    }


TARGET_FEATURE = {"shift": "num_00", "new_category": "cat_0", "missing": "num_01"}


def simulation(runs: int) -> list[tuple[str, float, str, bool]]:
    counts: dict[str, int] = {}
    other_alarms: dict[str, int] = {}
    for run in range(runs):
        rng = np.random.default_rng(run)
        ref_cols = columns(rng, 10_000)
        prof = fd.profile_splits(splits(ref_cols), 10_000)
        ref_sd = sd_of(ref_cols["num_00"])
        for label, n, name in (
            ("no drift, window 1,000", 1_000, "none"),
            ("no drift, window 10,000", 10_000, "none"),
            ("0.25 sd shift of num_00, window 10,000", 10_000, "shift"),
            ("10% new category in cat_0, window 10,000", 10_000, "new_category"),
            ("20% missing in num_01, window 10,000", 10_000, "missing"),
        ):
            found = fd.check_gathered(
                prof, splits(scenario(rng, n, name, ref_sd)), n, ALPHA, MIN_SAMPLES
            )
            drifted = found["drifted"]
            if name == "none":
                hit = bool(drifted)
            else:
                hit = TARGET_FEATURE[name] in drifted
                others = [f for f in drifted if f != TARGET_FEATURE[name]]
                other_alarms[label] = other_alarms.get(label, 0) + bool(others)
            counts[label] = counts.get(label, 0) + hit
    out = []
    for label, hits in counts.items():
        share = hits / runs
        if label.startswith("no drift"):
            out.append((label, share, "<= 1% any alarm", share <= 0.01))
        else:
            out.append((label, share, ">= 95% flagged", share >= 0.95))
            extra = other_alarms[label] / runs
            out.append((f"  other features alarmed ({label})", extra, "<= 1%", extra <= 0.01))
    return out


# -- speed -------------------------------------------------------------------------------------


def jsonl_rows(n: int, seed: int, path: Path, shift: float = 0.0) -> None:
    """n samples with the 60 features, written as JSONL in blocks (memory stays bounded)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        done = 0
        while done < n:
            size = min(20_000, n - done)
            cols = columns(rng, size)
            cols["num_00"] = cols["num_00"] + shift
            names = list(cols)
            values = [c.tolist() if isinstance(c, np.ndarray) else c for c in cols.values()]
            pred = rng.normal(0, 1, size).tolist()
            conf = np.clip(rng.normal(0.8, 0.05, size), 0, 1).tolist()
            lines = [
                orjson.dumps(
                    {
                        "ts": TS,
                        "prediction": pred[i],
                        "confidence": conf[i],
                        "features": dict(zip(names, row, strict=True)),
                    }
                )
                for i, row in enumerate(zip(*values, strict=True))
            ]
            f.write(b"\n".join(lines) + b"\n")
            done += size


def parquet_for_peer(path: Path, out: Path) -> None:
    """The same rows' features as Parquet, written by the peers' pandas."""
    code = (
        "import sys, orjson, pandas as pd\n"
        "rows = [orjson.loads(l)['features'] for l in open(sys.argv[1], 'rb')]\n"
        "pd.DataFrame(rows).to_parquet(sys.argv[2])\n"
    )
    subprocess.run([peers_python(), "-c", code, str(path), str(out)], check=True)


EVIDENTLY = """
import sys, time, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
start, cpu = time.perf_counter(), time.process_time()
if len(sys.argv) > 3:
    import cProfile, pstats
    prof = cProfile.Profile()
    prof.enable()
Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
print(time.perf_counter() - start, time.process_time() - cpu)
if len(sys.argv) > 3:
    prof.disable()
    stats = pstats.Stats(prof)
    by_module = {}
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        key = file.split("site-packages/")[-1].split("/")[0] if "site-packages" in file else file
        key = "built-in functions (called from all of them)" if key == "~" else key
        by_module[key] = by_module.get(key, 0.0) + tt
    total = sum(by_module.values())
    for key, tt in sorted(by_module.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  {key}: {tt / total:.0%} of its own time")
"""


def peers_python() -> str:
    python = PEERS / "bin" / "python"
    if not python.exists():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from run import peers_python as make  # the peers' venv, as benchmarks/run.py makes it

        return make()
    return str(python)


def mlops(root: Path, *args: str) -> None:
    subprocess.run([MLOPS, "-C", str(root), *args], check=True, stdout=subprocess.DEVNULL)


MEASURED = """
import os, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
elapsed = time.perf_counter() - start
if code.returncode not in (0, 3):
    sys.exit(code.stderr.decode()[-500:])
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(elapsed, use.ru_maxrss * 1024, use.ru_utime + use.ru_stime)
"""


def timed(cmd: list[str]) -> tuple[float, int, float]:
    """Wall time, peak RSS (bytes) and CPU time (user and system) of one command, run by a
    fresh small process: a child forked from this one (which holds the generated data) would
    start with its pages counted in its peak."""
    out = subprocess.run([PY, "-c", MEASURED, *cmd], check=True, capture_output=True, text=True)
    seconds, rss, cpu = out.stdout.split()
    return float(seconds), int(rss), float(cpu)


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes): the times move with it."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


FEATURE_CHECK = """
import sys, time
from mlops_cli import Project
from mlops_cli.feature_drift import check_chunks
d = Project.open(sys.argv[1]).drift_detector("gnn", "1.0.0")
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    prof = d.feature_profile()
    check_chunks(prof, d.store.feature_chunks(d.production, last=10_000), 0.001, 100)
    times.append(time.perf_counter() - start)
print(min(times))
"""


PHASES = """
import sys, time
from mlops_cli import Project
from mlops_cli.feature_drift import check_gathered, gather
d = Project.open(sys.argv[1]).drift_detector("gnn", "1.0.0")
rows = int(sys.argv[2])
def timed(label, call):
    start = time.perf_counter()
    out = call()
    print(f"  {label}: {time.perf_counter() - start:.2f} s")
    return out
timed("reference outputs", lambda: d.store.samples(d.reference, first=rows))
timed("window outputs", lambda: d.store.samples(d.production, last=rows))
prof = timed("the reference's feature profile (read)", d.feature_profile)
splits, n = timed("window features: read, parse, take apart",
                  lambda: gather(d.store.feature_chunks(d.production, last=rows)))
timed("feature tests", lambda: check_gathered(prof, splits, n, 0.001, 100))
"""


def project(root: Path, ref: Path, win: Path, ref_n: int, win_n: int) -> None:
    subprocess.run([MLOPS, "-C", str(root), "init"], check=True, stdout=subprocess.DEVNULL)
    mlops(root, "register", "gnn", "1.0.0", "--path", "/m")
    mlops(root, "config", "set", "drift.reference_size", str(ref_n))
    mlops(root, "config", "set", "drift.window_size", str(win_n))
    mlops(root, "drift", "reference", "gnn", "1.0.0", "--file", str(ref))  # profiled here
    mlops(root, "drift", "record", "gnn", "1.0.0", "--file", str(win))


def speed_figures(tmp: Path, rows: int, large: int, repeat: int) -> dict[str, Any]:
    """Seconds and bytes measured in one run (benchmarks/run.py reports them as its cases)."""
    ref, win = tmp / "ref.jsonl", tmp / "win.jsonl"
    jsonl_rows(rows, 1, ref)
    jsonl_rows(rows, 2, win, shift=0.25)
    root = tmp / "speed"
    project(root, ref, win, rows, rows)
    check = [MLOPS, "-C", str(root), "drift", "check", "gnn", "1.0.0", "--json"]
    parquet_for_peer(ref, tmp / "ref.parquet")
    parquet_for_peer(win, tmp / "win.parquet")
    peer = peers_python()
    evidently = [peer, "-c", EVIDENTLY, str(tmp / "ref.parquet"), str(tmp / "win.parquet")]
    # Ours before and after Evidently's run, so a change of the machine's load falls on both;
    # the CPU times (user and system) say whether a run was slowed by other work.
    runs = [timed(check)]
    print(f"load before Evidently's run: {load()}")
    theirs, theirs_cpu = map(
        float,
        subprocess.run(evidently, check=True, capture_output=True, text=True).stdout.split(),
    )
    print(f"load after it: {load()}")
    runs += [timed(check) for _ in range(max(1, repeat - 1))]
    ours = statistics.median(t for t, _, _ in runs)
    ours_cpu = statistics.median(c for _, _, c in runs)
    rss = max(r for _, r, _ in runs)
    print(f"ours {ours:.2f} s ({ours_cpu:.2f} s CPU), runs {[round(t, 2) for t, _, _ in runs]}; "
          f"Evidently {theirs:.2f} s ({theirs_cpu:.2f} s CPU): {theirs / ours:.1f}x by wall "
          f"time, {theirs_cpu / ours_cpu:.1f}x by CPU time")
    phases = subprocess.run(
        [PY, "-c", PHASES, str(root), str(rows)], check=True, capture_output=True, text=True
    ).stdout
    print(f"where our check's time goes ({rows:,} rows, in one process):", phases, sep="\n")
    where = subprocess.run(
        [peer, "-c", EVIDENTLY, str(tmp / "ref.parquet"), str(tmp / "win.parquet"), "profile"],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()[1:]
    print(f"Evidently's time by package (cProfile, {rows:,} rows):", *where, sep="\n")
    # A 10,000-row window against a large reference and against a 10,000-row one.
    small_ref, big_ref, window = tmp / "small.jsonl", tmp / "big.jsonl", tmp / "w10k.jsonl"
    jsonl_rows(10_000, 3, small_ref)
    jsonl_rows(large, 4, big_ref)
    jsonl_rows(10_000, 5, window)
    roots = []
    for name, path, n in (("small", small_ref, 10_000), ("big", big_ref, large)):
        roots.append(tmp / name)
        project(roots[-1], path, window, n, 10_000)
    # Alternated, the best of each: the machine's other load falls on both alike.
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, where_root in enumerate(roots):
            got = subprocess.run(
                [PY, "-c", FEATURE_CHECK, str(where_root), "3"],
                check=True, capture_output=True, text=True,
            )
            best[i] = min(best[i], float(got.stdout.split()[0]))
    return {
        "rows": rows, "large": large, "ours_s": ours, "evidently_s": theirs, "rss": rss,
        "small_s": best[0], "large_s": best[1], "ours_cpu_s": ours_cpu,
        "evidently_cpu_s": theirs_cpu,
    }


def speed(tmp: Path, rows: int, large: int, repeat: int) -> list[tuple[str, float, str, bool]]:
    f = speed_figures(tmp, rows, large, repeat)
    times = f["evidently_s"] / f["ours_s"]
    ratio = f["large_s"] / f["small_s"]
    return [
        (
            f"drift check with 60 features, {rows:,} reference and window rows (s)",
            f["ours_s"], f"Evidently DataDriftPreset {f['evidently_s']:.2f} s: {times:.1f}x "
            f"(by CPU time {f['evidently_cpu_s'] / f['ours_cpu_s']:.1f}x); >= 10x", times >= 10,
        ),
        ("peak memory of that check (MB)", f["rss"] / 1e6, "<= 300 MB", f["rss"] <= 300e6),
        (
            f"feature check, window 10,000: reference {large:,} / reference 10,000 (ratio)",
            ratio, f"{f['large_s']:.3f} s / {f['small_s']:.3f} s; <= 1.5", ratio <= 1.5,
        ),
    ]


def service_cost(tmp: Path, calls: int = 3000) -> tuple[float, float]:
    """Microseconds of one `add_production_sample` on a directory project, without features
    and with the 60 (the service path's cost per request, and so per feature)."""
    from mlops_cli import ModelVersion, Project

    project_ = Project.init(tmp / "service")
    project_.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="/m"))
    detector = project_.drift_detector("gnn", "1.0.0")
    cols = columns(np.random.default_rng(7), calls)
    rows = [
        dict(zip(cols, values, strict=True))
        for values in zip(
            *(c.tolist() if isinstance(c, np.ndarray) else c for c in cols.values()), strict=True
        )
    ]
    out = []
    for with_features in (False, True):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for row in rows:
                detector.add_production_sample(0.5, 0.8, features=row if with_features else None)
            best = min(best, (time.perf_counter() - start) / calls * 1e6)
        out.append(best)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--only", nargs="*", choices=["simulation", "speed", "service"])
    args = parser.parse_args()
    chosen = args.only or ["simulation", "speed"]
    results: list[tuple[str, float, str, bool]] = []
    if "simulation" in chosen:
        runs = args.runs or (30 if args.quick else 200)
        print(f"simulation: {runs} runs per scenario, alarm_alpha {ALPHA}")
        results += simulation(runs)
    if "speed" in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            if args.quick:
                results += speed(Path(tmp), 10_000, 100_000, 3)
            else:
                results += speed(Path(tmp), 100_000, 1_000_000, 3)
    if "service" in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            plain, featured = service_cost(Path(tmp))
        per = (featured - plain) / (NUMERIC + CATEGORICAL)
        print(f"add_production_sample: {plain:.0f} us without features, {featured:.0f} us with "
              f"60: {per:.2f} us per feature")
    for label, value, target, ok in results:
        print(f"{label}: {value:.4g}  [{target}] {'ok' if ok else 'MISSED'}")
    sys.exit(0 if all(ok for *_, ok in results) else 1)


if __name__ == "__main__":
    main()
