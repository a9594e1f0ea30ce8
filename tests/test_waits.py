"""The shared waits (tests/conftest.py): a wait that gives up fails the test with its reason, and a
wait goes on as long as the work makes progress, however long that takes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest


def test_a_process_that_ends_first_fails_with_its_exit_and_stderr(waits, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('the run file is damaged')"],
                            stderr=subprocess.PIPE)
    with pytest.raises(pytest.fail.Exception, match=r"(?s)3 committed checkpoints.*ended first.*exit code 1.*"
                                                     r"the run file is damaged"):
        waits.checkpoints(proc, tmp_path / "run", 3)


def test_no_progress_fails_after_the_stall_and_stops_the_process(waits):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="no progress for 0 s"):
        waits.until(lambda: False, "something that never comes", progress=lambda: 0, proc=proc, stall=0.3)
    assert time.monotonic() - t0 < 60 and proc.poll() is not None  # given up, and the process stopped


def test_progress_keeps_a_wait_going_past_the_stall(waits):
    """The clock restarts whenever progress changes: a wait five times longer than ``stall`` succeeds."""
    ticks = []

    def tick() -> int:
        ticks.append(1)
        return len(ticks)

    start = time.monotonic()
    assert waits.until(lambda: time.monotonic() - start > 1.0, "a second of steady progress", progress=tick,
                       stall=0.2, poll=0.02)


def test_run_to_end_returns_the_output_of_a_finished_command(waits, tmp_path):
    res = waits.run_to_end([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
                           tmp_path)
    assert res.returncode == 0 and res.stdout == "out\n" and res.stderr == "err\n"

