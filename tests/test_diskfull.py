"""A full disk ends the run `failed` with zk0's message (a real, tiny tmpfs)."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from zk0cli.core.diskfull import disk_full_error, is_disk_full

# Inside a private mount namespace: a 2 MiB tmpfs holds a run directory; another process
# fills it up; a round file no longer fits; the failure is still recorded in run.json.
SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    from zk0cli.core.diskfull import is_disk_full, record_failure, reserve, disk_full_error
    from zk0cli.core.rundir import RunDir, write_json
    mnt = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    rd = RunDir.create(mnt, name="run")
    rd.update_run(status="running")
    reserve(rd)
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)  # another writer fills the disk
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        os.close(fd)
    try:
        write_json(rd.server_eval(1), {"round": 1, "pad": "y" * 500000})
        raise SystemExit("the round file fitted")
    except OSError as err:
        assert is_disk_full(err), err
        ok = record_failure(rd, str(disk_full_error(rd.root, err, what="round 1")))
    print(json.dumps({"ok": ok, "run": json.loads(rd.run_json.read_text())}))
""")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare to mount a tmpfs")
def test_enospc_mid_run_marks_the_run_failed_with_the_reason(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                          "-c", SCRIPT, str(mnt)], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    if res.returncode != 0 and "unshare" in res.stderr and "Operation not permitted" in \
            res.stderr:
        pytest.skip("mount namespaces are not allowed here")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] is True
    run = out["run"]
    assert run["status"] == "failed"
    assert "is full" in run["error"] and "--resume" in run["error"]
    assert "Traceback" not in run["error"]


def test_disk_full_is_recognised_through_wrapping_errors():
    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as e:
            raise RuntimeError("SafetensorError: failed to write") from e
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    msg = str(disk_full_error(__import__("pathlib").Path("/r"), inner, what="a checkpoint"))
    assert "writing a checkpoint failed" in msg and "df -h /r" in msg


# The real writers of a run on a full 4 MiB tmpfs: round files, a checkpoint (safetensors
# raises its own SafetensorError), server.log. Each goes through core.diskfull.run_writes.
WRITERS = textwrap.dedent("""
    import json, logging, os, subprocess, sys
    from pathlib import Path
    from zk0cli.core.diskfull import RunLogHandler, reserve
    from zk0cli.core.rundir import RunDir
    from zk0cli.errors import DiskFullError
    mnt = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    rd = RunDir.create(mnt, name="run")
    out = {}

    def fill():
        rd.update_run(status="running", error=None)
        reserve(rd)
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)

    def failed(key, fn):
        fill()
        try:
            fn()
            out[key] = "fitted"
        except DiskFullError as err:
            run = json.loads(rd.run_json.read_text())
            out[key] = {"error": str(err), "status": run["status"], "run_error": run["error"]}
        (mnt / "filler").unlink()

    from zk0cli.core.recorder import RunRecorder
    failed("round", lambda: RunRecorder(rd).record_round(
        0, outcome=None, server_eval={"datasets": {"x": 1.0}, "composite": 1.0}, seconds=1.0))

    import torch
    from safetensors.torch import save_file
    from zk0cli.core.checkpoint import write_checkpoint
    failed("checkpoint", lambda: write_checkpoint(
        rd, 1, metrics={}, save_policy=lambda d: save_file(
            {"w": torch.zeros(1 << 20)}, str(d / "model.safetensors"))))
    out["latest"] = rd.latest_checkpoint() is not None
    out["partial"] = [p.name for p in rd.models_dir.iterdir()]

    fill()
    handler = RunLogHandler(rd.server_log)
    log = logging.getLogger("zk0.test")
    log.addHandler(handler)
    for i in range(200):
        log.error("line %d %s", i, "z" * 200)
    out["dropped"] = handler.dropped
    print(json.dumps(out))
""")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare to mount a tmpfs")
def test_every_writer_of_a_run_fails_it_with_zk0s_message_on_a_full_disk(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                          "-c", WRITERS, str(mnt)], capture_output=True, text=True,
                         timeout=120, env={**os.environ})
    if res.returncode != 0 and "Operation not permitted" in res.stderr:
        pytest.skip("mount namespaces are not allowed here")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key, what in (("round", "the files of round 0"),
                      ("checkpoint", "the checkpoint of round 1")):
        got = out[key]
        assert got != "fitted", key
        assert got["status"] == "failed" and got["run_error"] == got["error"]
        assert f"is full: writing {what} failed" in got["error"], got["error"]
        assert "--resume" in got["error"]
    assert out["latest"] is False and out["partial"] == []  # no half checkpoint left
    assert out["dropped"] > 0
    assert "Logging error" not in res.stderr and "Traceback" not in res.stderr
