"""The agent's own CPU and memory figures, read from /proc: checked against psutil on this
machine's real /proc, and against a fixture tree for the board's CPU share."""

from __future__ import annotations

import os
import time

import psutil

from edgefleet.agent.procstat import ProcStat


def test_process_cpu_and_rss_agree_with_psutil():
    stat = ProcStat()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # a busy core for 0.3 s of CPU time
        pass
    process, board = stat.sample()
    assert process is not None and 50.0 < process <= 110.0
    assert board is not None and 0.0 < board <= 100.0
    ours, theirs = stat.rss_bytes(), psutil.Process().memory_info().rss
    assert ours is not None and abs(ours - theirs) < 0.05 * theirs


def test_board_cpu_from_a_proc_tree(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "statm").write_text("1000 250 100 1 0 200 0\n")
    stat_file = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat_file.write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n")
    stat = ProcStat(tmp_path)
    stat_file.write_text("cpu  160 0 70 880 90 0 0 0 0 0\n")  # +80 busy of +200 ticks
    _, board = stat.sample()
    assert board == 40.0
    assert stat.rss_bytes() == 250 * os.sysconf("SC_PAGE_SIZE")
    stat_file.write_text("not the stat file\n")
    assert stat.sample()[1] is None  # an unreadable /proc/stat is no figure, not a crash
    (tmp_path / "self" / "statm").unlink()
    assert stat.rss_bytes() is None
