"""Batches stream in bounded memory, stay all or nothing, and count once per batch id; data
from stdin without --batch-id is never taken for a retry; the reference set is a batch too."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import ConflictError, ValidationError, batch, jsonl
from mlops_cli.records import validate_request

from ..conftest import snapshot
from .helpers import (
    MLOPS,
    ab_project,
    kill_at,
    mlops,
    requests_jsonl,
    samples_jsonl,
    whole_lines,
)

SAMPLE = b'{"prediction":0.5,"confidence":0.9}\n'


class Pipe(io.RawIOBase):
    """Data read once, as from stdin: not seekable, so validated while appended."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self.data), 1 << 16)
        buffer[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def pipe(data: bytes) -> io.BufferedReader:
    return io.BufferedReader(Pipe(data))


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 64 KB, so a batch of a few MB spans many of them."""
    monkeypatch.setattr(batch, "CHUNK_BYTES", 64 << 10, raising=False)
    return 64 << 10


def test_a_streamed_batch_peaks_at_a_few_chunks_whatever_its_size(
    tmp_path: Path, small_chunks: int
) -> None:
    project = ab_project(tmp_path / "p")
    peaks = []
    for n in (20_000, 80_000):  # ~1.6 MB and ~6.4 MB: 25 and 100 chunks
        source = tmp_path / f"b{n}.jsonl"
        source.write_bytes(requests_jsonl(n, seed=n))
        with open(source, "rb") as f:
            tracemalloc.start()
            result = project.ab.record_batch("t", f, batch_id=f"b{n}")
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        assert result.recorded == n
    assert len(whole_lines(project.ab_log("t"))) == 100_000
    assert peaks[1] < 12 * small_chunks + (1 << 20), peaks  # not the batch's 6.4 MB
    assert peaks[1] < peaks[0] * 1.5, peaks


def test_a_bad_line_late_in_a_stream_cuts_the_log_back(tmp_path: Path, small_chunks: int) -> None:
    project = ab_project(tmp_path / "p")
    project.ab.record_batch("t", requests_jsonl(100, seed=1))
    log = project.ab_log("t")
    before = log.read_bytes()
    lines = requests_jsonl(30_000, seed=2).splitlines(keepends=True)
    bad = [20_000 + 100 * i for i in range(25)]  # all after many chunks were appended
    for number in bad:
        lines[number - 1] = b'{"variant": "control", "inference_time_ms": -1, "confidence": 1}\n'
    data = b"".join(lines)
    with pytest.raises(ValidationError) as err:
        project.ab.record_batch("t", pipe(data))
    message = str(err.value)
    assert message.startswith("25 bad line(s), nothing recorded: line 20000: ")
    assert "line 20900" in message and "line 21000" not in message
    assert message.endswith("(and 15 more)")
    assert log.read_bytes() == before  # every chunk appended before the bad line is gone
    assert project.ab.evaluate_test("t").requests == 100
    with pytest.raises(ValidationError, match=r"^25 bad line"):  # read twice: fails before
        project.ab.record_batch("t", io.BytesIO(data))
    assert log.read_bytes() == before


@pytest.mark.parametrize("batch_id", [None, "nightly-7"])
def test_a_failed_stream_into_a_new_log_leaves_no_file_behind(
    tmp_path: Path, small_chunks: int, batch_id: str | None
) -> None:
    """The first chunks were good and written, a late one was bad: the log this batch
    created, and the journal entry of its attempt, go again (nothing changed on disk)."""
    project = ab_project(tmp_path / "p")
    before = snapshot(project.root)
    lines = requests_jsonl(5_000, seed=3).splitlines(keepends=True)
    lines[4_000] = b"not json\n"  # after several 64 KB chunks
    with pytest.raises(ValidationError, match=r"^1 bad line"):
        project.ab.record_batch("t", pipe(b"".join(lines)), batch_id=batch_id)
    assert snapshot(project.root) == before
    project.ab.record_batch("t", requests_jsonl(10, seed=4), batch_id=batch_id)
    assert project.ab.evaluate_test("t").requests == 10


def test_a_file_is_validated_without_holding_the_log_lock(
    tmp_path: Path, small_chunks: int
) -> None:
    """A batch that can be read twice is validated first, then written under the lock: other
    writers of the log wait only for the writing."""
    project = ab_project(tmp_path / "p")
    log = project.ab_log("t")
    project.ab.record_result("t", "control", 1.0, 0.5)
    calls = []

    def validate(doc: Any, where: str) -> Any:
        calls.append(1)
        if len(calls) == 15_000:  # in a later chunk
            with jsonl.locked_log(log, 0.2):  # free: a LockTimeoutError otherwise
                pass
        return validate_request(doc, where)

    source = tmp_path / "b.jsonl"
    source.write_bytes(requests_jsonl(20_000, seed=1))
    with open(source, "rb") as f:
        result = project.store.append_batch("ab/t", f, validate, "b1")
    assert result.recorded == 20_000 and len(calls) == 20_000
    assert len(whole_lines(log)) == 20_001


def test_a_file_changed_between_validating_and_writing_records_nothing(
    tmp_path: Path, small_chunks: int
) -> None:
    project = ab_project(tmp_path / "p")
    project.ab.record_result("t", "control", 1.0, 0.5)
    log = project.ab_log("t")
    before = log.read_bytes()
    good = requests_jsonl(5_000, seed=1)

    class Changing(io.BytesIO):
        def seek(self, offset: int, whence: int = 0) -> int:
            self.getbuffer()[-3:-1] = b"0}"  # rewritten under us (still one line a record)
            return super().seek(offset, whence)

    with pytest.raises(ValidationError, match="changed while it was recorded"):
        project.ab.record_batch("t", Changing(good), batch_id="c1")
    assert log.read_bytes() == before


def test_a_stream_killed_mid_way_is_completed_once_by_the_retry(
    tmp_path: Path, small_chunks: int
) -> None:
    project = ab_project(tmp_path / "p")
    data = requests_jsonl(20_000, seed=5)
    log = project.ab_log("t")
    project.ab.record_batch("t", pipe(data), batch_id="job-7")
    kill_at(log, log.stat().st_size * 3 // 5)  # the kill: 60% written over many chunks
    project.ab.record_result("t", "control", 1.0, 0.5)  # another writer meanwhile
    retry = project.ab.record_batch("t", pipe(data), batch_id="job-7")
    assert retry.recorded > 0 and retry.recorded + retry.already_recorded == 20_000
    assert len(whole_lines(log)) == 20_001
    again = project.ab.record_batch("t", io.BytesIO(data), batch_id="job-7")
    assert (again.recorded, again.already_recorded) == (0, 20_000)


def test_a_retry_that_differs_in_the_recorded_part_is_refused(
    tmp_path: Path, small_chunks: int
) -> None:
    """A retry must start with exactly the lines its batch id recorded: a kill part way, then
    a "retry" that changed one of them is refused naming both hashes, and records nothing."""
    project = ab_project(tmp_path / "p")
    data = requests_jsonl(20_000, seed=5)
    log = project.ab_log("t")
    project.ab.record_batch("t", pipe(data), batch_id="job-8")
    held = kill_at(log, log.stat().st_size * 3 // 5)
    journaled = [r for r in whole_lines(jsonl.journal_path(log)) if "sha256" in r]
    recorded = int(journaled[-1]["lines"])  # type: ignore[call-overload]
    assert 0 < recorded <= held < 20_000  # a chunk written past the last entry is possible
    lines = data.splitlines(keepends=True)
    lines[recorded // 2] = requests_jsonl(1, seed=99)
    torn = log.read_bytes()
    before = snapshot(project.root)
    before["logs/ab/t.jsonl"] = torn[: torn.rfind(b"\n") + 1]  # a writer cuts a torn tail
    with pytest.raises(ConflictError, match=rf"job-8 holds other content: .* {recorded} line"):
        project.ab.record_batch("t", pipe(b"".join(lines)), batch_id="job-8")
    assert snapshot(project.root) == before
    # The same lines up to the recorded part, then others: the retry is the batch's rest.
    tail = requests_jsonl(20_000 - held, seed=6)
    retry = project.ab.record_batch(
        "t", pipe(b"".join(data.splitlines(keepends=True)[:held]) + tail), batch_id="job-8"
    )
    assert (retry.recorded, retry.already_recorded) == (20_000 - held, held)


def test_a_complete_batch_id_with_other_content_records_none_of_it(tmp_path: Path) -> None:
    """`--batch-id B2` with lines 1,2,3 and then with 1,4,5: the second is refused whole
    (not "1 already recorded, 2 added"); the same lines again are "already recorded"."""
    project = ab_project(tmp_path / "p")
    rows = requests_jsonl(5, seed=3).splitlines(keepends=True)
    args = ("ab", "record", "t", "--file", "-", "--batch-id", "B2")
    first = mlops(project.root, *args, input=b"".join(rows[:3]))
    assert first.returncode == 0, first.stderr
    before = snapshot(project.root)
    for other in ([0, 3, 4], [0, 1], [0, 1, 2, 3], [1, 0, 2]):
        run = mlops(project.root, *args, input=b"".join(rows[i] for i in other), check=False)
        assert run.returncode == 1, run.stderr
        lines = run.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: batch id B2 holds other content")
        assert f"this batch has {len(other)} line(s)" in lines[0], lines[0]
        assert snapshot(project.root) == before
    same = mlops(project.root, *args, input=b"".join(rows[:3]))
    assert b"already recorded: batch id B2 (3 records)" in same.stderr
    assert snapshot(project.root) == before


def test_a_stream_stopped_by_sigterm_records_nothing(tmp_path: Path) -> None:
    """A CI job cancelled mid-batch (SIGTERM, as runners send it) cuts back what the batch
    had written, like a bad line does: stdin without --batch-id has no retry to complete it."""
    project = ab_project(tmp_path / "p")
    project.ab.record_batch("t", requests_jsonl(100, seed=1))
    log = project.ab_log("t")
    before = snapshot(project.root)
    proc = subprocess.Popen(
        [MLOPS, "-C", str(project.root), "ab", "record", "t", "--file", "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(requests_jsonl(60_000, seed=2))  # > 2 chunks: some written, stdin open
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while log.stat().st_size == len(before["logs/ab/t.jsonl"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.stat().st_size > len(before["logs/ab/t.jsonl"])  # lines of the batch written
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    proc.stdin.close()
    assert proc.stderr is not None and proc.stderr.read() == b"error: terminated\n"
    assert snapshot(project.root) == before


def test_stdin_without_a_batch_id_is_never_taken_for_a_retry(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    log = project.drift_log("gnn", "1.0.0", "production")
    for _ in range(2):  # a pipeline streaming one sample per call, the same value twice
        run = mlops(project.root, "drift", "record", "gnn", "1.0.0", "--file", "-", input=SAMPLE)
        assert b"already" not in run.stderr
    assert len(whole_lines(log)) == 2
    ab = requests_jsonl(3, seed=1)
    for _ in range(2):
        mlops(project.root, "ab", "record", "t", "--file", "-", input=ab)
    assert len(whole_lines(project.ab_log("t"))) == 6


def test_a_skipped_batch_is_said_on_stderr(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    source = tmp_path / "s.jsonl"
    source.write_bytes(samples_jsonl(50, seed=1))
    args = ("drift", "record", "gnn", "1.0.0", "--file", str(source))
    mlops(project.root, *args)
    again = mlops(project.root, *args, "--json")  # a retried step re-sends the same file
    assert b"already recorded" in again.stderr and b"batch id" in again.stderr
    assert len(whole_lines(project.drift_log("gnn", "1.0.0", "production"))) == 50
    by_id = ("ab", "record", "t", "--file", "-", "--batch-id", "step-3")
    mlops(project.root, *by_id, input=requests_jsonl(5, seed=2))
    skipped = mlops(project.root, *by_id, input=requests_jsonl(5, seed=2))
    assert b"already recorded: batch id step-3 (5 records)" in skipped.stderr
    assert len(whole_lines(project.ab_log("t"))) == 5


def test_the_reference_set_counts_once_per_file_and_batch_id(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    source = tmp_path / "ref.jsonl"
    source.write_bytes(samples_jsonl(300, seed=1))
    ref = project.drift_log("gnn", "1.0.0", "reference")
    args = ("drift", "reference", "gnn", "1.0.0", "--file", str(source))
    mlops(project.root, *args)
    again = mlops(project.root, *args)
    assert b"already recorded" in again.stderr
    assert len(whole_lines(ref)) == 300
    mlops(project.root, "drift", "reference", "gnn", "1.0.0", "--file", "-", input=SAMPLE)
    mlops(project.root, "drift", "reference", "gnn", "1.0.0", "--file", "-", input=SAMPLE)
    assert len(whole_lines(ref)) == 302  # stdin: never a retry


def test_the_reference_set_is_all_or_nothing_and_its_cap_streams(
    tmp_path: Path, small_chunks: int
) -> None:
    project = ab_project(tmp_path / "p")
    project.set_setting("drift.reference_size", "30000")
    detector = project.drift_detector("gnn", "1.0.0")
    detector.set_reference(samples_jsonl(100, seed=1))
    ref = project.drift_log("gnn", "1.0.0", "reference")
    before = ref.read_bytes()
    lines = samples_jsonl(20_000, seed=2).splitlines(keepends=True)
    lines[19_000] = b'{"prediction": 1}\n'
    with pytest.raises(ValidationError, match=r"1 bad line.*line 19001"):
        detector.set_reference(pipe(b"".join(lines)))
    assert ref.read_bytes() == before
    with pytest.raises(ValidationError, match=r"holds 100 of 30000 samples.*adding 40000"):
        detector.set_reference(pipe(samples_jsonl(40_000, seed=3)))
    assert ref.read_bytes() == before
    with pytest.raises(ValidationError, match="holds 40000 samples, more than"):
        detector.set_reference(io.BytesIO(samples_jsonl(40_000, seed=3)), replace=True)
    assert ref.read_bytes() == before
    assert detector.set_reference(io.BytesIO(samples_jsonl(25_000, seed=4)), replace=True)
    assert len(whole_lines(ref)) == 25_000


def test_a_reference_killed_half_way_is_completed_once_by_the_rerun(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    n = 400_000
    project.set_setting("drift.reference_size", str(n))
    source = tmp_path / "ref.jsonl"
    source.write_bytes(samples_jsonl(n, seed=9))
    ref = project.drift_log("gnn", "1.0.0", "reference")
    cmd = [MLOPS, "-C", str(project.root), "drift", "reference", "gnn", "1.0.0"]
    proc = subprocess.Popen([*cmd, "--file", str(source)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while proc.poll() is None and (not ref.exists() or ref.stat().st_size < 4 << 20):
        assert time.monotonic() < deadline
        time.sleep(0.002)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if killed:
        assert 0 < len(whole_lines(ref)) < n
    rerun = subprocess.run([*cmd, "--file", str(source)], capture_output=True)
    assert rerun.returncode == 0, rerun.stderr
    assert len(whole_lines(ref)) == n and ref.read_bytes().endswith(b"\n")
    third = subprocess.run([*cmd, "--file", str(source)], capture_output=True)
    assert third.returncode == 0 and b"already recorded" in third.stderr
    assert len(whole_lines(ref)) == n
    assert os.path.getsize(ref) == len(ref.read_bytes())
