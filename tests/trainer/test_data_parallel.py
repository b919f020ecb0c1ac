"""A follower FLModel as a 2-worker msrun job equals the single-process follower."""
import json
import subprocess

from tests.msrun_job import REPO, logs, start_msrun, stop


def test_two_msrun_workers_equal_the_single_process_follower(tmp_path):
    proc = start_msrun(str(REPO / "tests" / "trainer" / "dp_worker.py"), [str(tmp_path)], tmp_path / "logs",
                       tmp_path / "msrun.out")
    try:
        rc = proc.wait(300)
    except subprocess.TimeoutExpired:
        rc = "timeout"
    finally:
        stop(proc)
    # 0 = every worker and the scheduler exited cleanly
    assert rc == 0, (tmp_path / "msrun.out").read_text()[-3000:] + logs(tmp_path / "logs")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["size"] == 2
    for mode in ("graph", "pynative"):
        diffs = result[mode]
        # slices summed over ranks vs one full-batch reduction: equal up to float summation order
        assert diffs["hf"] <= 1e-6 and diffs["dxf"] <= 1e-6, (mode, diffs)
        assert diffs["weights"] <= 1e-5, (mode, diffs)
    scheduler = (tmp_path / "logs" / "scheduler.log").read_text(errors="replace")
    # (its "Topology build timed out, retry" lines at startup are normal)
    assert " is timed out" not in scheduler and "abnormal" not in scheduler, scheduler[-2000:]
