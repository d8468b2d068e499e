"""`zk0 train supernode` checks the site's own settings before it connects (exit 2)."""

import pytest
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.config import load_site_config
from zk0cli.errors import ConfigError, DatasetError

# A closed port: the site must be refused before anything tries to connect to it.
ADDR = "127.0.0.1:9"


def _supernode(tmp_path, *args):
    state = tmp_path / "state"
    res = CliRunner().invoke(app, ["train", "supernode", "--superlink", ADDR, "--insecure",
                                   "--state-dir", str(state), *args])
    return res, state


def test_a_folder_that_is_not_a_dataset_exits_2_before_connecting(tmp_path):
    bogus = tmp_path / "not-a-dataset"
    bogus.mkdir()
    res, state = _supernode(tmp_path, "--dataset", "me/data", "--dataset-root", str(bogus))
    assert res.exit_code == 2, res.output
    assert "info.json" in res.output and "not a LeRobotDataset root" in res.output
    assert "--dataset-root" in res.output and "data.clients" not in res.output
    assert "SuperLink" not in res.output  # never probed
    assert not state.exists()  # nothing written


def test_missing_dataset_and_bad_rename_map_are_named(tmp_path, so101_root):
    res, state = _supernode(tmp_path)
    assert res.exit_code == 2 and "dataset" in res.output and "required" in res.output.lower()
    res, state = _supernode(tmp_path, "--dataset", "zk0test/so101", "--dataset-root",
                            str(so101_root), "--rename", "observation.images.side=x")
    assert res.exit_code == 2, res.output
    assert "rename_map.observation.images.side" in res.output
    assert "observation.images.top" in res.output  # what the dataset has
    res, state = _supernode(tmp_path, "--dataset", "a", "--rename", "novalue")
    assert res.exit_code == 2 and "--rename" in res.output
    res, state = _supernode(tmp_path, "--site-config", str(tmp_path / "nope.toml"))
    assert res.exit_code == 2 and "--site-config" in res.output and "nope.toml" in res.output
    assert not state.exists()


def test_a_good_site_is_checked_then_probes_the_superlink(tmp_path, so101_root):
    site = tmp_path / "site.toml"
    site.write_text(f'dataset = "zk0test/so101"\ndataset_root = "{so101_root}"\n'
                    'device = "cpu"\nnum_workers = 1\n'
                    '[rename_map]\n"observation.images.top" = "observation.images.camera1"\n')
    res, state = _supernode(tmp_path, "--site-config", str(site))
    assert res.exit_code == 1, res.output  # the dataset passed; no SuperLink listens there
    assert "cannot reach the SuperLink at 127.0.0.1:9" in res.output
    assert not state.exists()


