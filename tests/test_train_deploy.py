"""zk0 train through real Flower SuperLinks and SuperNodes on loopback (slow)."""

import os
import threading
import time

import psutil
import pytest
from train_fixtures import write_train_config
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.rundir import RunDir, read_json

pytestmark = pytest.mark.slow


def _flower_procs():
    """Flower processes started by this test process (zombies excluded)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(
                    "flower-" in a or "flwr-" in a or "warm_clientapp" in a
                    for a in p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory, dataset_writer):
    d = tmp_path_factory.mktemp("sites")
    return [dataset_writer(d / f"site{i}", repo_id=f"zk0test/c{i}", episodes=3, frames=12,
                           seed=i) for i in range(2)]


def test_unregistered_node_is_refused(tmp_path, two_sites):
    from zk0cli.engine.certs import make_certificates
    from zk0cli.engine.deploy import serve_superlink
    from zk0cli.engine.deploy_options import SuperLinkOptions
    from zk0cli.engine.flwr_proc import free_port

    bundle = make_certificates(tmp_path / "tls", hosts=[], nodes=1)
    port = free_port()
    opts = SuperLinkOptions(host="127.0.0.1", port=port, tls_dir=tmp_path / "tls", auth=True)
    ready = threading.Event()
    t = threading.Thread(target=lambda: serve_superlink(opts, state_dir=tmp_path / "sl",
                                                        on_ready=ready.set), daemon=True)
    t.start()
    try:
        assert ready.wait(90)
        res = CliRunner().invoke(app, [
            "train", "supernode", "--superlink", f"127.0.0.1:{port}", "--dataset", "zk0test/c0",
            "--dataset-root", str(two_sites[0]), "--root-certificates", str(bundle.tls.ca_cert),
            "--auth-key", str(bundle.nodes[0].private_key), "--port", str(free_port()),
            "--state-dir", str(tmp_path / "node")])
        assert res.exit_code == 1, res.output
        assert "305" in res.output and "not registered" in res.output
        assert "zk0 train register" in res.output
        assert "Traceback" not in res.output
    finally:
        for p in _flower_procs():
            if "flower-superlink" in " ".join(p.cmdline()):
                p.terminate()  # serve_superlink's wait returns and stops its tree
        t.join(60)
    assert _flower_procs() == []


def _kill_node_when(out, node_port_of, *, round_done: int, node: int, killed: dict):
    """Background: when round ``round_done``'s server file exists, SIGKILL one SuperNode
    (with its ClientApp processes)."""
    target = out / "server" / f"round_{round_done}_server_eval.json"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and not target.is_file():
        time.sleep(0.5)
    for p in _flower_procs():
        cmd = " ".join(p.cmdline())
        if "flower-supernode" in cmd and f"node_{node}/site.json" in cmd:
            for c in [*p.children(recursive=True), p]:
                c.kill()
            killed["at"] = time.monotonic()
            killed["pid"] = p.pid
    killed["done"] = True


def test_local_trial_with_tls_and_node_auth_survives_a_killed_supernode(tmp_path, two_sites):
    """One local trial (TLS, node authentication) of 3 rounds in which SuperNode 1 is
    SIGKILLed after round 1: round 1 trains on both sites, round 2 records the dead node,
    round 3 does not wait forever for it, and nothing Flower started outlives the run."""
    cfg = write_train_config(tmp_path, two_sites, rounds=3,
                             extra="")  # node_wait_timeout_s = 5, round_timeout_s = 240
    out = tmp_path / "run"
    killed: dict = {}
    t = threading.Thread(target=_kill_node_when, args=(out, None),
                         kwargs={"round_done": 1, "node": 1, "killed": killed}, daemon=True)
    t.start()
    t0 = time.monotonic()
    res = CliRunner().invoke(app, ["train", "--local-nodes", "2", "--auth", "--config",
                                   str(cfg), "--out", str(out)])
    elapsed = time.monotonic() - t0
    t.join(5)
    assert "pid" in killed, res.output
    assert elapsed < 400
    # every Flower command is printed, with TLS and node authentication
    assert "flower-superlink --ssl-ca-certfile" in res.output
    assert "--enable-supernode-auth" in res.output
    assert "flwr supernode register" in res.output
    assert res.output.count("flower-supernode --superlink") == 2
    assert "--auth-supernode-private-key" in res.output
    rd = RunDir.open(out)
    run = rd.read_run()
    assert run["status"] in ("completed", "failed"), run
    assert run["engine"] == "deployment" and run["command"] == "train" and run["tls"] is True
    assert res.exit_code == (0 if run["status"] == "completed" else 1)
    assert "Traceback" not in res.output
    assert (out / "logs" / "superlink.log").is_file()
    # round 1 trained with both nodes and its checkpoint is intact
    from zk0cli.core.checkpoint import verify_checkpoint

    r1 = read_json(rd.server_eval(1))
    assert r1["aggregated"] is True
    assert r1["client_aggregated_training_metrics"]["num_clients"] == 2
    for c in ("0", "1"):
        assert read_json(rd.client_round(c, 1))["dataset_name"] == f"zk0test/c{c}"
    verify_checkpoint(rd.checkpoint(1))
    history = read_json(rd.policy_loss_history)
    assert {"0", "1"} <= set(history) and all(isinstance(v, float) for v in history.values())
    # round 2: the dead node is recorded as a failure (error reply or no reply)
    r2 = read_json(rd.server_eval(2))
    assert r2["client_aggregated_training_metrics"]["num_failures"] >= 1 or not r2["aggregated"]
    # round 3 did not wait forever for the second node
    r3 = read_json(rd.server_eval(3))
    assert r3["aggregated"] is False
    assert "waiting for 2 nodes, 1 connected after 5 s" in r3["note"]
    # one warm ClientApp per site served its messages (join check, statistics, rounds) and
    # built the policy once: the surviving site's log shows it
    log = (out / "logs" / "supernode_0.log").read_text(encoding="utf-8")
    assert log.count("warm ClientApp: task") >= 4, log[-3000:]
    assert log.count("built SmolVLA (tiny)") == 1
    assert "Start `flwr-clientapp` process" not in log
    assert "zk0cli.flower.warm_clientapp --runtime-api-address" in res.output
    assert _flower_procs() == []
    assert os.path.isdir(rd.checkpoint(1))
