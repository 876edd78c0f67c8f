"""A window read in two processes (mlops_cli/forked.py, store/files.read_columns): the same
arrays, errors and skipped lines as one process reading it all, whatever the child does."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlops_cli import forked
from mlops_cli.errors import StateError
from mlops_cli.jsonl import head_span
from mlops_cli.store import files

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or len(os.sched_getaffinity(0)) < 2, reason="needs fork and two CPUs"
)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's other tests may leave threads running (servers, pools): the children
    here read files only, so they are allowed as if this thread were alone."""
    monkeypatch.setattr(threading, "active_count", lambda: 1)

TS = "2026-12-06T06:00:00.000000Z"


def line(prediction: float, confidence: float) -> bytes:
    return orjson.dumps({"ts": TS, "prediction": prediction, "confidence": confidence}) + b"\n"


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[forked.Child]:
    """Every child read_columns makes, with the split lowered to 64 KiB."""
    made: list[forked.Child] = []

    class Counted(forked.Child):
        def __init__(self, work: Any) -> None:
            super().__init__(work)
            made.append(self)

    monkeypatch.setattr(files, "SPLIT_BYTES", 64 << 10)
    monkeypatch.setattr(forked, "Child", Counted)
    return made


def forbid_forks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """may_fork answers False until the returned flag is set to True."""
    allowed = [False]
    real = forked.may_fork
    monkeypatch.setattr(forked, "may_fork", lambda: allowed[0] and real())
    return allowed


def write(tmp_path: Path, rows: list[bytes]) -> tuple[Path, int]:
    log = tmp_path / "production.jsonl"
    log.write_bytes(b"".join(rows))
    return log, log.stat().st_size


def test_a_window_read_in_two_processes_gives_the_values_written(
    tmp_path: Path, children: list[forked.Child]
) -> None:
    rng = np.random.default_rng(3)
    pred, conf = rng.normal(0, 2, 30_000), rng.random(30_000)
    rows = [line(float(p), float(c)) for p, c in zip(pred, conf, strict=True)]
    log, size = write(tmp_path, rows)
    start = sum(len(r) for r in rows[:1234])  # the window: from line 1,235 to the end
    got_pred, got_conf, skipped, ordered = files.read_window(log, start, size, 1 << 40)
    assert len(children) == 1 and children[0].pid == 0  # made, and reaped
    assert skipped == 0
    assert got_pred.tobytes() == pred[1234:].tobytes()
    assert got_conf.tobytes() == conf[1234:].tobytes()
    assert ordered.tobytes() == np.sort(pred[1234:]).tobytes()  # each part's sort, merged
    # a limit inside the second half, and one the first half reaches (the child is stopped)
    assert files.read_columns(log, start, size, 20_000)[0].tobytes() == pred[1234:21_234].tobytes()
    assert files.read_columns(log, start, size, 10)[0].tobytes() == pred[1234:1244].tobytes()
    assert len(children) == 3 and all(c.pid == 0 for c in children)


def test_a_bad_line_in_the_childs_half_is_named_as_one_process_names_it(
    tmp_path: Path, children: list[forked.Child]
) -> None:
    rows = [line(0.001 * i, 0.5) for i in range(20_000)]
    rows[18_000] = b'{"ts":"x","prediction":"high","confidence":0.5}\n'
    log, size = write(tmp_path, rows)
    with pytest.raises(StateError, match="line 18001 is not a valid sample"):
        files.read_columns(log, 0, size, 1 << 40)
    assert len(children) == 1
    pred, _, skipped, ordered = files.read_window(log, 0, size, 1 << 40, skip_invalid=True)
    assert skipped == 1 and len(pred) == 19_999 and ordered is None  # read here: not sorted
    assert pred[17_999] == 0.001 * 17_999 and pred[18_000] == 0.001 * 18_001


