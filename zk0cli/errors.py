"""Every public zk0 exception, in one place.

Each exception inherits the builtin it refines (``ValueError`` for bad input,
``OSError`` for files, ``RuntimeError`` for failures while running) so that callers
using plain ``except ValueError`` keep working. Messages are one paragraph: what
was seen, what is accepted, and the way out. The mapping from exception to process
exit code lives in the CLI (:mod:`zk0cli.cli.errors`), not here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


class Zk0Error(Exception):
    """Base class of every error zk0 raises on purpose."""


# --- bad input (the CLI exits 2) ---------------------------------------------------------


class UsageError(Zk0Error, ValueError):
    """The user asked for something zk0 cannot do as given (a bad flag, path or name)."""


@dataclass(frozen=True)
class FieldProblem:
    """One offending configuration field.

    Attributes:
        path: Dotted path of the field, e.g. ``"federation.min_clients"``.
        value: The value seen, as given (``None`` when the field was missing).
        rule: What is accepted, in words.
    """

    path: str
    value: object
    rule: str

    def __str__(self) -> str:
        if self.rule == MISSING_RULE and self.value is None:
            return f"{self.path}: {self.rule}"
        return f"{self.path} = {self.value!r}: {self.rule}"


MISSING_RULE = "required; it is missing"
"""The rule of a required field that was not given (printed without a value)."""


def problem_lines(problems: Sequence[object]) -> str:
    """``(N problem[s]):`` and one ``  - item`` line per problem (used by every error here)."""
    n = len(problems)
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"({n} problem{'s' if n != 1 else ''}):\n{lines}"


# --- the one converter from pydantic validation errors to field problems -------------------

_INSTANCE_OF = re.compile(r"valid dictionary or instance of (\w+)")
# What a user writes for a section that is a list of tables (pydantic names the class).
_TABLE_EXAMPLES = {
    "DatasetSpec": '{source = "sim", name = "lift"} (in --set: '
                   'data.clients=[{source="sim",name="lift"},{source="sim",name="push"}])',
}
_FIELD_IN_MESSAGE = re.compile(r"^(?P<field>[a-z_]+(?:\.[a-z_]+)*)\b")
_MISSING = object()


def _lookup(data: Any, path: Sequence[str | int]) -> Any:
    node = data
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return _MISSING
    return node


def _fields_at(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str] | None:
    """Field names accepted at ``loc`` inside ``model`` (``None`` when unknown)."""
    from pydantic import BaseModel

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``T``, ``list[T]``, ``T | None``... (else ``None``)."""
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list | tuple) and any(isinstance(v, PurePath) for v in value):
        return [_plain(v) for v in value]
    return value


def _first_leaf(value: Any, path: list[str | int]) -> tuple[list[str | int], Any]:
    while isinstance(value, Mapping) and len(value) >= 1:
        key = next(iter(value))
        path, value = [*path, str(key)], value[key]
    return path, value


