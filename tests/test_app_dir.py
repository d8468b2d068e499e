"""make_app_dir: zk0's ClientApp by default, another one when asked (tests, benchmarks)."""

import tomllib

from zk0cli.engine.flwr_proc import make_app_dir


def test_app_dir_names_the_requested_clientapp(tmp_path):
    default = tomllib.loads((make_app_dir(tmp_path / "a") / "pyproject.toml").read_text())
    other = tomllib.loads((make_app_dir(tmp_path / "b", clientapp="benchmarks.bench_clientapp:app")
                           / "pyproject.toml").read_text())
    comps = default["tool"]["flwr"]["app"]["components"]
    assert comps["clientapp"] == "zk0cli.flower.client_app:app"
    assert other["tool"]["flwr"]["app"]["components"] == {
        **comps, "clientapp": "benchmarks.bench_clientapp:app"}
