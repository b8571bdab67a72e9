"""training.budget_minutes: a run ends on time, with a learning rate decayed over the time it had."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, tiny_overrides
from nlpssl.recipe import load_recipe
from nlpssl.training import schedule_factor

ROOT = Path(__file__).resolve().parent.parent


def test_schedule_shapes_match_their_names():
    assert schedule_factor("linear", 0.0, 0.1) == 0.0
    assert schedule_factor("linear", 0.05, 0.1) == pytest.approx(0.5)
    assert schedule_factor("linear", 0.1, 0.1) == pytest.approx(1.0)
    assert schedule_factor("linear", 0.55, 0.1) == pytest.approx(0.5)
    assert schedule_factor("linear", 1.0, 0.1) == 0.0
    assert schedule_factor("cosine", 0.55, 0.1) == pytest.approx(0.5)
    assert schedule_factor("cosine", 1.0, 0.1) == pytest.approx(0.0)
    assert schedule_factor("constant_with_warmup", 0.9, 0.1) == 1.0
    assert schedule_factor("linear", 0.3, 0.0) == pytest.approx(0.7)


def test_schedule_that_cannot_follow_time_is_refused():
    from nlpssl.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"budget_minutes needs a schedule that can follow elapsed time \(got "
                                          r"lr_scheduler_type='polynomial'\)"):
        load_recipe("bert-tiny", ["training.budget_minutes=1", "training.lr_scheduler_type=polynomial"])


def _train_rows(run: Path) -> list[dict]:
    history = json.loads((run / "log_history.json").read_text())
    return [h for h in history if "learning_rate" in h]


def test_budget_ends_the_run_on_time_with_a_decayed_rate(tmp_path):
    from nlpssl.pretrain import pretrain

    # 10 s: enough steps to see warm-up and decay even when another job halves this machine's speed
    # (under CI load 4 s once gave fewer than 10 steps).
    budget_s = 10.0
    over = tiny_overrides(tmp_path, **{"training.budget_minutes": budget_s / 60, "training.max_steps": 100000,
                                       "training.warmup_steps": 0.1, "training.logging_steps": 1,
                                       "training.save_steps": 20, "training.eval_steps": 1000})
    result = pretrain(load_recipe("bert-tiny", over))
    m = result.metrics
    assert 5 <= m["steps"] < 100000, m
    rows = _train_rows(result.output_dir)
    assert [r["step"] for r in rows] == list(range(1, m["steps"] + 1))
    peak = 3e-3  # tiny_overrides' learning rate
    progress = [r["budget/progress"] for r in rows]
    # on time: it stopped at the first step to end past the budget (however long a loaded machine
    # took over that step), and that is the time it reports
    assert progress == sorted(progress) and progress[-2] < 1.0 <= progress[-1], progress[-3:]
    assert m["budget_used_minutes"] * 60 == pytest.approx(progress[-1] * budget_s, abs=0.1), m
    assert budget_s <= m["train_runtime_s"] < m["budget_used_minutes"] * 60 + 4.0, m  # + start-up
    # A row logs the rate its step trained with, which the scheduler set after the step before it,
    # from the budget used by the end of the step before that: warm-up over the first 10% of the
    # budget, then the recipe's linear decay, not a decay over the 100,000-step cap. Timing-free:
    # a step that a loaded machine stalls for seconds (CI once saw ~2 s at the end of a 10 s budget,
    # and the last rate was 20% of the peak) shifts the progress, and the rates still follow it.
    assert rows[0]["learning_rate"] == 0.0  # warm-up starts from 0
    for before, row in zip(rows, rows[2:]):
        expected = peak * schedule_factor("linear", before["budget/progress"], 0.1)
        assert row["learning_rate"] == pytest.approx(expected, rel=1e-3, abs=1e-7), (before, row)
    rates = [r["learning_rate"] for r in rows]
    assert max(rates) > 0.5 * peak, "warm-up reached the peak rate"
    state = json.loads(sorted((result.output_dir).glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    saved = state["stateful_callbacks"]["TimeBudget"]["args"]
    # the step that crosses the budget may be the one that saves: up to a step past it
    assert saved["minutes"] == pytest.approx(budget_s / 60) and 0 < saved["used_s"] < budget_s + 3.0


def test_a_resumed_run_continues_the_same_budget(tmp_path):
    budget_s = 16.0
    over = tiny_overrides(tmp_path, **{"training.budget_minutes": budget_s / 60, "training.max_steps": 100000,
                                       "training.save_steps": 100, "training.eval_steps": 1000,
                                       "training.logging_steps": 1})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"  # a file, not a pipe: a log row per step would fill a pipe nobody reads
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nlpssl", "pretrain", "bert-tiny", *over], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)

    def used_in_checkpoints() -> float:
        best = 0.0
        for state in (tmp_path / "run").glob("checkpoint-*/trainer_state.json"):
            try:
                best = max(best, json.loads(state.read_text())["stateful_callbacks"]["TimeBudget"]["args"]["used_s"])
            except (OSError, ValueError, KeyError):
                pass  # being written
        return best

    deadline = time.time() + 120
    while used_in_checkpoints() < 4.0:  # enough used that a budget restarted from 0 would be caught
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    newest = sorted((tmp_path / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    used = json.loads((newest / "trainer_state.json").read_text())["stateful_callbacks"]["TimeBudget"]["args"]["used_s"]
    assert 4.0 <= used < budget_s, used
    resumed = subprocess.run([sys.executable, "-m", "nlpssl", "pretrain", "bert-tiny", *over, "training.resume=true"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # The resumed process trained for what was left of the budget, not for a whole new one: its
    # clock went on from the checkpoint's time, and it stopped at the first step past the budget.
    after = [r for r in _train_rows(tmp_path / "run") if r["step"] > int(newest.name.split("-")[1])]
    progress = [r["budget/progress"] for r in after]
    assert progress[0] > used / budget_s and progress == sorted(progress), (used, progress[:3])
    assert (len(progress) < 2 or progress[-2] < 1.0) and progress[-1] >= 1.0, progress[-3:]
    assert budget_s <= m["budget_used_minutes"] * 60, m
    assert m["train_runtime_s"] > budget_s - used - 1.0, (m, used)


def test_two_processes_stop_at_the_same_step(tmp_path):
    """Rank 0's clock is shared: a rank that stopped alone would leave the other hanging in DDP."""
    over = tiny_overrides(tmp_path, **{"training.budget_minutes": 0.08, "training.max_steps": 100000,
                                       "training.save_steps": 1000, "training.eval_steps": 1000})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), "-m", "nlpssl", "pretrain", "bert-tiny", *over],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["world_size"] == 2 and 1 < m["steps"] < 100000 and m["budget_used_minutes"] >= 0.08
    assert m["train_tokens"] == m["steps"] * 8 * 2 * 32