def test_site_file_fields_are_validated_with_flags_on_top(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('dataset = "a/b"\ndevice = "tpu"\n')
    with pytest.raises(ConfigError) as err:
        load_site_config(site, {})
    assert "device = 'tpu'" in str(err.value) and "cuda" in str(err.value)
    cfg = load_site_config(site, {"device": "cpu", "num_workers": 2, "client_id": None})
    assert (cfg.dataset, cfg.device, cfg.num_workers, cfg.client_id) == ("a/b", "cpu", 2, None)
    site.write_text('dataset = "a/b"\nrename = {}\n')
    with pytest.raises(ConfigError) as err:
        load_site_config(site, {})
    assert "rename" in str(err.value)


def test_simulate_checks_every_client_before_any_process(tmp_path, dataset_writer):
    from train_fixtures import write_train_config

    a = dataset_writer(tmp_path / "a", repo_id="zk0test/c0", episodes=2, frames=8)
    b = dataset_writer(tmp_path / "b", repo_id="zk0test/c1", episodes=2, frames=8,
                       cameras=("side", "wrist"), size=48)
    cfg = write_train_config(tmp_path, [a, b])
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["simulate", "--config", str(cfg), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "site 1 (zk0test/c1): REFUSED" in res.output
    assert "missing: observation.images.top" in res.output
    assert '"observation.images.side" = "observation.images.top"' in res.output
    assert "site 0" not in res.output  # the good client is not listed
    assert "fix: add to data.rename_map" in res.output
    assert not out.exists()
    # client 1's own rename map fixes it; the others keep data.rename_map (empty here)
    from zk0cli.core.config import load_config
    from zk0cli.core.site import check_all_clients

    fixed = load_config(config_file=cfg, overrides=[
        f'data.clients=[{{source="local", name="zk0test/c0", root="{a}"}}, '
        f'{{source="local", name="zk0test/c1", root="{b}", rename_map='
        '{"observation.images.side"="observation.images.top", '
        '"observation.images.wrist"="observation.images.wrist"}}]'])
    assert fixed.data.client_rename_map(0) == {}
    assert fixed.data.client_rename_map(1)["observation.images.side"] == \
        "observation.images.top"
    assert [r.ok for r in check_all_clients(fixed)] == [True, True]
    wrong = fixed.model_copy(update={"data": fixed.data.model_copy(update={"clients": [
        fixed.data.clients[0], fixed.data.clients[1].model_copy(update={"rename_map": {
            "observation.images.wrist": "observation.images.side"}})]})})
    with pytest.raises(DatasetError, match=r"fix: add to data.clients\[1\].rename_map"):
        check_all_clients(wrong)


def test_train_submit_from_another_machine_is_refused_before_submitting(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--superlink", "203.0.113.5:9092", "--insecure",
                                   "--preset", "tiny", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "is not this machine" in res.output and "coordinator" in res.output
    assert not out.exists()


def test_local_trial_nodes_get_their_site_files(tmp_path, so101_root):
    import json

    from zk0cli.core.config import load_config
    from zk0cli.engine.deploy import local_node_options, supernode_command

    cfg = load_config(preset="tiny", overrides=[
        f'data.clients=[{{source="local", name="lab/a", root="{so101_root}"}}]',
        "data.partition=dataset",
        'data.rename_map={"observation.images.top"="observation.images.cam"}',
        "training.num_workers=1", "federation.num_clients=1", "federation.min_clients=1"])
    [node] = local_node_options(cfg, superlink="127.0.0.1:9092", tls=None, keys=[None],
                                work=tmp_path)
    site = json.loads((tmp_path / "node_0" / "site.json").read_text())
    assert site["dataset"] == "lab/a" and site["client_id"] == "0"
    assert site["rename_map"] == {"observation.images.top": "observation.images.cam"}
    assert site["num_workers"] == 1 and site["dataset_root"] == str(so101_root)
    cmd = supernode_command(node)
    site_file = tmp_path / "node_0" / "site.json"
    assert cmd[cmd.index("--node-config") + 1] == f'site-config="{site_file}"'
    assert cmd[-2:] == ["--isolation", "process"]  # zk0's warm ClientApp serves the node
    # a client entry's own rename map wins over data.rename_map
    own = cfg.model_copy(update={"data": cfg.data.model_copy(update={"clients": [
        cfg.data.clients[0].model_copy(update={"rename_map": {"observation.images.top":
                                                                "observation.images.x"}})]})})
    local_node_options(own, superlink="127.0.0.1:9092", tls=None, keys=[None],
                       work=tmp_path / "own")
    site = json.loads((tmp_path / "own" / "node_0" / "site.json").read_text())
    assert site["rename_map"] == {"observation.images.top": "observation.images.x"}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_exits_2_before_connecting(tmp_path, so101_root):
    res, state = _supernode(tmp_path, "--dataset", "zk0test/so101", "--dataset-root",
                            str(so101_root), "--device", "cuda")
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "device (--device or the site file) = 'cuda' needs a CUDA GPU" in text
    assert "SuperLink" not in res.output and not state.exists()


def test_site_problems_name_the_flag_or_the_file_key(tmp_path):
    """A missing dataset names --dataset; a bad flag names the flag; a bad file value its key."""
    site = tmp_path / "site.toml"
    site.write_text('device = "gpu"\n')
    with pytest.raises(ConfigError) as info:
        load_site_config(site, {"dataset": None, "num_workers": -1},
                         flag_names={"dataset": "--dataset", "num_workers": "--workers"})
    lines = {str(p) for p in info.value.problems}
    assert "--dataset (or dataset in the site file): required; it is missing" in lines
    assert any(line.startswith("--workers = -1: ") for line in lines), lines
    assert any(line.startswith("device = 'gpu': ") for line in lines), lines
    with pytest.raises(ConfigError) as info:
        load_site_config(None, {"dataset": None}, flag_names={"dataset": "--dataset"})
    assert [str(p) for p in info.value.problems] == ["--dataset: required; it is missing"]
