"""Nothing in a run directory is written through a symlink, and ``--overwrite`` replaces an old run
only once the new one has saved a checkpoint: a refused, failed or stopped overwrite leaves the old
run whole."""
import os

import pytest
from cli_helpers import invoke
from test_run_ownership import TINY, files, one_red_line, train, write

from charlm.runs import directory as rundir

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.parametrize("command", [["train"], ["classify", "train"]])
def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path, command):
    run, victim = tmp_path / "r", tmp_path / "victim"
    run.mkdir()
    victim.write_text("precious\n")
    os.symlink(victim, run / ".charlm.lock")
    data = write(tmp_path / "data.tsv", "".join(f"w{i}\t{'ab'[i % 2]}\n" for i in range(40))) if command != ["train"] \
        else write(tmp_path / "ok.txt")
    line = one_red_line(invoke(*command, data, *(TINY if command == ["train"] else ["--hidden", 4]), "--steps", 2,
                               "--run-dir", run))
    assert "symbolic link" in line and ".charlm.lock" in line
    assert victim.read_text() == "precious\n"


def test_a_resume_never_appends_through_a_linked_metrics_log(tmp_path):
    run, victim = tmp_path / "run", tmp_path / "victim"
    corpus = write(tmp_path / "ok.txt")
    train(run, corpus, steps=2)
    victim.write_text("precious\n")
    (run / "metrics.jsonl").unlink()
    os.symlink(victim, run / "metrics.jsonl")
    result = invoke("train", "--resume", run, "--steps", 4, "--threads", 1)
    assert "Traceback" not in result.output
    assert victim.read_text() == "precious\n"
    # refused in one line, or the link replaced by the run's own log (a resume rewrites it whole)
    assert ("symbolic link" in result.stderr) if result.exit_code else not (run / "metrics.jsonl").is_symlink()


def test_a_refused_overwrite_leaves_the_old_run_whole(tmp_path):
    run = tmp_path / "run"
    train(run, write(tmp_path / "ok.txt"), steps=2)
    (run / ".charlm.lock").unlink()        # compare the run's own files only
    before = files(run)
    write(tmp_path / "empty.txt", "")
    one_red_line(invoke("train", tmp_path / "empty.txt", *TINY, "--steps", 2, "--run-dir", run, "--overwrite"))
    after = files(run)
    after.pop(".charlm.lock", None)
    assert after == before


def test_an_overwrite_killed_before_its_first_checkpoint_is_undone_by_the_next_claim(tmp_path):
    """What a SIGKILL leaves: the old run set aside, the new run's first records, no new checkpoint."""
    run = tmp_path / "run"
    train(run, write(tmp_path / "ok.txt"), steps=2)
    (run / ".charlm.lock").unlink()
    before = files(run)
    aside = run / rundir.ASIDE_DIR
    aside.mkdir()
    for name in before:
        os.rename(run / name, aside / name)
    (run / "metrics.jsonl").write_text('{"kind": "step", "step": 1, "loss": 3.0}\n')   # the new run's
    rundir.claim_run(run).release()
    after = files(run)
    after.pop(".charlm.lock", None)
    assert after == before and not aside.exists()


def test_an_overwrite_that_saved_a_checkpoint_drops_the_old_run(tmp_path):
    run = tmp_path / "run"
    corpus = write(tmp_path / "ok.txt")
    train(run, corpus, steps=2)
    train(run, corpus, "--overwrite", steps=3)
    assert not (run / rundir.ASIDE_DIR).exists()
    from charlm.lm import checkpoint as ckpt

    assert [r["step"] for r in ckpt.read_metrics(run) if r["kind"] == "step"] == [1, 2, 3]
