"""A real multi-site federation: `zk0 train` with TLS and node authentication, two
SuperNodes that cannot see the coordinator's files (slow; needs root for namespaces).

The coordinator (SuperLink on 127.0.0.2 with a certificate made for that address, the
run directory, its config and caches) lives under ``coord/``. Each site runs
``zk0 train supernode`` in its own mount namespace in which ``coord/`` and the
coordinator's caches are hidden under an empty tmpfs and ``HOME`` is its own. The sites'
cameras differ in names and image sizes; each maps them with its own rename map.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from zk0cli.core.contract import ADAPTER_DIR, ADAPTER_WEIGHTS_FILE
from zk0cli.core.rundir import RunDir, read_json
from zk0cli.engine.certs import make_certificates
from zk0cli.engine.flwr_proc import free_port, wait_for_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                       reason="mount namespaces need root and util-linux unshare"),
]

HOST = "127.0.0.2"
MARK = "ZK0_MULTISITE_MARK"
SITES = {"site-a": {"cameras": ("top", "wrist"), "size": 32},
         "site-b": {"cameras": ("front", "side"), "size": 48}}
POLICY_CAMERAS = ("camera1", "camera2")
ZK0 = [sys.executable, "-m", "zk0cli"]


def _coordinator_config(coord: Path, eval_root: Path) -> Path:
    path = coord / "train.toml"
    path.write_text(f"""seed = 5
