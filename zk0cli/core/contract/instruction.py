"""The train instruction: everything a site needs from the coordinator, typed and versioned.

A ClientApp reads nothing from the coordinator's disk. What it needs from the
coordinator travels in Flower messages, encoded and decoded here and nowhere else:

* :class:`RunInstruction` — the settings of the run (seed, model and training settings,
  transport dtype, the policy's expected input features, the merged statistics, and for
  simulated runs the data plan). It travels as one JSON string under
  :data:`~zk0cli.constants.INSTRUCTION_KEY` in the ``config`` ConfigRecord of every
  train and query message the ServerApp sends.
* The round's values (round, lr, steps, mu) travel next to it in the same ConfigRecord,
  under the keys the strategy and Flower's ``FedProx`` already use
  (:data:`~zk0cli.constants.ROUND_KEY`, ``lr``, ``steps``, ``proximal-mu``).
  :func:`decode_train` reads both into a :class:`TrainInstruction`.

Nothing has a silent default on the site: a missing value (e.g. ``proximal-mu``), an
unknown field or an unknown :data:`SCHEMA_VERSION` raises :class:`InstructionError`
naming the field, and the site replies with that failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zk0cli import constants as K
from zk0cli.core.config import DataConfig, ModelConfig, RunConfig, TrainingConfig
from zk0cli.errors import InstructionError

#: Version of the instruction's layout; a site refuses any other.
SCHEMA_VERSION = 1

#: ConfigRecord keys a train message may hold (besides the instruction).
ROUND_FIELDS: dict[str, str] = {  # TrainInstruction field -> ConfigRecord key
    "round": K.ROUND_KEY,
    "lr": K.LR_KEY,
    "steps": K.STEPS_KEY,
    "mu": K.PROXIMAL_MU_KEY,
}
#: Optional round values: sent only when the run uses them (field -> ConfigRecord key).
OPTIONAL_ROUND_FIELDS: dict[str, str] = {"epsilon": K.DP_EPSILON_KEY}
#: Keys Flower itself adds to the train config (read by nobody here).
FLOWER_KEYS: frozenset[str] = frozenset({K.SERVER_ROUND_KEY})


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Record):
    """One input feature of the policy.

    Attributes:
        type: LeRobot's ``FeatureType`` name (``STATE``, ``VISUAL``, ``ENV``...).
        shape: Its shape, ``(D,)`` for state, ``(C, H, W)`` for images.
    """

    type: str
    shape: tuple[int, ...]


class PrivacyInstruction(_Record):
    """The run's differential-privacy settings a site needs (clip, and check its limits).

    Attributes:
        mode: ``privacy.mode`` (``central``; ``off`` is sent as no instruction at all).
        clipping_norm: ``C`` (> 0): the site clips its update to this L2 norm.
        noise_multiplier: ``z`` (>= 0) of the server's noise.
        delta: ``privacy.delta`` in (0, 1) at which epsilon is counted.
    """

    mode: Literal["central"]
    clipping_norm: float = Field(gt=0)
    noise_multiplier: float = Field(ge=0)
    delta: float = Field(gt=0, lt=1)


class RunInstruction(_Record):
    """The run's settings a site needs, sent with every message of the run.

    Attributes:
        schema_version: :data:`SCHEMA_VERSION`.
        seed: The run's seed (data order, noise and time of each round).
        model: The model settings; ``device`` is the coordinator's and a site replaces it
            by its own.
        training: Local training settings; ``num_workers`` is replaced by the site's own.
        heldout_episodes: Episodes at the end of a site's dataset kept out of training.
        skip_bad_episodes: ``data.skip_bad_episodes``: a site drops its episodes with bad
            timestamps or non-finite values (else they refuse it at the join check).
        video_backend: Video decoder (``pyav`` or ``torchcodec``).
        stats_image_frames: Frames per camera sampled for the statistics query.
        transport_dtype: Wire dtype of the tensors a site sends back.
        client_cpus: Torch threads of a simulated client.
        allow_missing_cameras: ``model.allow_missing_cameras`` (the join check's rule).
        input_features: ``{key: FeatureSpec}`` of the policy's observation inputs.
        stats: Merged sufficient statistics (JSON) with ``data.stats = "federated"``,
            ``None`` when every site normalises with its own.
        simulation: The data plan of a simulated run (every client on this machine:
            ``partition-id`` -> ``data.clients`` entry); ``None`` in a deployment.
        num_clients: Clients of a simulated run (with ``simulation``).
        privacy: Differential privacy settings (``None``: the run has none).
    """

    schema_version: Literal[1]
    seed: int = Field(ge=0)
    model: ModelConfig
    training: TrainingConfig
    heldout_episodes: int = Field(ge=0)
    skip_bad_episodes: bool
    video_backend: Literal["pyav", "torchcodec"]
    stats_image_frames: int = Field(ge=0)
    transport_dtype: Literal["bfloat16", "float32"]
    client_cpus: int = Field(ge=1)
    allow_missing_cameras: bool
    input_features: dict[str, FeatureSpec]
    stats: str | None
    simulation: DataConfig | None
    num_clients: int | None = Field(ge=1)
    privacy: PrivacyInstruction | None = None


class TrainInstruction(RunInstruction):
    """A :class:`RunInstruction` plus the values of one round.

    Attributes:
        round: The run's round number (continues across resumes), >= 1.
        lr: Peak learning rate of this round.
        steps: Local optimizer steps.
        mu: FedProx proximal coefficient (0 gives FedAvg), sent by Flower's ``FedProx``.
        epsilon: With differential privacy, epsilon after this round if it is released
            (:data:`~zk0cli.constants.DP_EPSILON_KEY`; ``None`` without DP).
    """

    round: int = Field(ge=1)
    lr: float = Field(gt=0)
    steps: int = Field(ge=1)
    mu: float = Field(ge=0)
    epsilon: float | None = Field(None, ge=0)


def features_of(policy_config: Any) -> dict[str, FeatureSpec]:
    """The observation input features of a LeRobot policy config.

    Args:
        policy_config: A ``SmolVLAConfig`` (``input_features``: ``{key: PolicyFeature}``).

    Returns:
        ``{key: FeatureSpec}`` of its ``observation.*`` inputs.
    """
    return {k: FeatureSpec(type=str(getattr(f.type, "name", f.type)), shape=tuple(f.shape))
            for k, f in policy_config.input_features.items() if k.startswith("observation.")}


def run_instruction(cfg: RunConfig, *, input_features: Mapping[str, FeatureSpec],
                    stats: str | None, simulation: bool) -> RunInstruction:
    """The instruction of a run (server side).

    Args:
        cfg: The validated run configuration (read on the coordinator).
        input_features: The server policy's observation inputs (:func:`features_of`).
        stats: Merged statistics JSON, or ``None``.
        simulation: ``True`` for ``zk0 simulate`` (the data plan travels along).

    Returns:
        The instruction.
    """
    return RunInstruction(
        schema_version=SCHEMA_VERSION, seed=cfg.seed, model=cfg.model, training=cfg.training,
        heldout_episodes=cfg.data.heldout_episodes,
        skip_bad_episodes=cfg.data.skip_bad_episodes, video_backend=cfg.data.video_backend,
        stats_image_frames=cfg.data.stats_image_frames,
        transport_dtype=cfg.federation.transport_dtype,
        client_cpus=cfg.federation.client_cpus,
        allow_missing_cameras=cfg.model.allow_missing_cameras,
        input_features=dict(input_features), stats=stats,
        simulation=cfg.data if simulation else None,
        num_clients=cfg.num_clients if simulation else None,
        privacy=PrivacyInstruction(mode="central", clipping_norm=cfg.privacy.clipping_norm,
                                   noise_multiplier=cfg.privacy.noise_multiplier,
                                   delta=cfg.privacy.delta)
        if cfg.privacy.mode == "central" else None,
    )


def encode(instruction: RunInstruction) -> dict[str, Any]:
    """The ConfigRecord entries carrying ``instruction``.

    Returns:
        ``{INSTRUCTION_KEY: JSON}``, to merge into a train or query ConfigRecord.
    """
    return {K.INSTRUCTION_KEY: instruction.model_dump_json()}


def _field_error(err: ValidationError) -> InstructionError:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(instruction)"
    if first["type"] == "extra_forbidden":
        return InstructionError(field, first.get("input"),
                                "unknown field: this site's zk0 does not know it (the "
                                "coordinator runs a different zk0 version)")
    return InstructionError(field, first.get("input"), first["msg"])


def decode_run(record: Mapping[str, Any]) -> RunInstruction:
    """Read the :class:`RunInstruction` of a train or query message's ConfigRecord.

    Args:
        record: The message's ``config`` ConfigRecord (or any mapping).

    Returns:
        The instruction.

    Raises:
        InstructionError: No instruction, not JSON, another schema version, an unknown or
            missing field, or a value out of range; the error names the field.
    """
    raw = record.get(K.INSTRUCTION_KEY)
    if not isinstance(raw, str):
        raise InstructionError(K.INSTRUCTION_KEY, raw, "the coordinator must send the run's "
                               "instruction (start the federation with zk0)")
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise InstructionError(K.INSTRUCTION_KEY, raw[:80], f"not JSON ({err})") from None
    if not isinstance(data, dict):
        raise InstructionError(K.INSTRUCTION_KEY, raw[:80], "a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InstructionError("schema_version", version,
                               f"this site reads version {SCHEMA_VERSION}; run the same zk0 "
                               "version on the coordinator and the sites")
    try:
        return RunInstruction.model_validate(data)
    except ValidationError as err:
        raise _field_error(err) from None


def decode_train(record: Mapping[str, Any]) -> TrainInstruction:
    """Read a train message's ConfigRecord: the run instruction plus the round's values.

    Args:
        record: The train message's ``config`` ConfigRecord.

    Returns:
        The instruction of this round.

    Raises:
        InstructionError: As :func:`decode_run`; or a round value (``proximal-mu``,
            ``lr``, ``steps``, ``zk0-round``) missing or not a number; or a key that no
            zk0 version sends.
    """
    run = decode_run(record)
    known = {K.INSTRUCTION_KEY, *ROUND_FIELDS.values(), *OPTIONAL_ROUND_FIELDS.values(),
             *FLOWER_KEYS}
    unknown = sorted(set(record) - known)
    if unknown:
        raise InstructionError(unknown[0], record[unknown[0]],
                               f"one of {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for field, key in ROUND_FIELDS.items():
        if key not in record:
            raise InstructionError(key, None, "a number sent by the coordinator every round "
                                   "(no default applies)")
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InstructionError(key, value, "a number")
        values[field] = value
    for field, key in OPTIONAL_ROUND_FIELDS.items():
        if key in record:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InstructionError(key, value, "a number")
            values[field] = value
    try:
        return TrainInstruction.model_validate({**run.model_dump(), **values})
    except ValidationError as err:
        raise _field_error(err) from None