def test_a_check_from_a_window_read_in_two_processes_gives_the_same_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children: list[forked.Child]
) -> None:
    from mlops_cli import ModelVersion, Project

    project = Project.init(tmp_path / "p")
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="/m"))
    detector = project.drift_detector("gnn", "1.0.0")
    rng = np.random.default_rng(5)
    detector.add_reference(
        b"".join(orjson.dumps({"prediction": float(p), "confidence": float(c)}) + b"\n"
                 for p, c in zip(rng.normal(0, 1, 2000), rng.beta(8, 2, 2000), strict=True))
    )
    values = np.round(rng.normal(0.2, 1.3, 20_000), 2)  # ties, and a zero of either sign
    values[:50], values[50:100] = 0.0, -0.0
    for p, c in zip(values, rng.beta(8, 2, 20_000), strict=True):
        detector.add_production_sample(float(p), float(c))
    project.set_setting("drift.window_size", "20000")
    project.set_setting("drift.reference_size", "2000")
    allowed = forbid_forks(monkeypatch)
    alone = dict(project.drift_detector("gnn", "1.0.0").check())
    assert not children
    allowed[0] = True
    split = dict(project.drift_detector("gnn", "1.0.0").check())
    for figures in (alone, split):
        figures.pop("checked_at")
    assert len(children) == 2  # the reference's first 2,000 lines and the window
    assert split == alone and alone["n_window"] == 20_000


def test_a_small_reference_is_read_while_the_windows_child_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children: list[forked.Child]
) -> None:
    from mlops_cli import Project

    store = Project.init(tmp_path / "p").store
    reference, production = "drift/gnn/1.0.0/reference", "drift/gnn/1.0.0/production"
    rng = np.random.default_rng(8)
    ref_rows = [line(float(p), 0.5) for p in rng.normal(0, 1, 500)]  # 35 KB: read whole
    win_rows = [line(float(p), 0.7) for p in rng.normal(0.3, 1, 20_000)]
    for stream, rows in ((reference, ref_rows), (production, win_rows)):
        store.path(stream).parent.mkdir(parents=True, exist_ok=True)
        store.path(stream).write_bytes(b"".join(rows))
    allowed = forbid_forks(monkeypatch)
    alone = (store.samples(reference, first=400), store.samples(production, last=15_000))
    allowed[0] = True
    order: list[str] = []
    real_span = files._read_span
    monkeypatch.setattr(
        files, "_read_span", lambda path, *a: order.append(path.stem) or real_span(path, *a)
    )
    real_child = forked.Child

    def noted(work: Any) -> forked.Child:
        order.append("child")
        return real_child(work)

    monkeypatch.setattr(forked, "Child", noted)
    ref, win = store.reference_and_window(reference, 400, production, 15_000)
    assert order == ["child", "reference", "production"]
    for got, want in ((ref, alone[0]), (win, alone[1])):
        assert got.prediction.tobytes() == want.prediction.tobytes()
        assert got.confidence.tobytes() == want.confidence.tobytes()
    assert win.sorted_prediction is not None
    assert win.sorted_prediction.tobytes() == np.sort(alone[1].prediction).tobytes()


def test_a_bad_reference_line_is_named_and_the_windows_child_stopped(
    tmp_path: Path, children: list[forked.Child]
) -> None:
    from mlops_cli import Project

    store = Project.init(tmp_path / "p").store
    reference, production = "drift/gnn/1.0.0/reference", "drift/gnn/1.0.0/production"
    ref_rows = [line(0.1, 0.5)] * 300
    ref_rows[7] = b'{"ts":"x","prediction":"high","confidence":0.5}\n'
    for stream, rows in ((reference, ref_rows), (production, [line(0.2, 0.5)] * 20_000)):
        store.path(stream).parent.mkdir(parents=True, exist_ok=True)
        store.path(stream).write_bytes(b"".join(rows))
    with pytest.raises(StateError, match="line 8 is not a valid sample"):
        store.reference_and_window(reference, 300, production, 20_000)
    assert len(children) == 1 and children[0].pid == 0  # made for the window, and reaped


def test_the_child_takes_more_of_the_window_by_what_is_read_beside_it(
    tmp_path: Path, children: list[forked.Child]
) -> None:
    """This process's share, PARENT_SHARE of the span, falls by the bytes it reads beside
    the child times the child's share, down to the child's own share at the least."""
    log, size = write(tmp_path, [b"%099d\n" % i for i in range(1000)])  # 100-byte lines
    assert files.PARENT_SHARE == 0.56

    def mid(before: int) -> int | None:
        reading = files._WindowRead(log, 0, size, 1 << 40, False, before)
        reading.cancel()
        return reading.mid

    # 0.56 of 100,000; 0.56 - 10,000 * 0.44 / 100,000 = 0.516; at least 0.44
    assert [mid(0), mid(10_000), mid(30_000), mid(10**6)] == [56_000, 51_600, 44_000, 44_000]
    assert [mid(27_000), mid(28_000)] == [44_200, 44_000]  # 0.4412 -> line 443; 0.4368 < 0.44


