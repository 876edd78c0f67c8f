"""The JSON of the demo's and the README tour's commands, as recorded before the storage seam.

Recorded by `python tests/golden/capture.py`; later changes that alter an output on purpose
record it again and say so in their commit.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.golden.capture import GOLDEN, capture


def test_command_outputs_match_the_recording(tmp_path: Path) -> None:
    expected = json.loads(GOLDEN.read_text())
    actual = json.loads(json.dumps(capture(tmp_path), sort_keys=True))
    for part in ("demo", "tour"):
        for command, want in expected[part].items():
            assert actual[part][command] == want, f"{part}: mlops {command}"
