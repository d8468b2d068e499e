"""Every public zk0 exception, in one place.

Each exception inherits the builtin it refines (``ValueError`` for bad input,
``OSError`` for files, ``RuntimeError`` for failures while running) so that callers
using plain ``except ValueError`` keep working. Messages are one paragraph: what
was seen, what is accepted, and the way out. The mapping from exception to process
exit code lives in the CLI (:mod:`zk0cli.cli.errors`), not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
        return f"{self.path} = {self.value!r}: {self.rule}"


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
        lines = "\n".join(f"  - {p}" for p in self.problems)
        what = "configuration" if hint is None else "options"
        super().__init__(
            f"Invalid {what}{where} ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n{lines}\n"
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


class CheckpointError(UsageError, OSError):
    """A checkpoint directory is missing files, is corrupt, or does not load.

    Attributes:
        problems: Every problem found, one line each.
    """

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"Checkpoint {path} cannot be used ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n{lines}\n"
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

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"Invalid options ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}); nothing was started:\n{lines}\n"
            "See `zk0 train --help` and docs/deployment.md."
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
