"""charlm bench's comparison with a PyTorch script of the user's: every way it can be missing or
broken is one line and a non-zero exit, before anything is measured."""
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.bench import compare as C
from charlm.bench import speed as B
from charlm.cli import main
from charlm.errors import CharlmError

TINY = B.BenchConfig(cell="rnn", layers=1, hidden=4, batch=2, seq_len=4, vocab=5, threads=1, warmup=0,
                     steps=1, sample_chars=10, sample_reps=1)


def one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_a_missing_baseline_script_is_named(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--torch-baseline", str(tmp_path / "none.py")])
    assert result.exit_code == 2
    assert "none.py" in one_line_error(result)


@pytest.mark.parametrize("python, message", [(sys.executable + "-missing", "cannot run"),
                                             ("/bin/false", "pip install torch")])
def test_a_python_without_torch_is_refused_before_measuring(tmp_path, python, message):
    script = tmp_path / "baseline.py"
    script.write_text("print('{}')\n")
    result = CliRunner().invoke(main, ["bench", "-c", "a", "--torch-baseline", str(script), "--torch-python", python])
    assert result.exit_code == 1
    assert message in one_line_error(result)
    assert result.stdout == ""          # nothing was measured


def test_a_failing_baseline_is_the_users_error_not_a_bug(tmp_path):
    script = tmp_path / "baseline.py"
    script.write_text("import sys\nsys.stderr.write('no \\x1b[31mGPU\\n')\nsys.exit(3)\n")
    with pytest.raises(CharlmError, match=r"exit 3\): no \?\[31mGPU"):  # escape byte shown as '?'
        C.run_torch_baseline(TINY, script)
    script.write_text("print('not json')\n")
    with pytest.raises(CharlmError, match="printed no JSON line: not json"):
        C.run_torch_baseline(TINY, script)


def test_the_product_speaks_of_itself_only():
    """No path outside the repository, issue number or missing design document in the package."""
    root = Path(B.__file__).resolve().parent
    pattern = re.compile(r"\.\./shared|[Ii]ssue #?\d|DESIGN\.md")
    found = [f"{path.relative_to(root)}:{n}" for path in sorted(root.rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []
