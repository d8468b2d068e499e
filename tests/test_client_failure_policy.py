"""federation.max_client_failure_rate: above it the run fails naming clients and reasons."""

from zk0cli.analysis.load import load_run
from zk0cli.core.config import load_config
from zk0cli.core.rundir import RunDir, read_json, write_json
from zk0cli.engine.runs import apply_client_failure_policy


def _run(tmp_path, failures_by_round, rate=None):
    sets = [f"federation.max_client_failure_rate={rate}"] if rate is not None else []
    cfg = load_config(preset="tiny", overrides=sets, flags={"federation.rounds": 4})
    rd = RunDir.create(tmp_path, name="run")
    rd.update_run(status="completed")
    for r in range(1, 5):
        write_json(rd.server_eval(r), {"round": r, "failures": [
            {"client_id": c, "node_id": 7, "reason": why} for c, why in
            failures_by_round.get(r, [])]})
    return cfg, rd


def test_a_client_failing_in_most_rounds_fails_the_run(tmp_path):
    cfg, rd = _run(tmp_path, {r: [("1", "ActorDiedError: worker died")] for r in (1, 2, 3)}
                   | {2: [("1", "ActorDiedError: worker died"), ("0", "non-finite")]})
    assert apply_client_failure_policy(rd, cfg, "completed") == "failed"
    run = read_json(rd.run_json)
    assert run["status"] == "failed"
    assert "client 1 failed in 3 of 4 round(s) (75%)" in run["error"]
    assert "ActorDiedError" in run["error"] and "client 0" not in run["error"]  # 25 %: below
    assert len(run["client_failures"]) == 2


def test_below_the_limit_the_failures_are_recorded_and_the_run_completes(tmp_path):
    cfg, rd = _run(tmp_path, {2: [("1", "ActorDiedError: worker died")]})
    assert apply_client_failure_policy(rd, cfg, "completed") == "completed"
    run = read_json(rd.run_json)
    assert run["status"] == "completed"
    assert run["client_failures"] == ["client 1 failed in 1 of 4 round(s) (25%): round 2: "
                                      "ActorDiedError: worker died"]
    notes = load_run(rd.root).notes  # analyze-run says it
    assert any("client 1 failed in 1 of 4" in n and "max_client_failure_rate" in n
               for n in notes)


def test_rate_one_never_fails_and_other_statuses_are_left_alone(tmp_path):
    cfg, rd = _run(tmp_path, {r: [("1", "x")] for r in (1, 2, 3, 4)}, rate=1.0)
    assert apply_client_failure_policy(rd, cfg, "completed") == "completed"
    assert apply_client_failure_policy(rd, cfg, "interrupted") == "interrupted"
