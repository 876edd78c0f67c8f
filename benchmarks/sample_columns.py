"""Parse drift sample lines into columns: the fast path against orjson with a dict per line.

    python benchmarks/sample_columns.py [--lines N] [--repeat R]

Both run in this process on the same bytes, in 8 MB chunks as drift reads them; the figure to
quote is the ratio (the machine may be shared), the medians are printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import orjson

from mlops_cli.columns import parse_sample_columns

CHUNK = 8 << 20


def sample_block(lines: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pred, conf = rng.normal(0.4, 0.1, lines).tolist(), rng.random(lines).tolist()
    return b"".join(
        orjson.dumps({"ts": "2026-01-01T00:00:00.000000Z", "prediction": p, "confidence": c})
        + b"\n"
        for p, c in zip(pred, conf, strict=True)
    )


def chunks(block: bytes) -> list[bytes]:
    out, start = [], 0
    while start < len(block):
        end = block.rfind(b"\n", start, start + CHUNK) + 1 or len(block)
        out.append(block[start:end])
        start = end
    return out


def with_orjson(parts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    preds, confs = [], []
    for part in parts:
        rows = [orjson.loads(line) for line in part.split(b"\n")[:-1]]
        preds.append(np.array([r["prediction"] for r in rows], dtype=np.float64))
        confs.append(np.array([r["confidence"] for r in rows], dtype=np.float64))
    return np.concatenate(preds), np.concatenate(confs)


def with_fast_path(parts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    preds, confs = [], []
    for part in parts:
        columns = parse_sample_columns(part)
        assert columns is not None
        preds.append(columns[0])
        confs.append(columns[1])
    return np.concatenate(preds), np.concatenate(confs)


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    parts = chunks(sample_block(args.lines))
    fast, slow = with_fast_path(parts), with_orjson(parts)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    t_orjson = median_seconds(lambda: with_orjson(parts), args.repeat)
    t_fast = median_seconds(lambda: with_fast_path(parts), args.repeat)
    print(
        f"{args.lines:,} lines, {sum(map(len, parts)) / 1e6:.0f} MB: orjson+dict {t_orjson:.3f} s, "
        f"fast path {t_fast:.3f} s, ratio {t_orjson / t_fast:.2f}x (median of {args.repeat})"
    )


if __name__ == "__main__":
    main()
