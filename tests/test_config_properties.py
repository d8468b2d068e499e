"""Property-based: any config file or --set override gives a valid config or a clean
exit-2 error naming a field — never a traceback."""

import string

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.config import RunConfig, load_config
from zk0cli.errors import ConfigError

SECTIONS = ["model", "data", "training", "federation", "eval", "checkpoint", "logging",
            "data.sim", "bogus"]
KEYS = ["kind", "path", "device", "rounds", "num_clients", "min_clients", "proximal_mu",
        "fraction_train", "steps_per_round", "batch_size", "lr", "betas", "interval",
        "frequency", "batches", "level", "clients", "eval", "partition", "episodes", "seed",
        "height", "unknown_key", "heldout_episodes", "round_timeout_s", "client_cpus"]
scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(string.printable, max_size=12),
    st.lists(st.integers(-3, 3), max_size=3),
)
raw_values = st.one_of(st.text(string.printable.replace("\n", ""), max_size=16),
                       st.integers(-10**9, 10**9).map(str), st.sampled_from(
                           ["nan", "inf", "-1", "0", "1e400", "[1,", "{a=1}", '"x"', "true",
                            "[]", "[0.9, 0.95]", "''"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(SECTIONS), st.sampled_from(KEYS), raw_values),
                max_size=4))
def test_any_set_override_validates_or_names_a_field(overrides):
    sets = [f"{sec}.{key}={val}" for sec, key, val in overrides]
    try:
        cfg = load_config(preset="tiny", overrides=sets)
    except ConfigError as err:
        assert err.problems, "a ConfigError always names at least one field"
        for p in err.problems:
            assert p.path and p.rule
    else:
        assert isinstance(cfg, RunConfig)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(SECTIONS[:-2]),
                       st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4),
                       max_size=4))
def test_any_toml_file_validates_or_names_a_field(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    doc = {"data": {"clients": [{"source": "sim", "name": "lift"}]}, **doc}
    try:
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    except (TypeError, ValueError):
        return  # not representable as TOML (e.g. NaN in some writers): nothing to test
    try:
        load_config(config_file=path)
    except ConfigError as err:
        assert all(p.path for p in err.problems)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(SECTIONS), st.sampled_from(KEYS), raw_values),
                min_size=1, max_size=3))
def test_cli_never_shows_a_traceback(overrides):
    args = ["config", "show", "--preset", "tiny"]
    for sec, key, val in overrides:
        args += ["--set", f"{sec}.{key}={val}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code in (0, 2), res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    if res.exit_code == 2:
        assert "Invalid configuration" in res.output