def field_problems(
    err: ValidationError,
    *,
    data: Mapping[str, Any] | None = None,
    model: type[BaseModel] | None = None,
    names: Mapping[str, str] | None = None,
    flags: bool = False,
) -> list[FieldProblem]:
    """Turn a pydantic ``ValidationError`` into problems naming the field the user wrote.

    For each error: the dotted path of the field (list items as ``[i]``), the value the
    user gave (not a whole section) and what is accepted. Model-level checks, whose
    messages start with the field they are about (``"model.dtype = ... needs ..."``,
    ``"min_clients must be ..."``), are pointed at that field, read absolutely from the
    top of ``data`` or relatively to the section. Unknown keys name the key as written
    and list the keys accepted there.

    Args:
        err: The validation error.
        data: The input that was validated (to read the values model-level checks name).
        model: The model validated (to list the accepted keys of a section).
        names: How to spell a top-level field for the user (``{"public_keys": "KEY.pub"}``).
        flags: Command-line options: a field ``dry_run`` reads ``--dry-run`` and list
            indices are left out.

    Returns:
        One problem per error, in pydantic's order.
    """
    names = dict(names or {})
    out: list[FieldProblem] = []
    for e in err.errors():
        loc: list[str | int] = list(e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        value: Any = e.get("input")
        if e["type"] == "missing":
            value = None
            msg = MISSING_RULE
        elif (m := _INSTANCE_OF.search(msg)) and m.group(1) in _TABLE_EXAMPLES:
            msg = f"must be a table, e.g. {_TABLE_EXAMPLES[m.group(1)]}"
        elif e["type"] == "extra_forbidden":
            accepted = _fields_at(model, loc[:-1])
            where = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
            where = f"in {where}" if where else "at the top level"
            msg = f"unknown key {str(loc[-1])!r}" + (
                f"; accepted {where}: {', '.join(accepted)}" if accepted else
                "; see the documentation for the accepted keys")
            loc, value = _first_leaf(value, loc)
        elif isinstance(value, Mapping) and msg.startswith("--") and ": " in msg:
            flag, _, msg = msg.partition(": ")  # a rule about several options, named first
            by_flag = {v: k for k, v in names.items()}
            field = by_flag.get(flag, flag.removeprefix("--").replace("-", "_"))
            found = _lookup(data if data is not None else value, [field])
            out.append(FieldProblem(flag, _plain(None if found is _MISSING else found), msg))
            continue
        elif isinstance(value, Mapping) and (m := _FIELD_IN_MESSAGE.match(msg)):
            named: list[str | int] = list(m.group("field").split("."))
            section = list(loc)
            root = data if data is not None else value
            if loc and _lookup(value, named) is not _MISSING:
                loc = [*loc, *named]  # relative to the section ("mu_min must ...")
            elif not loc or named[:len(loc)] == loc or _lookup(root, named) is not _MISSING:
                loc = named  # an absolute path ("model.dtype ...")
            else:
                loc = [*loc, *named]
            if data is not None:
                found = _lookup(data, loc)
            else:
                found = _lookup(value, loc[len(section):]) if loc[:len(section)] == section \
                    else _MISSING
            value = None if found is _MISSING else found
        out.append(FieldProblem(_spell(loc, names, flags=flags), _plain(value), msg))
    return out


def _spell(loc: Sequence[str | int], names: Mapping[str, str], *, flags: bool) -> str:
    if not loc:
        return "(top level)"
    head, rest = str(loc[0]), loc[1:]
    if head in names:
        first = names[head]
    elif flags:
        first = "--" + head.replace("_", "-")
    else:
        first = head
    text = first
    for part in rest:
        if isinstance(part, int):
            text += "" if flags else f"[{part}]"
        else:
            text += f".{part}"
    return text


class ConfigError(UsageError):
    """A configuration (file, preset, ``--set`` override or flag) is invalid.

    Attributes:
        problems: Every offending field, not only the first one found.
        source: Where the configuration came from (a file path or ``"--set"``), if known.
    """

    DEFAULT_HINT = ("Fix the fields above in the TOML file or with --set section.key=value; "
                    "see docs/configuration.md for every field.")

    def __init__(self, problems: Sequence[FieldProblem], *, source: str | None = None,
                 hint: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        what = "configuration" if hint is None else "options"
        super().__init__(
            f"Invalid {what}{where} {problem_lines(self.problems)}\n"
            f"{self.DEFAULT_HINT if hint is None else hint}"
        )


class DatasetError(UsageError):
    """A LeRobotDataset cannot be used as configured (missing, wrong version, too small)."""


class FeatureMismatchError(DatasetError):
    """The dataset's camera/state keys do not match the policy's input features.

    Attributes:
        dataset_keys: Observation keys the dataset provides (after any rename map).
        policy_keys: Observation keys the policy expects.
    """

    def __init__(self, dataset_name: str, dataset_keys: Sequence[str], policy_keys: Sequence[str]):
        self.dataset_keys = sorted(dataset_keys)
        self.policy_keys = sorted(policy_keys)
        missing = sorted(set(policy_keys) - set(dataset_keys))
        extra = sorted(set(dataset_keys) - set(policy_keys))
        hint = ""
        if missing and extra:
            pairs = ", ".join(f'"{e}" = "{m}"' for e, m in zip(extra, missing, strict=False))
            hint = f" For example: [data.rename_map] {pairs}"
        super().__init__(
            f"Dataset {dataset_name!r} does not match the policy's input features.\n"
            f"  dataset provides: {', '.join(self.dataset_keys) or '(none)'}\n"
            f"  policy expects:   {', '.join(self.policy_keys) or '(none)'}\n"
            f"  missing: {', '.join(missing) or '(none)'}; extra: {', '.join(extra) or '(none)'}\n"
            f"Map dataset keys to policy keys with data.rename_map.{hint}"
        )


class RunDirError(UsageError, OSError):
    """A path is not a zk0 run directory, or a run directory is not in the expected state."""


class RunOwnedError(RunDirError):
    """Another live process owns the run directory (holds its lock); exit code 2."""


class CheckpointError(UsageError, OSError):
    """A checkpoint directory is missing files, is corrupt, or does not load.

    Attributes:
        problems: Every problem found, one line each.
    """

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(
            f"Checkpoint {path} cannot be used {problem_lines(self.problems)}\n"
            "Point at a complete checkpoint (models/checkpoint_round_N) or a run directory."
        )


class ReleaseError(UsageError):
    """``zk0 release`` refused to act (dirty tree, existing tag, disagreeing versions...)."""


class HubAuthError(UsageError):
    """No Hugging Face token is available; nothing was uploaded."""


class MissingDependencyError(Zk0Error, ImportError):
    """An optional dependency or system library is missing; the message names what to install."""


class SimulatorError(Zk0Error, RuntimeError):
    """The MuJoCo simulator could not start or render (e.g. no offscreen GL backend)."""


# --- failures while running (the CLI exits 1) ----------------------------------------------


class TrainingDivergedError(Zk0Error, RuntimeError):
    """Local training met a non-finite loss or gradient.

    Attributes:
        step: Zero-based optimizer step at which the non-finite value appeared.
        what: ``"loss"`` or ``"grad_norm"``.
    """

    def __init__(self, step: int, what: str, value: float) -> None:
        self.step = step
        self.what = what
        self.value = value
        super().__init__(
            f"Non-finite {what} ({value}) at local step {step}; the round's weights were "
            "discarded. Lower training.lr or raise training.grad_clip_norm."
        )


class TransportError(Zk0Error, ValueError):
    """Received tensors do not match the expected names, shapes, dtypes or are not finite."""


class InstructionError(Zk0Error, ValueError):
    """A site cannot read the coordinator's train instruction (version, field or value).

    Attributes:
        field: The dotted field or ConfigRecord key at fault.
        value: The value seen (``None`` when missing).
    """

    def __init__(self, field: str, value: object, accepted: str):
        self.field, self.value = field, value
        super().__init__(f"train instruction: {field} = {value!r}: {accepted}")


class FederationError(Zk0Error, RuntimeError):
    """The federation failed (every client failed, the SuperLink died, a timeout passed)."""


class DiskFullError(FederationError, OSError):
    """The disk holding a run directory is full (ENOSPC/EDQUOT); the run ended ``failed``."""


class HubError(Zk0Error, RuntimeError):
    """An upload to the Hugging Face Hub failed."""


class ReleaseTestsFailedError(Zk0Error, RuntimeError):
    """``zk0 release``: the test command failed, so nothing was bumped, committed or tagged."""


class GitError(Zk0Error, RuntimeError):
    """A git command failed while releasing; the message says what was already done."""


# --- appended: zk0 train (deployment) -------------------------------------------------------


class DeploymentOptionsError(UsageError):
    """Options of ``zk0 train`` (addresses, certificates, keys, ports) are invalid.

    Nothing was started when this is raised.

    Attributes:
        problems: Every offending option, not only the first one found.
    """

    def __init__(self, problems: Sequence[FieldProblem], *, command: str = "zk0 train") -> None:
        self.problems = list(problems)
        super().__init__(
            f"Invalid options {problem_lines(self.problems)}\nNothing was started. "
            f"See `{command} --help` and docs/deployment.md."
        )


class SuperLinkConnectionError(FederationError):
    """The SuperLink cannot be reached, or TLS with it fails (wrong CA, plain vs TLS).

    Attributes:
        address: The ``HOST:PORT`` tried.
    """

    def __init__(self, address: str, message: str) -> None:
        self.address = address
        super().__init__(message)


class NodeRefusedError(FederationError):
    """The SuperLink refused a SuperNode (its public key is not registered: Flower exit 305)."""
