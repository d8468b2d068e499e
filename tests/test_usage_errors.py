"""Usage errors name the field the user wrote, the value seen and what is accepted (exit 2)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.errors import field_problems


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich may wrap long lines


@pytest.mark.parametrize(("args", "expected"), [
    (["config", "show", "--set", "foo.bar=1"],
     ["foo.bar = 1: unknown key 'foo'", "accepted at the top level: seed,"]),
    (["config", "show", "--set", "model.dtype=bfloat16", "--set", "model.device=cpu"],
     ["model.dtype = 'bfloat16':"]),
    (["config", "show", "--set", 'data.clients=[{source="sim",name="fly"}]'],
     ["data.clients[0].name = 'fly':", "lift, pick_place, stack, push"]),
    (["train", "register", "/nope.pub", "--superlink", "127.0.0.1:9093"],
     ["KEY.pub = '/nope.pub': public key file /nope.pub does not exist"]),
])
def test_the_four_inputs_name_the_field_the_user_wrote(args, expected):
    res = _invoke(args)
    out = _flat(res.output)
    assert res.exit_code == 2, res.output
    for text in expected:
        assert text in out, res.output
    assert "model.model." not in out and "unknown = None" not in out


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lo: int = 0
    hi: int = 1

    @model_validator(mode="after")
    def _order(self) -> _Inner:
        if self.lo > self.hi:
            raise ValueError("lo must not exceed hi")
        return self


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: _Inner = _Inner()
    dry_run: bool = False


def _problems(data: dict, **kw):
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(data)
    return [str(p) for p in field_problems(info.value, data=data, model=_Outer, **kw)]


def test_section_rule_points_at_the_field_it_names():
    assert _problems({"inner": {"lo": 5}}) == ["inner.lo = 5: lo must not exceed hi"]


def test_unknown_nested_key_lists_what_the_section_accepts():
    (p,) = _problems({"inner": {"high": 3}})
    assert p == "inner.high = 3: unknown key 'high'; accepted in inner: lo, hi"


def test_flag_spelling_and_missing_value():
    (p,) = _problems({"dry_run": "maybe"}, flags=True)
    assert p.startswith("--dry-run = 'maybe': ")


@pytest.mark.parametrize(("args", "expected"), [
    (["config", "show", "--preset", "tiny", "--set", 'data.clients=["lift","push"]'],
     ["in the --set overrides", "data.clients[0] = 'lift': must be a table, e.g. "
      '{source = "sim", name = "lift"}']),
    (["config", "show", "--preset", "foo"],
     ["--preset = 'foo': must be one of so100, tiny", "your own TOML file with --config"]),
    (["train", "supernode", "--superlink", "nohostport", "--insecure"],
     ["--superlink = 'nohostport'", "See `zk0 train supernode --help`"]),
])
def test_messages_name_where_the_value_came_from_and_the_accepted_form(args, expected):
    res = _invoke(args)
    out = _flat(res.output)
    assert res.exit_code == 2, res.output
    for text in expected:
        assert text in out, res.output
    assert "DatasetSpec" not in out  # pydantic's class names are not the user's words