output_root = "{coord / 'outputs'}"
[model]
kind = "tiny"
device = "cpu"
[model.peft]
rank = 4
[data]
clients = [{{source = "hub", name = "site-a"}}, {{source = "hub", name = "site-b"}}]
eval = [{{source = "local", name = "zk0test/ref", root = "{eval_root}"}}]
heldout_episodes = 1
skip_bad_episodes = true
[training]
steps_per_round = 2
batch_size = 2
[federation]
rounds = 2
min_clients = 2
round_timeout_s = 240
node_wait_timeout_s = 120
[eval]
batches = 1
batch_size = 2
[checkpoint]
interval = 1
""")
    return path


def _site(tmp: Path, name: str, spec: dict, certs: Path, index: int, writer) -> dict:
    root = tmp / name
    data = writer(root / "data", repo_id=f"lab/{name}", episodes=3, frames=10,
                  cameras=spec["cameras"], size=spec["size"], seed=index)
    (root / "home").mkdir()
    for f in ("ca.crt", f"node-{index}.key"):
        shutil.copy(certs / f, root / f)
    rename = "\n".join(f'"observation.images.{c}" = "observation.images.{p}"'
                       for c, p in zip(spec["cameras"], POLICY_CAMERAS, strict=True))
    (root / "site.toml").write_text(
        f'dataset = "lab/{name}"\ndataset_root = "{data}"\nclient_id = "{name}"\n'
        f'device = "cpu"\ncache_dir = "{root / "cache"}"\n[rename_map]\n{rename}\n')
    return {"root": root, "key": root / f"node-{index}.key", "ca": root / "ca.crt"}


def _in_own_namespace(hidden: list[Path], home: Path, argv: list[str]) -> list[str]:
    mounts = " && ".join(f"mount -t tmpfs none '{d}'" for d in hidden)
    env = ("env -u ZK0_CACHE_DIR -u HF_LEROBOT_HOME -u HF_HOME "
           f"HOME='{home}' XDG_CACHE_HOME='{home}/.cache' XDG_STATE_HOME='{home}/.state'")
    cmd = " ".join(f"'{a}'" for a in argv)
    # --kill-child: terminating unshare terminates the site (else it lives on, orphaned).
    return ["unshare", "--mount", "--kill-child=SIGTERM", "sh", "-c",
            f"{mounts} && exec {env} {cmd}"]


def _marked(mark: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return found


def test_two_sites_on_their_own_filesystems_train_two_rounds(tmp_path, dataset_writer,
                                                             dataset_corrupter):
    coord = tmp_path / "coord"
    coord.mkdir()
    certs = coord / "certs"
    make_certificates(certs, hosts=[HOST], nodes=3)
    ref = dataset_writer(coord / "ref", repo_id="zk0test/ref", episodes=2, frames=10,
                         cameras=POLICY_CAMERAS, size=32)
    config = _coordinator_config(coord, ref)
    sites = {n: _site(tmp_path, n, s, certs, i + 1, dataset_writer)
             for i, (n, s) in enumerate(SITES.items())}
    # site-b's camera clock drifted in episode 0: with data.skip_bad_episodes the site
    # drops it at the join check and trains on the others (else LeRobot's
    # FrameTimestampError would fail it every round).
    dataset_corrupter(sites["site-b"]["root"] / "data", drift=(0,))
    hidden = [coord, Path(os.environ["ZK0_CACHE_DIR"]).parent]  # the coordinator's caches
    port = free_port()
    address = f"{HOST}:{port}"
    procs: list[subprocess.Popen] = []
    mark = f"multisite-{os.getpid()}"
    marked_env = {**os.environ, MARK: mark}
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        superlink = subprocess.Popen(
            [*ZK0, "train", "superlink", "--tls-dir", str(certs), "--auth", "--host", HOST,
             "--port", str(port), "--state-dir", str(coord / "superlink")],
            stdout=open(logs / "superlink.out", "w"), stderr=subprocess.STDOUT)
        procs.append(superlink)
        wait_for_port(HOST, port, timeout_s=90, proc=superlink)
        reg = subprocess.run([*ZK0, "train", "register", str(certs / "node-1.pub"),
                              str(certs / "node-2.pub"), "--superlink", address,
                              "--root-certificates", str(certs / "ca.crt"),
                              "--state-dir", str(coord / "admin")],
                             capture_output=True, text=True, timeout=120)
        assert reg.returncode == 0, reg.stdout + reg.stderr
        # A site with a bad dataset is refused before it connects (exit 2).
        bad = tmp_path / "bad"
        (bad / "home").mkdir(parents=True)
        res = subprocess.run(_in_own_namespace(hidden, bad / "home", [
            *ZK0, "train", "supernode", "--superlink", address, "--root-certificates",
            str(sites["site-a"]["ca"]), "--dataset", "lab/bad", "--dataset-root",
            str(bad / "home")]), capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "not a LeRobotDataset root" in res.stdout + res.stderr
        assert not (bad / "home" / ".state").exists()  # nothing written
        for name, site in sites.items():
            argv = [*ZK0, "train", "supernode", "--superlink", address,
                    "--root-certificates", str(site["ca"]), "--auth-key", str(site["key"]),
                    "--site-config", str(site["root"] / "site.toml"),
                    "--port", str(free_port()), "--state-dir", str(site["root"] / "state")]
            procs.append(subprocess.Popen(
                _in_own_namespace(hidden, site["root"] / "home", argv), env=marked_env,
                stdout=open(logs / f"{name}.out", "w"), stderr=subprocess.STDOUT))
        time.sleep(2)
        out = coord / "run"
        res = subprocess.run([*ZK0, "train", "--superlink", address, "--root-certificates",
                              str(certs / "ca.crt"), "--config", str(config), "--out",
                              str(out)], capture_output=True, text=True, timeout=600)
        site_logs = "\n".join(p.read_text()[-1500:] for p in logs.iterdir())
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:] + site_logs
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    # Nothing of the sites outlives the test (their SuperNodes, warm ClientApps).
    deadline = time.monotonic() + 60
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _marked(mark)
    for p in left:
        p.kill()
    assert not left, [" ".join(p.cmdline())[:120] for p in left]
    rd = RunDir.open(out)
    run = rd.read_run()
    assert run["status"] == "completed" and run["engine"] == "deployment"
    assert sorted(r["client_id"] for r in run["join_check"]) == ["site-a", "site-b"]
    assert all(r["ok"] for r in run["join_check"])
    joined = {r["client_id"]: r for r in run["join_check"]}
    assert joined["site-a"]["bad_episodes"] == []
    assert joined["site-b"]["bad_episodes"] == [0] and joined["site-b"]["skipped_bad_episodes"]
    assert "timestamps drift" in joined["site-b"]["episode_problems"][0]
    for r in (1, 2):
        rf = read_json(rd.server_eval(r))
        assert rf["aggregated"] and rf["failures"] == []
        assert sorted(c["client_id"] for c in rf["individual_client_training_metrics"]) == \
            ["site-a", "site-b"]
        # LoRA: each site built the same adapters from the run's seed; only B travelled
        assert all(c["param_update_norm"] > 0 for c in rf["individual_client_training_metrics"])
        for name in SITES:
            assert read_json(rd.client_round(name, r))["dataset_name"] == f"lab/{name}"
    assert rd.checkpoint_rounds() == [1, 2]
    # The sites wrote nothing outside their state folders and caches.
    for site in sites.values():
        assert not (site["root"] / "home" / "zk0-supernode").exists()
        assert json.loads((site["root"] / "state" / "site.json").read_text())["client_id"]
        # one warm ClientApp process served the site: the policy was built once
        log = (site["root"] / "state" / "supernode.log").read_text(encoding="utf-8")
        assert log.count("warm ClientApp: task") >= 4, log[-3000:]
        assert log.count("built SmolVLA (tiny)") == 1, log[-3000:]
    # The checkpoint loads with plain LeRobot where zk0's cache cannot be seen.
    ckpt = rd.checkpoint(2)
    adapter = load_file(ckpt / ADAPTER_DIR / ADAPTER_WEIGHTS_FILE)
    assert any(".lora_B." in k and v.abs().max() > 0 for k, v in adapter.items())
    script = tmp_path / "load.py"
    script.write_text("from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy\n"
                      "p = SmolVLAPolicy.from_pretrained('.')\n"
                      "print('CAMERAS', sorted(p.config.image_features))\n")
    home = tmp_path / "viewer"
    home.mkdir()
    load = subprocess.run(_in_own_namespace([Path(os.environ["ZK0_CACHE_DIR"]).parent], home,
                                            [sys.executable, str(script)]),
                          cwd=ckpt, capture_output=True, text=True, timeout=300,
                          env={"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1"})
    assert load.returncode == 0, load.stdout[-2000:] + load.stderr[-3000:]
    assert "observation.images.camera1" in load.stdout