def test_a_child_that_fails_or_dies_leaves_the_work_to_the_parent() -> None:
    big = bytes(range(256)) * 4096  # more than a pipe holds: the parent reads as it comes
    assert forked.Child(lambda: big).result() == big
    assert forked.Child(lambda: b"").result() == b""

    def fails() -> bytes:
        raise ValueError("no")

    def dies() -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        return b"never"

    assert forked.Child(fails).result() is None
    assert forked.Child(dies).result() is None


def test_no_fork_while_another_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert forked.may_fork()
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert not forked.may_fork()


def test_the_first_lines_end_where_their_count_says(tmp_path: Path) -> None:
    log = tmp_path / "lines"
    log.write_bytes(b"ab\ncd\n\nef")  # three whole lines, then a torn one
    assert [head_span(log, n) for n in (0, 1, 2, 3, 4, 99)] == [0, 3, 6, 7, 7, 7]
    log.write_bytes(b"")
    assert head_span(log, 5) == 0
    assert head_span(tmp_path / "none", 5) == 0
    big = b"".join(b"%d\n" % i for i in range(2_000_000))  # over one 4 MB read
    log.write_bytes(big)
    want = len(b"".join(b"%d\n" % i for i in range(1_500_000)))
    assert head_span(log, 1_500_000) == want and head_span(log, 3_000_000) == len(big)


def test_the_split_falls_at_the_start_of_a_line(tmp_path: Path) -> None:
    log = tmp_path / "lines"
    log.write_bytes(b"ab\ncd\n\nef")
    assert files._line_start(log, 3, 10) == 3  # a newline just before: a line starts here
    assert files._line_start(log, 1, 10) == 3
    assert files._line_start(log, 4, 10) == 6
    assert files._line_start(log, 6, 10) == 6
    assert files._line_start(log, 7, 10) == 7  # an empty line
    assert files._line_start(log, 8, 10) == 10  # no newline after: none before stop
    assert files._line_start(log, 4, 5) == 5


def test_a_feature_check_from_a_window_folded_in_two_processes_gives_the_same_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children: list[forked.Child]
) -> None:
    """Features only in the earlier part, only in the later, missing values, categories and
    numbers mixed: the same figures as one fold in this process."""
    from mlops_cli import ModelVersion, Project

    project = Project.init(tmp_path / "p")
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="/m"))
    detector = project.drift_detector("gnn", "1.0.0")
    rng = np.random.default_rng(9)

    def features(i: int, shift: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "age": round(float(rng.normal(40 + shift, 9)), 1),
            "city": ["a", "b", "c", "new" if shift and i % 10 == 0 else "a"][i % 4],
            "flag": bool(i % 3),
            "mixed": i % 5 if i % 7 else "x",
        }
        if i % 11 == 0:
            out["age"] = None
        return out

    reference = b"".join(
        orjson.dumps(
            {"prediction": 0.5, "confidence": 0.9,
             "features": {**features(i, 0.0), "gone_late": 1.5, "back_late": "on"}}
        )
        + b"\n"
        for i in range(3000)
    )
    detector.add_reference(reference)
    for i in range(6000):
        f = features(i, 2.0)
        if i < 1000:
            f["early_only"] = i
            f["gone_late"] = 1.5  # in the reference too: missing in the later part
        if i >= 5000:
            f["late_only"] = "z"
            f["back_late"] = "on"  # missing in the earlier part
        detector.add_production_sample(float(rng.normal()), 0.9, features=f)
    project.set_setting("drift.window_size", "6000")
    project.set_setting("drift.reference_size", "3000")
    allowed = forbid_forks(monkeypatch)
    alone = dict(project.drift_detector("gnn", "1.0.0").check())
    histograms = project.drift_detector("gnn", "1.0.0").feature_histograms()
    assert not children
    allowed[0] = True
    split = dict(project.drift_detector("gnn", "1.0.0").check())
    assert project.drift_detector("gnn", "1.0.0").feature_histograms() == histograms
    for figures in (alone, split):
        figures.pop("checked_at")
    # the reference's outputs, the window's, its features, the histograms' features
    assert len(children) == 4
    assert split == alone
    assert alone["new_features"] == ["early_only", "late_only"]
    assert {"gone_late", "back_late"} <= set(alone["drifted_features"])  # gone missing


