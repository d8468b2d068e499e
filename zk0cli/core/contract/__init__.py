"""The run contract: every file name of a run directory and a checkpoint, and its records.

This package is the one place that names the run directory's files and folders and the
keys of its JSON records (see ``docs/run-directory.md``, generated from these models)::

    outputs/<YYYY-MM-DD_HH-MM-SS>/
      run.json                            RunRecord (schema_version, status, versions...)
      config.json                         the resolved RunConfig
      server/round_<N>_server_eval.json   ServerRoundRecord
      server/federated_metrics.json       [MetricsRow, ...]
      server/policy_loss_history.json     {"N": server policy loss}
      clients/<client_id>/round_<N>.json  ClientRoundRecord
      models/checkpoint_round_<N>/        LeRobot policy dir + README.md + metrics.json
                                          (CheckpointMetrics) + manifest.json
                                          (CheckpointManifest) [+ adapter/ with LoRA]
      models/latest                       names the newest complete checkpoint
      report/  server.log  logs/  superseded/resume-<k>/

Field names are the ones on disk since zk0's first runs (and the upstream zk0 project's
where it had them), so older runs still read. Records allow unknown keys
(``extra="allow"``): a run written by a newer or older zk0, or by the upstream project,
validates and keeps what it does not know. Writers build a model and dump it; readers
validate into one. Upstream zk0 runs (no ``run.json``) are read through the key aliases
of :data:`UPSTREAM_AGGREGATE_ALIASES` and friends into the same names.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Version of the run directory's record layout, written into ``run.json``. Runs without
#: it were written before it existed (read as version 0, same layout).
SCHEMA_VERSION: Final = 1

# --- run directory: file and folder names ------------------------------------------------
RUN_JSON: Final = "run.json"
CONFIG_JSON: Final = "config.json"
SERVER_DIR: Final = "server"
CLIENTS_DIR: Final = "clients"
MODELS_DIR: Final = "models"
REPORT_DIR: Final = "report"
LOGS_DIR: Final = "logs"
SERVER_LOG: Final = "server.log"
SUPERLINK_LOG: Final = "superlink.log"
SUPERSEDED_DIR: Final = "superseded"
# A SuperNode's state folder (`zk0 train supernode`, on the site's machine): not the run's.
SITE_STATE_FILE: Final = "site.json"  # the validated site settings the ClientApp reads
SUPERNODE_STATE_LOG: Final = "supernode.log"  # the SuperNode's own log
TENSORBOARD_DIR: Final = "tensorboard"  # <run>/tensorboard/: TensorBoard event files
WANDB_DIR: Final = "wandb"  # <run>/wandb/: W&B's local run directories
PROGRESS_FILE: Final = "progress.json"  # server/progress.json: phase and replies of the round
CLI_LOG: Final = "zk0.log"  # logs/zk0.log: what the zk0 command itself logged
SIM_LOG: Final = "zk0-data-sim.log"  # `zk0 data sim --out DIR`: the video encoders' own output
OWNER_LOCK_FILE: Final = ".owner.lock"  # flock'ed by the run's owner process
OWNER_FILE: Final = ".owner.json"  # the owner's pid, start time, host
DISK_RESERVE_FILE: Final = ".disk_reserve"  # freed for the last run.json write on a full disk
RESUME_DIR_PREFIX: Final = "resume-"
FEDERATED_METRICS_JSON: Final = "federated_metrics.json"
POLICY_LOSS_HISTORY_JSON: Final = "policy_loss_history.json"
LATEST: Final = "latest"
CHECKPOINT_PREFIX: Final = "checkpoint_round_"
RUN_NAME_FORMAT: Final = "%Y-%m-%d_%H-%M-%S"
_ROUND_PREFIX: Final = "round_"
_SERVER_EVAL_SUFFIX: Final = "_server_eval.json"
_JSON_SUFFIX: Final = ".json"
#: Glob patterns of the per-round files (relative to ``server/`` and ``clients/``).
SERVER_EVAL_GLOB: Final = f"{_ROUND_PREFIX}*{_SERVER_EVAL_SUFFIX}"
CLIENT_ROUND_GLOB: Final = f"*/{_ROUND_PREFIX}*{_JSON_SUFFIX}"
CHECKPOINT_GLOB: Final = f"{CHECKPOINT_PREFIX}*"
PARTIAL_CHECKPOINT_GLOB: Final = f".{CHECKPOINT_PREFIX}*"  # temporary dirs of a killed write

# --- checkpoint: file names (a LeRobot policy directory plus zk0's files) ----------------
POLICY_CONFIG_FILE: Final = "config.json"  # LeRobot's PreTrainedConfig
WEIGHTS_FILE: Final = "model.safetensors"
PREPROCESSOR_FILE: Final = "policy_preprocessor.json"
POSTPROCESSOR_FILE: Final = "policy_postprocessor.json"
MODEL_CARD: Final = "README.md"
SERVER_OPTIMIZER_FILE: Final = "server_optimizer.safetensors"  # server optimizer state (t, m/, v/)
PRIVACY_STATE_FILE: Final = "privacy_state.json"  # DP accountant ledger + noise generator state
METRICS_JSON: Final = "metrics.json"
#: With ``model.peft``: the LoRA adapter in PEFT's own layout (``adapter_config.json``,
#: ``adapter_model.safetensors``), next to the merged policy; resume reads it.
ADAPTER_DIR: Final = "adapter"
ADAPTER_WEIGHTS_FILE: Final = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE: Final = "adapter_config.json"
MANIFEST_JSON: Final = "manifest.json"
#: Files LeRobot needs to load a policy directory (the processors' normaliser state files,
#: named in their ``state_file`` entries, come on top).
POLICY_FILES: Final = (POLICY_CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE, POSTPROCESSOR_FILE)
#: Key of a processor step naming its state file (LeRobot's processor pipeline JSON).
PROCESSOR_STEPS_KEY: Final = "steps"
PROCESSOR_STATE_FILE_KEY: Final = "state_file"
SAFETENSORS_SUFFIX: Final = ".safetensors"


def server_eval_name(server_round: int) -> str:
    """``round_<N>_server_eval.json``."""
    return f"{_ROUND_PREFIX}{server_round}{_SERVER_EVAL_SUFFIX}"


def client_round_name(server_round: int) -> str:
    """``round_<N>.json`` (inside ``clients/<client_id>/``)."""
    return f"{_ROUND_PREFIX}{server_round}{_JSON_SUFFIX}"


def checkpoint_name(server_round: int) -> str:
    """``checkpoint_round_<N>``."""
    return f"{CHECKPOINT_PREFIX}{server_round}"


def supernode_log_name(index: int) -> str:
    """``supernode_<i>.log`` (inside ``logs/``)."""
    return f"supernode_{index}.log"


def resume_dir_name(k: int) -> str:
    """``resume-<k>`` (inside ``superseded/``): files moved aside by the k-th resume."""
    return f"{RESUME_DIR_PREFIX}{k}"


def rel_server_eval(server_round: int) -> str:
    """``server/round_<N>_server_eval.json`` relative to the run directory (for messages)."""
    return f"{SERVER_DIR}/{server_eval_name(server_round)}"


#: Paths relative to the run directory, for messages.
REL_FEDERATED_METRICS: Final = f"{SERVER_DIR}/{FEDERATED_METRICS_JSON}"
REL_POLICY_LOSS_HISTORY: Final = f"{SERVER_DIR}/{POLICY_LOSS_HISTORY_JSON}"
REL_LATEST: Final = f"{MODELS_DIR}/{LATEST}"
REL_ROUND_FILES: Final = f"{SERVER_DIR}/{SERVER_EVAL_GLOB}"


def _round_between(name: str, prefix: str, suffix: str) -> int | None:
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    middle = name[len(prefix):len(name) - len(suffix)]
    return int(middle) if middle.isdigit() else None


def round_of_server_eval(name: str) -> int | None:
    """The round of a ``round_<N>_server_eval.json`` file name, or ``None``."""
    return _round_between(name, _ROUND_PREFIX, _SERVER_EVAL_SUFFIX)


def round_of_client_file(name: str) -> int | None:
    """The round of a ``round_<N>.json`` file name, or ``None``."""
    return _round_between(name, _ROUND_PREFIX, _JSON_SUFFIX)


def round_of_checkpoint(name: str) -> int | None:
    """The round of a ``checkpoint_round_<N>`` directory name, or ``None``."""
    return _round_between(name, CHECKPOINT_PREFIX, "")


# --- records ------------------------------------------------------------------------------
RunStatus = Literal["running", "completed", "failed", "interrupted"]
RUN_STATUSES: Final[tuple[str, ...]] = ("running", "completed", "failed", "interrupted")
FINAL_STATUSES: Final[tuple[str, ...]] = ("completed", "failed", "interrupted")
ClientStatus = Literal["ok", "failed"]


class _Record(BaseModel):
    """A JSON record of the run directory: known fields typed, unknown keys kept."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def to_json(self) -> dict[str, Any]:
        """The record as written to disk (``None`` kept; non-finite floats stay floats).

        :func:`zk0cli.core.rundir.write_json` turns non-finite floats into strings.
        """
        return self.model_dump()


class ResumeEntry(_Record):
    """One ``zk0 simulate/train --resume`` of a run (an item of ``run.json``'s ``resumes``)."""

    at: float = Field(description="Unix seconds when the resume was prepared.")
    from_round: int = Field(description="Checkpoint round the run continued after.")
    checkpoint: str = Field(description="Name of the checkpoint directory resumed from.")
    previous_status: str | None = Field(None, description="run.json status before the resume.")
    fallback: str | None = Field(
        None, description="Why models/latest was not used (the newest intact checkpoint was).")
    previous_owner: str | None = Field(
        None, description="The dead owner process this resume took over from, if any.")
    config_changes: list[str] = Field(
        default_factory=list, description="Safe configuration changes, `path: old -> new`.")
    superseded_files: int = Field(
        0, description="Round files moved to superseded/resume-<k>/ (rounds that re-run).")


class SkippedEpisodes(_Record):
    """Episodes of one dataset dropped by ``data.skip_bad_episodes`` (``skipped_episodes``)."""

    dataset: str = Field(description="The dataset's name.")
    episodes: list[int] = Field(description="Dropped `episode_index` values, sorted.")
    problems: list[str] = Field(
        default_factory=list, description="`episode N: what is wrong`, one per problem.")


class ResumeFrom(_Record):
    """Where the current (resumed) ServerApp starts (``run.json``'s ``resume``)."""

    from_round: int = Field(description="Rounds already done; the run continues at +1.")
    checkpoint: str = Field(description="Absolute path of the checkpoint directory.")


class RunRecord(_Record):
    """``run.json``: the run's status, versions, seed, engine and timings."""

    schema_version: int = Field(
        SCHEMA_VERSION, description="Layout version of the run directory's records "
        "(0: written before the field existed).")
    status: RunStatus = Field("running", description="State of the run.")
    engine: Literal["simulation", "deployment"] | None = Field(
        None, description="Which Flower runtime ran it.")
    command: str | None = Field(
        None, description="The zk0 command (`simulate`, `train`, `tiny-run`).")
    seed: int | None = Field(None, description="Global seed.")
    versions: dict[str, str] = Field(
        default_factory=dict, description="Library versions: zk0, flwr, lerobot, torch, python.")
    started_at: float | None = Field(None, description="Unix seconds when the run started.")
    ended_at: float | None = Field(None, description="Unix seconds when the run ended.")
    updated_at: float | None = Field(None, description="Unix seconds of the last write.")
    rounds_planned: int | None = Field(None, description="`federation.rounds`.")
    rounds_completed: int = Field(0, description="Last round whose files were written.")
    round_seconds: dict[str, float] = Field(
        default_factory=dict, description="Round (as a string) -> wall seconds (server view).")
    error: str | None = Field(None, description="Why the run failed, if it did.")
    flower_run_id: str | None = Field(
        None, description="Flower's run id (for `flwr ls` / `flwr stop`).")
    parallel_clients: int | None = Field(
        None, description="Simulated clients training at once (simulation).")
    superlink: str | None = Field(
        None, description="`HOST:PORT` of the SuperLink (deployment).")
    tls: bool | None = Field(None, description="Whether the SuperLink connection used TLS.")
    resumes: list[ResumeEntry] = Field(
        default_factory=list, description="One entry per `--resume`.")
    resume: ResumeFrom | None = Field(
        None, description="Where the current (resumed) process started.")
    join_check: list[dict[str, Any]] = Field(
        default_factory=list, description="Deployment: one join report per site before round 1 "
        "(`client_id`, `dataset`, `ok`, `missing`, `extra`, `problems`, `rename_fix`, "
        "`allow_missing_cameras`, `bad_episodes`, `episode_problems`, `skipped_bad_episodes`).")
    skipped_episodes: list[SkippedEpisodes] = Field(
        default_factory=list, description="`data.skip_bad_episodes`: per dataset, the "
        "episodes dropped before round 1 (timestamps off 1/fps or non-finite state/action); "
        "in a deployment each site's are in its `join_check` report.")
    stats_left_out: list[str] = Field(
        default_factory=list, description="`data.stats = \"federated\"`: clients left out "
        "of the merged statistics because theirs were not finite, one line per client.")
    stop_reason: str | None = Field(
        None, description="Why a completed run ended before `rounds_planned` "
        "(`federation.early_stop`); `None` when it ran every round.")
    best_round: int | None = Field(
        None, description="With `federation.early_stop`: the round of the best composite "
        "server loss (0 = the initial model).")
    best_checkpoint: str | None = Field(
        None, description="With `federation.early_stop`: the checkpoint of `best_round` "
        "(`models/checkpoint_round_<N>`), kept next to the final one; `None` for round 0.")
    client_failures: list[str] = Field(
        default_factory=list, description="Clients that failed in some rounds, below "
        "`federation.max_client_failure_rate`: one line per client with its share and reasons.")
    tracking: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Tracker name -> what the tracker recorded "
        "(e.g. the W&B run id, mode and sync command); see docs/tracking.md.")
    # --- Ray cluster of a simulation (issue #24) ---
    ray_cluster: dict[str, Any] | None = Field(
        None, description="Simulation: the Ray the clients ran on, as read before launch: "
        "`address` (`federation.ray_address`; `None` = zk0's private local Ray), total "
        "`cpus` and `gpus`, and `nodes` (`node_id`, `address`, `cpus`, `gpus`, `resources`; "
        "`node_id` is `None` for the private Ray, which did not exist yet).")
    ray_client_nodes: dict[str, list[str]] = Field(
        default_factory=dict, description="Simulation: client id -> the Ray node ids its "
        "training rounds ran on (each client's `ray_node_id` in the round files).")
    # --- end Ray cluster ---
    # --- differential privacy (issue #21) ---
    privacy: dict[str, Any] | None = Field(
        None, description="With `privacy.mode = \"central\"`: `mode`, `clipping_norm`, "
        "`noise_multiplier`, `delta`, `max_epsilon`, `population`, `sample_size`, "
        "`rounds_charged` and `epsilon` after the last recorded round; see docs/privacy.md.")
    # --- end differential privacy ---


def read_run_record(raw: Any) -> RunRecord:
    """Adapter: ``run.json`` as read (any zk0 version) into a :class:`RunRecord`.

    A run written before ``schema_version`` existed reads as version 0.

    Raises:
        pydantic.ValidationError: A known field has a value of the wrong type.
    """
    data = dict(raw) if isinstance(raw, dict) else {}
    data.setdefault(RUN.schema_version, 0)
    return RunRecord.model_validate(data)


class ServerEval(_Record):
    """The server's evaluation of the global model in one round."""

    datasets: dict[str, float | None] = Field(
        default_factory=dict, description="Eval dataset name -> policy loss.")
    composite: float | None = Field(None, description="Mean over the data.eval datasets.")


class ClientMetrics(_Record):
    """What one client reported for a round (an ``individual_client_training_metrics`` entry).

    Unknown metric keys a client sends are kept as extra fields.
    """

    client_id: str = Field(description="The client's id.")
    node_id: int | None = Field(None, description="The Flower node id of its SuperNode.")
    dataset_name: str | None = Field(None, description="Its dataset.")
    loss: float | None = Field(None, description="policy_loss + fedprox_loss, round mean.")
    policy_loss: float | None = Field(None, description="Flow-matching MSE, round mean.")
    fedprox_loss: float | None = Field(None, description="(mu/2)·Σ‖w − w_global‖², round mean.")
    grad_norm: float | None = Field(None, description="Gradient L2 norm before clipping, mean.")
    param_update_norm: float | None = Field(None, description="‖w_end − w_start‖.")
    param_hash: str | None = Field(None, description="SHA-256 of the tensors sent.")
    ray_node_id: str | None = Field(
        None, description="Simulation: the Ray node (hex id) whose actor ran this round.")
    num_steps: int | float | None = Field(None, description="Local optimizer steps.")
    num_examples: int | float | None = Field(None, description="Frames trained on.")
    lr: float | None = Field(None, description="Learning rate of the last local step.")
    seconds: float | None = Field(None, description="Wall seconds of local training.")


class ClientRoundRecord(ClientMetrics):
    """``clients/<client_id>/round_<N>.json``: one client's report plus round and status."""

    round: int = Field(description="The round.")
    status: ClientStatus = Field("ok", description="`ok`, or `failed` with `error`.")
    error: str | None = Field(None, description="Why the client's round failed.")


class FailureRecord(_Record):
    """A client whose round failed (an item of a round file's ``failures``)."""

    client_id: str = Field(description="The client's id.")
    node_id: int | None = Field(None, description="The Flower node id.")
    reason: str = Field("", description="Why its reply was excluded.")


class RoundPrivacy(_Record):
    """What the server's differential-privacy step did in one round (``privacy.mode = central``)."""

    epsilon: float | None = Field(
        None, description="Epsilon at `delta` after this round (RDP accountant; unchanged "
        "when the round released nothing).")
    delta: float | None = Field(None, description="`privacy.delta`.")
    clipping_norm: float | None = Field(None, description="`privacy.clipping_norm` C.")
    noise_multiplier: float | None = Field(None, description="`privacy.noise_multiplier` z.")
    noise_std: float | None = Field(
        None, description="Std z·C/n of the noise added to the mean (null: nothing released).")
    clients: int | None = Field(None, description="n, clipped updates averaged.")
    sample_size: int | None = Field(None, description="Clients sampled (the accountant's event).")
    population: int | None = Field(None, description="Clients of the run (sampling rate "
                                   "= sample_size / population).")
    server_clipped: int | None = Field(
        None, description="Replies the server had to scale down to C (bf16 rounding, or a "
        "site that did not clip).")


class ClosedLoopTask(_Record):
    """Closed-loop rollouts of the global model on one simulator task (``eval.closed_loop``)."""

    episodes: int = Field(description="Episodes rolled out.")
    successes: int = Field(description="Episodes solved within `max_steps`.")
    success_rate: float = Field(description="successes / episodes.")
    ci_low: float | None = Field(None, description="Wilson 95 % interval, lower end.")
    ci_high: float | None = Field(None, description="Wilson 95 % interval, upper end.")
    mean_steps_to_success: float | None = Field(
        None, description="Mean control steps (1/30 s) of the solved episodes; null: none.")
    mean_final_distance: float | None = Field(
        None, description="Mean distance from solved at the episodes' end (m).")
    max_steps: int | None = Field(None, description="Control steps per episode (horizon).")
    seconds: float | None = Field(None, description="Wall seconds of the task's rollouts.")


class ServerRoundRecord(_Record):
    """``server/round_<N>_server_eval.json``: the server's view of round N (0 = initial)."""

    round: int = Field(description="The round; 0 holds the evaluation of the initial model.")
    aggregated: bool = Field(False, description="Whether a new global model came out.")
    note: str | None = Field(None, description="Why the round did not aggregate.")
    proximal_mu: float | None = Field(None, description="The mu sent to clients.")
    lr: float | None = Field(None, description="The peak learning rate sent to clients.")
    seconds: float | None = Field(None, description="Wall seconds of the round (server).")
    timestamp: float | None = Field(None, description="Unix seconds when written.")
    server_eval: ServerEval | None = Field(None, description="null when not evaluated.")
    server_composite_eval_loss: float | None = Field(
        None, description="Upstream key, the same value as server_eval.composite.")
    client_aggregated_training_metrics: dict[str, Any] | None = Field(
        None, description="num_clients, num_failures, num_examples, <metric>_avg/_std.")
    individual_client_training_metrics: list[ClientMetrics] = Field(
        default_factory=list, description="One entry per aggregated client.")
    failures: list[FailureRecord] = Field(
        default_factory=list, description="Clients whose round failed.")
    privacy: RoundPrivacy | None = Field(
        None, description="Differential privacy of the round (null without privacy.mode = "
        "central).")
    closed_loop: dict[str, ClosedLoopTask] | None = Field(
        None, description="Task -> closed-loop rollouts of the global model "
        "(`eval.closed_loop`); null when not rolled out this round.")


