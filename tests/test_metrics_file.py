"""The metrics log is read only when it is a regular file of the run: a planted link or pipe is never followed."""
import os

from charlm.runs.metrics import METRICS_FILE, append_metrics, read_metrics_checked


def test_a_link_to_an_endless_device_is_reported_not_read(tmp_path):
    os.symlink("/dev/zero", tmp_path / METRICS_FILE)
    records, problems = read_metrics_checked(tmp_path)
    assert records == [] and len(problems) == 1
    assert "symbolic link" in problems[0].describe(tmp_path / METRICS_FILE)


def test_a_pipe_is_reported_not_read(tmp_path):
    os.mkfifo(tmp_path / METRICS_FILE)   # nobody writes: reading it would block forever
    records, problems = read_metrics_checked(tmp_path)
    assert records == [] and "not a regular file" in problems[0].reason


def test_a_regular_log_reads_as_before(tmp_path):
    append_metrics(tmp_path, {"kind": "step", "step": 1, "loss": 2.0})
    assert read_metrics_checked(tmp_path) == ([{"kind": "step", "step": 1, "loss": 2.0}], [])