def _window_splits(seed: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A reference profile and a window's features of 4,000 rows: numbers with ties and zeros
    of either sign, a shifted one, categories with a new one, and missing values."""
    from mlops_cli import feature_drift as fd

    rng = np.random.default_rng(seed)

    def rows(n: int, shift: float) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            x = round(float(rng.normal(shift, 1)), 1)
            out.append({
                "a": -0.0 if x == 0 else x,
                "b": float(rng.lognormal()) + shift,
                "c": ["x", "y", "z", "new" if shift and i % 9 == 0 else "x"][i % 4],
                "d": None if shift and i % 4 == 0 else float(rng.normal()),
            })
        return out

    prof = fd.profile(rows(3000, 0.0))
    window = rows(4000, 0.3)
    return prof, {"rows": window}, len(window)


def test_feature_tests_split_across_two_processes_give_the_same_figures(
    monkeypatch: pytest.MonkeyPatch, children: list[forked.Child]
) -> None:
    from mlops_cli import feature_drift as fd

    prof, window, n = _window_splits(11)
    splits, _ = fd.gather([window["rows"]])
    alone = fd.check_gathered(prof, splits, n, 0.001, 100)
    assert not children  # below TESTS_BESIDE_VALUES: one process
    assert fd.check_gathered(prof, splits, n, 0.001, 100, beside=True) == alone
    assert not children
    monkeypatch.setattr(fd, "TESTS_BESIDE_VALUES", 1)
    split = fd.check_gathered(prof, splits, n, 0.001, 100, beside=True)
    assert len(children) == 1 and children[0].pid == 0  # made, and reaped
    assert split == alone and list(split["features"]) == list(alone["features"])
    assert alone["drifted"]  # figures worth comparing: some features drifted

    class Fails(forked.Child):  # a child whose result never arrives
        def result(self) -> bytes | None:
            super().result()
            return None

    monkeypatch.setattr(forked, "Child", Fails)
    assert fd.check_gathered(prof, splits, n, 0.001, 100, beside=True) == alone


def test_feature_tests_go_beside_from_exactly_the_threshold(
    monkeypatch: pytest.MonkeyPatch, children: list[forked.Child]
) -> None:
    from mlops_cli import feature_drift as fd

    prof, window, n = _window_splits(12)
    splits, _ = fd.gather([window["rows"]])
    work = sum(fd._work(splits.get(name)) for name in prof["features"])
    monkeypatch.setattr(fd, "TESTS_BESIDE_VALUES", work + 1)
    fd.check_gathered(prof, splits, n, 0.001, 100, beside=True)
    assert not children  # one value short of it: one process
    monkeypatch.setattr(fd, "TESTS_BESIDE_VALUES", work)
    fd.check_gathered(prof, splits, n, 0.001, 100, beside=True)
    assert len(children) == 1


def test_parts_sorted_where_read_and_merged_give_the_figures_of_one_unsorted_read() -> None:
    from mlops_cli import feature_drift as fd

    prof, window, n = _window_splits(12)
    rows = window["rows"]
    plain, _ = fd.gather([rows])
    first, later = fd.gather_ordered([rows[:1700]]), fd.gather_ordered([rows[1700:]])
    merged, got_n = fd.join_gathered(first, later)
    assert got_n == n
    for name, split in merged.items():
        assert split.ordered
        assert split.numbers.tolist() == sorted(plain[name].numbers.tolist())
        assert split.missing == plain[name].missing and split.others == plain[name].others
    one, _ = fd.gather([rows])
    assert not one["a"].ordered
    assert fd.check_gathered(prof, merged, n, 0.001, 100) == fd.check_gathered(
        prof, one, n, 0.001, 100
    )
    # one part sorted and one not: joined, then sorted by the check
    mixed, _ = fd.join_gathered(fd.gather_ordered([rows[:1700]]), fd.gather([rows[1700:]]))
    assert not mixed["b"].ordered
    assert fd.check_gathered(prof, mixed, n, 0.001, 100) == fd.check_gathered(
        prof, one, n, 0.001, 100
    )