class MetricsRow(_Record):
    """One row of ``server/federated_metrics.json`` (one per round, round 0 included)."""

    round: int = Field(description="The round.")
    aggregated: bool = Field(False, description="Whether the round aggregated.")
    num_clients: int = Field(0, description="Clients aggregated.")
    num_failures: int = Field(0, description="Clients whose round failed.")
    avg_client_loss: float | None = Field(None, description="Mean client loss.")
    avg_policy_loss: float | None = Field(None, description="Mean client policy loss.")
    avg_fedprox_loss: float | None = Field(None, description="Mean client proximal term.")
    avg_grad_norm: float | None = Field(None, description="Mean client gradient norm.")
    avg_param_update_norm: float | None = Field(None, description="Mean client update norm.")
    server_policy_loss: float | None = Field(None, description="Composite server eval loss.")
    proximal_mu: float | None = Field(None, description="The mu of the round.")
    lr: float | None = Field(None, description="The peak lr of the round.")
    seconds: float | None = Field(None, description="Wall seconds of the round.")
    closed_loop: dict[str, ClosedLoopTask] | None = Field(
        None, description="Task -> closed-loop rollouts (as in the round file); null when "
        "not rolled out.")


class ManifestEntry(_Record):
    """One file of a checkpoint, as listed in ``manifest.json``."""

    size: int = Field(description="Size in bytes.")
    sha256: str = Field(description="Hex SHA-256 of the bytes.")


class CheckpointManifest(_Record):
    """``models/checkpoint_round_<N>/manifest.json``: every file but the manifest, hashed."""

    round: int = Field(description="Round of the saved global model.")
    created_at: float | None = Field(None, description="Unix seconds when written.")
    files: dict[str, ManifestEntry] = Field(
        default_factory=dict, description="Relative `/`-separated path -> size and SHA-256.")


class CheckpointMetrics(_Record):
    """``models/checkpoint_round_<N>/metrics.json``: the round's numbers."""

    round: int = Field(description="Round of the checkpoint.")
    server_eval: ServerEval | None = Field(None, description="Server eval of that round.")
    client_aggregated_training_metrics: dict[str, Any] | None = Field(
        None, description="Aggregated client training metrics of that round.")
    closed_loop: dict[str, ClosedLoopTask] | None = Field(
        None, description="Closed-loop rollouts of that round (`eval.closed_loop`), per task.")


# --- field names, for readers of raw (possibly upstream) files ------------------------------


class _FieldNames:
    """Attribute access to a model's field names: ``RUN.status == "status"``."""

    def __init__(self, model: type[BaseModel]) -> None:
        for name in model.model_fields:
            setattr(self, name, name)

    def __getattr__(self, name: str) -> str:  # only reached for names that are not fields
        raise AttributeError(f"no record field {name!r}")


RUN: Any = _FieldNames(RunRecord)
CLOSED_LOOP: Any = _FieldNames(ClosedLoopTask)
ROUND: Any = _FieldNames(ServerRoundRecord)
CLIENT: Any = _FieldNames(ClientRoundRecord)
FAILURE: Any = _FieldNames(FailureRecord)
EVAL: Any = _FieldNames(ServerEval)
ROW: Any = _FieldNames(MetricsRow)
MANIFEST: Any = _FieldNames(CheckpointManifest)
ENTRY: Any = _FieldNames(ManifestEntry)

# Aggregated client metrics: ``num_clients``, ``num_failures``, ``num_examples`` and
# ``<metric>_avg`` / ``<metric>_std`` for each metric (zk0cli.core.strategy).
AGG_NUM_CLIENTS: Final = "num_clients"
AGG_NUM_FAILURES: Final = "num_failures"
AGG_NUM_EXAMPLES: Final = "num_examples"
AVG_SUFFIX: Final = "_avg"
STD_SUFFIX: Final = "_std"


def avg_key(metric: str) -> str:
    """``<metric>_avg``: the unweighted client mean of a metric in the aggregate."""
    return f"{metric}{AVG_SUFFIX}"


def std_key(metric: str) -> str:
    """``<metric>_std``: the population standard deviation of a metric in the aggregate."""
    return f"{metric}{STD_SUFFIX}"


