"""End to end through a real Flower SuperLink (simulation runtime): tiny-run and simulate.

These runs use the tiny SmolVLA and zk0's generated SO-101 datasets; each takes about a
minute on 2 cores. Fault injection (ZK0_FAULT_INJECTION, read by the test ClientApp
zk0cli.testing_faults) reaches the ClientApps through
the environment of the SuperLink zk0 starts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.rundir import RunDir, read_json
from zk0cli.engine import flwr_proc
from zk0cli.testing_faults import COMPONENT as FAULTY_CLIENTAPP

pytestmark = pytest.mark.slow

POLICY_FILES = {"config.json", "model.safetensors", "policy_preprocessor.json",
                "policy_postprocessor.json", "README.md", "metrics.json", "manifest.json"}


MARK = "ZK0_E2E_MARK"


@pytest.fixture(autouse=True)
def _mark_processes(monkeypatch):
    """Tag every process this test starts (the environment is inherited) so that leftover
    SuperLink, SuperExec or Ray processes can be found whatever else runs on the machine."""
    monkeypatch.setenv(MARK, str(os.getpid()))


def flower_processes():
    """Processes started by this test (through the environment tag) that are still alive."""
    me = psutil.Process()
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] == me.pid:
            continue
        try:
            if p.environ().get(MARK) == str(me.pid) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(" ".join(p.info["cmdline"] or [])[:120])
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return out


def simulate(tmp_path, *args, env=None, monkeypatch=None):
    out = tmp_path / "run"
    if env:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(flwr_proc, "CLIENTAPP", FAULTY_CLIENTAPP)  # faults: a test app
    res = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--out", str(out), *args])
    return res, RunDir(out)


def test_tiny_run_writes_the_whole_run_directory(tmp_path):
    out = tmp_path / "tiny"
    res = subprocess.run([sys.executable, "-m", "zk0cli", "tiny-run", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "tiny-run: all phases passed" in res.stdout
    rd = RunDir(out)
    run = read_json(rd.run_json)
    assert run["status"] == "completed" and run["rounds_completed"] == 1
    assert run["versions"]["flwr"] == "1.42.0"
    assert read_json(rd.config_json)["model"]["kind"] == "tiny"
    assert set(read_json(rd.policy_loss_history)) == {"0", "1"}
    assert [r["round"] for r in read_json(rd.federated_metrics)] == [0, 1]
    r1 = read_json(rd.server_eval(1))
    assert r1["aggregated"] and r1["client_aggregated_training_metrics"]["num_clients"] == 2
    assert {"lift", "pick_place"} == {m["dataset_name"]
                                      for m in r1["individual_client_training_metrics"]}
    for cid in ("0", "1"):
        assert read_json(rd.client_round(cid, 1))["status"] == "ok"
    ckpt = rd.latest_checkpoint()
    assert ckpt == rd.checkpoint(1)
    assert POLICY_FILES <= {p.name for p in ckpt.iterdir()}
    # tiny-run's analysis phase analysed this very run: a clean run has no findings and
    # the summary's server losses are the run's own history.
    summary = read_json(rd.report_dir / "summary.json")
    assert summary["findings"] == []
    history = read_json(rd.policy_loss_history)
    assert summary["status"] == "completed"
    assert sorted(r["round"] for r in summary["rounds"]) == [0, 1]
    composite = {str(r["round"]): r["composite"] for r in summary["rounds"]}
    assert composite == pytest.approx(history)

    # The checkpoint is a LeRobot policy directory: it reloads offline, tensors identical.
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from safetensors.torch import load_file

    from zk0cli.core.policy import load_bundle

    bundle = load_bundle(ckpt)
    assert isinstance(bundle.policy, SmolVLAPolicy)
    saved = load_file(ckpt / "model.safetensors")
    state = bundle.policy.state_dict()
    assert set(saved) <= set(state)
    for k, v in saved.items():
        assert (state[k].cpu() == v).all(), k
    assert flower_processes() == []


def test_simulate_three_clients_three_rounds(tmp_path, monkeypatch):
    """The README's demo, `zk0 simulate --preset tiny --rounds 3 --clients 3`, learns: the
    server's held-out loss at the last round is below round 0's and analyze-run reports no
    error. With `eval.closed_loop` (1 short reach episode at rounds 0, 2 and the last) the
    success fields reach the round files, federated_metrics.json, the checkpoint's
    metrics.json and model card, and analyze-run's report and plot."""
    from zk0cli.cli import run as cli_run

    samples = []  # (clients shown, client files of that round on disk, phase)
    table = cli_run._progress_table

    def spy(p, clients, eta_s=None):
        nxt = p.rounds_done + 1
        on_disk = len(list((tmp_path / "run" / "clients").glob(f"*/round_{nxt}.json")))
        samples.append((p.clients_reported, on_disk, p.phase))
        return table(p, clients, eta_s)

    monkeypatch.setattr(cli_run, "_progress_table", spy)
    res, rd = simulate(tmp_path, "--rounds", "3", "--clients", "3",
                       "--set", 'eval.closed_loop.tasks=["reach"]',
                       "--set", "eval.closed_loop.episodes=1",
                       "--set", "eval.closed_loop.max_steps=8",
                       "--set", "eval.closed_loop.every=2")
    assert res.exit_code == 0, res.output
    # The live counter moved while rounds trained, before the round's client files existed,
    # and the phases before round 1 were named.
    assert any(shown > 0 and on_disk == 0 for shown, on_disk, _ in samples), samples
    assert any(phase == "round 0 evaluation" or "model" in phase for *_, phase in samples)
    assert any(phase.endswith("training") for *_, phase in samples)
    assert rd.server_eval_rounds() == [0, 1, 2, 3]
    assert set(read_json(rd.policy_loss_history)) == {"0", "1", "2", "3"}
    for rnd in (1, 2, 3):
        f = read_json(rd.server_eval(rnd))
        clients = f["individual_client_training_metrics"]
        assert sorted(c["client_id"] for c in clients) == ["0", "1", "2"]
        assert all(c["fedprox_loss"] > 0 for c in clients)  # mu = 0.01 reached the clients
        assert f["proximal_mu"] == pytest.approx(0.01)
        assert f["failures"] == []
    assert rd.checkpoint_rounds() == [1, 2, 3] and rd.latest_checkpoint() == rd.checkpoint(3)
    assert read_json(rd.run_json)["status"] == "completed"
    history = read_json(rd.policy_loss_history)
    assert history["3"] < history["0"], history  # the held-out loss fell over the demo
    res = CliRunner().invoke(app, ["analyze-run", str(rd.root)])
    assert res.exit_code == 0, res.output
    errors = [f for f in read_json(rd.report_dir / "summary.json")["findings"]
              if f["severity"] == "error"]
    assert errors == [], errors
    # eval.closed_loop: rounds 0, 2 (every 2nd evaluated round) and 3 (the last)
    rolled = {r: read_json(rd.server_eval(r)).get("closed_loop") for r in (0, 1, 2, 3)}
    assert rolled[1] is None and all(rolled[r] for r in (0, 2, 3)), rolled
    reach = rolled[3]["reach"]
    assert reach["episodes"] == 1 and reach["max_steps"] == 8 and reach["seconds"] > 0
    assert 0 <= reach["ci_low"] <= reach["success_rate"] <= reach["ci_high"] <= 1
    assert reach["mean_final_distance"] >= 0
    rows = {r["round"]: r.get("closed_loop") for r in read_json(rd.federated_metrics)}
    assert rows == rolled
    assert read_json(rd.checkpoint(3) / "metrics.json")["closed_loop"] == rolled[3]
    assert "Closed-loop evaluation (simulator)" in (rd.checkpoint(3) / "README.md").read_text()
    assert "## Closed-loop success (simulator)" in (rd.report_dir / "report.md").read_text()
    assert (rd.report_dir / "closed_loop_success.png").stat().st_size > 0
    summary_rounds = read_json(rd.report_dir / "summary.json")["rounds"]
    assert {r["round"] for r in summary_rounds if r["closed_loop"]} == {0, 2, 3}
    assert flower_processes() == []


def test_every_client_failing_ends_the_run_failed(tmp_path, monkeypatch):
    res, rd = simulate(tmp_path, "--rounds", "2", "--clients", "2",
                       "--set", "federation.round_timeout_s=120",
                       env={"ZK0_FAULT_INJECTION": json.dumps({"*": "raise"})},
                       monkeypatch=monkeypatch)
    assert res.exit_code == 1, res.output
    run = read_json(rd.run_json)
    assert run["status"] == "failed"
    assert "every client failed" in run["error"]
    for rnd in (1, 2):
        f = read_json(rd.server_eval(rnd))
        assert not f["aggregated"] and len(f["failures"]) == 2
    # The previous (initial) global model is kept: no checkpoint of an unchanged model.
    assert rd.latest_checkpoint() is None
    assert flower_processes() == []


def test_out_that_exists_is_refused(tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    res = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--out", str(out)])
    assert res.exit_code == 2 and "already exists" in res.output
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in Path(out).iterdir()) == ["keep.txt"]
