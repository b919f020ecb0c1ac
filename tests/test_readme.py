"""The README's usage example runs as written and its model learns."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs_and_loss_falls(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- readme-example:start -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README lost its example block"
    script = tmp_path / "example.py"
    script.write_text(block.group(1), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(v) for v in re.findall(r"step \d+ loss: ([0-9.]+)", result.stdout)]
    assert len(losses) == 5, result.stdout
    assert losses[-1] < 0.5 * losses[0], losses