# --- adapters: upstream zk0 and older zk0 keys -> these names ------------------------------
#: Aggregated-metric keys of the upstream project and of ``federated_metrics.json`` rows.
UPSTREAM_AGGREGATE_ALIASES: Final = {
    ROW.avg_client_loss: "loss_avg", "std_client_loss": "loss_std",
    ROW.avg_policy_loss: "policy_loss_avg", "avg_client_policy_loss": "policy_loss_avg",
    ROW.avg_fedprox_loss: "fedprox_loss_avg", "avg_client_proximal_loss": "fedprox_loss_avg",
    ROW.avg_grad_norm: "grad_norm_avg", "avg_client_grad_norm": "grad_norm_avg",
    ROW.avg_param_update_norm: "param_update_norm_avg",
    "param_update_norm": "param_update_norm_avg",
}
#: Upstream: a client's id key when ``client_id`` is absent.
UPSTREAM_CLIENT_ID: Final = "cid"
#: Upstream: per-dataset server eval as a list of ``{dataset_name | evaldata_id, loss}``.
UPSTREAM_PER_DATASET_EVAL: Final = "server_per_dataset_eval_results"
UPSTREAM_EVALDATA_ID: Final = "evaldata_id"
#: Upstream: mu / lr stored in the aggregated metrics instead of the round file.
UPSTREAM_DIAGNOSIS_MU: Final = "diagnosis_mu"
UPSTREAM_DIAGNOSIS_LR: Final = "diagnosis_lr"
#: Upstream: ``policy_loss_history.json`` values may be ``{"server_policy_loss": x, ...}``.
UPSTREAM_HISTORY_LOSS: Final = ROW.server_policy_loss
#: Older zk0 clients marked a failure with ``failed`` = 1.
LEGACY_FAILED: Final = "failed"


# --- the reference tables of docs/run-directory.md -----------------------------------------
#: The records documented, with the file each one is.
DOCUMENTED_RECORDS: Final[tuple[tuple[str, type[BaseModel]], ...]] = (
    (RUN_JSON, RunRecord),
    (f"{RUN_JSON}: resumes[]", ResumeEntry),
    (f"{RUN_JSON}: resume", ResumeFrom),
    (f"{RUN_JSON}: skipped_episodes[]", SkippedEpisodes),
    (f"{SERVER_DIR}/{server_eval_name(0).replace('0', '<N>', 1)}", ServerRoundRecord),
    (f"{SERVER_DIR}/...: server_eval", ServerEval),
    (f"{SERVER_DIR}/...: individual_client_training_metrics[]", ClientMetrics),
    (f"{SERVER_DIR}/...: failures[]", FailureRecord),
    (f"{SERVER_DIR}/...: privacy", RoundPrivacy),
    (f"{SERVER_DIR}/...: closed_loop{{task}}", ClosedLoopTask),
    (f"{SERVER_DIR}/{FEDERATED_METRICS_JSON}: one row per round", MetricsRow),
    (f"{CLIENTS_DIR}/<client_id>/{client_round_name(0).replace('0', '<N>', 1)}",
     ClientRoundRecord),
    (f"{MODELS_DIR}/{CHECKPOINT_PREFIX}<N>/{MANIFEST_JSON}", CheckpointManifest),
    (f"{MODELS_DIR}/{CHECKPOINT_PREFIX}<N>/{MANIFEST_JSON}: files{{}}", ManifestEntry),
    (f"{MODELS_DIR}/{CHECKPOINT_PREFIX}<N>/{METRICS_JSON}", CheckpointMetrics),
)
DOC_BEGIN: Final = "<!-- BEGIN GENERATED: record fields (scripts/gen_run_dir_docs.py) -->"
DOC_END: Final = "<!-- END GENERATED: record fields -->"


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    if text is None:
        text = str(annotation).replace("typing.", "")
    for prefix in ("zk0cli.core.contract.", "<class '", "'>"):
        text = text.replace(prefix, "")
    return text


def render_record_tables() -> str:
    """Markdown tables of every record's fields (the generated part of run-directory.md)."""
    from pydantic_core import PydanticUndefined

    lines = [DOC_BEGIN, "",
             f"Generated from `zk0cli/core/contract/__init__.py` (schema version "
             f"{SCHEMA_VERSION}); a test fails when it is stale. Records keep keys they do "
             "not know.", ""]
    for title, model in DOCUMENTED_RECORDS:
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines += [f"### `{title}`", "", doc, "", "| key | type | default | meaning |",
                  "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            if info.default is PydanticUndefined and info.default_factory is None:
                default = "required"
            else:
                default = f"`{info.get_default(call_default_factory=True)!r}`"
            desc = (info.description or "").replace("|", "\\|")
            ann = _type_text(info.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | `{ann}` | {default} | {desc} |")
        lines.append("")
    lines.append(DOC_END)
    return "\n".join(lines)
