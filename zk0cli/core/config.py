"""Validated configuration for every zk0 phase (pydantic v2).

One :class:`RunConfig` drives a run. It is built from a preset or a TOML file, then
``--set section.key=value`` overrides and dedicated flags, and validated once
(:func:`load_config`). Unknown keys are rejected everywhere. Field docs here are the
source of ``docs/configuration.md`` (``scripts/gen_config_docs.py``).
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from zk0cli.errors import ConfigError, FieldProblem, field_problems

SIM_TASKS: tuple[str, ...] = ("lift", "pick_place", "stack", "push", "reach")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class PeftConfig(_Section):
    """LoRA adapters on the policy: only the adapters train, so only they travel.

    Built with the ``peft`` package (``LoraConfig`` + ``get_peft_model``, as LeRobot's own
    ``--peft.method_type=LORA`` does); the target modules default to LeRobot's SmolVLA
    PEFT defaults (the action expert's q/v projections and the state/action projections).
    """

    method: Literal["lora"] = Field("lora", description="PEFT method (LoRA only).")
    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r (LeRobot's default 16).")
    alpha: float = Field(
        16.0, gt=0, le=1e4, allow_inf_nan=False,
        description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] | None = Field(
        None,
        description="Module names (a list of name suffixes, or one regular expression "
        "matched against full module names) that get adapters; None uses LeRobot's "
        "SmolVLA defaults. A suffix matches anywhere, frozen VLM layers included (their "
        "adapters then train): to stay in the action expert, use a regular expression "
        "such as `model\\.vlm_with_expert\\.lm_expert\\..*\\.(q|k|v|o)_proj`.",
    )
    aggregation: Literal["ffa", "naive"] = Field(
        "ffa",
        description="`ffa` (FFA-LoRA, Sun et al. 2024): every A matrix stays frozen at its "
        "seeded initialisation, shared by all sites, and only B trains and travels, so "
        "the average of the B's is exactly the average of the sites' weight updates B·A; "
        "`naive`: A and B both train and are averaged separately (biased: "
        "mean(B)·mean(A) != mean(B·A)); kept for comparison.",
    )

    @field_validator("target_modules")
    @classmethod
    def _check_targets(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a valid regular expression ({err})") from err
            if not value:
                raise ValueError("must not be empty (None uses LeRobot's defaults)")
        elif value is not None and (not value or any(not v for v in value)):
            raise ValueError("a list of non-empty module names is required "
                             "(None uses LeRobot's defaults)")
        return value


class ModelConfig(_Section):
    """Which SmolVLA policy to start from and where to run it."""

    kind: Literal["tiny", "pretrained"] = Field(
        "pretrained",
        description="`tiny`: zk0's offline SmolVLA with a small random VLM (tests, smoke runs); "
        "`pretrained`: load `path` (Hub id or local checkpoint directory).",
    )
    path: str | None = Field(
        "lerobot/smolvla_base",
        description="Hub repo id or local SmolVLA checkpoint directory (kind = pretrained).",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Torch device; `auto` picks cuda when available, else cpu."
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Compute dtype of the forward pass: `bfloat16` runs training and "
        "evaluation forwards under torch.autocast on cuda (weights and optimizer stay "
        "float32); it needs a cuda device.",
    )
    chunk_size: int | None = Field(
        None, ge=1, le=100, description="Action chunk length (frames); None keeps the model's."
    )
    allow_missing_cameras: bool = Field(
        False,
        description="Accept datasets with fewer cameras than the policy expects (SmolVLA "
        "skips absent cameras, e.g. smolvla_base's camera3 with two-camera SO-100 data).",
    )
    freeze_vision_encoder: bool = Field(True, description="SmolVLA default: vision encoder frozen.")
    train_expert_only: bool = Field(
        True, description="SmolVLA default: train the action expert only."
    )
    peft: PeftConfig | None = Field(
        None, description="LoRA fine-tuning (a `[model.peft]` table, or "
        "`--set model.peft.rank=16`); None trains the full action expert. LoRA wants a "
        "larger `training.lr` than full fine-tuning: on the tiny federation 10x (1e-2) "
        "matched the full expert's loss, 1e-3 learned slowly (docs/results.md#lora).")

    @model_validator(mode="before")
    @classmethod
    def _no_default_path_for_tiny(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "tiny" and "path" not in data:
            data = {**data, "path": None}
        return data

    @model_validator(mode="after")
    def _path_for_pretrained(self) -> ModelConfig:
        if self.kind == "pretrained" and not self.path:
            raise ValueError("model.path is required when model.kind = 'pretrained'")
        if self.dtype == "bfloat16" and self.device in ("cpu", "mps"):
            raise ValueError(
                f"model.dtype = 'bfloat16' needs model.device = 'cuda' (or 'auto' on a "
                f"machine with a GPU), got device {self.device!r}; use model.dtype = "
                "'float32' on CPU"
            )
        return self


class DatasetSpec(_Section):
    """One LeRobotDataset: from the Hub, a local root, or zk0's SO-101 simulator."""

    source: Literal["hub", "local", "sim"] = Field(
        "hub", description="`hub`: repo id; `local`: `root` on disk; `sim`: generated by zk0."
    )
    name: str = Field(
        ..., min_length=1, description="Repo id (hub/local) or simulator task (sim)."
    )
    root: Path | None = Field(None, description="Local dataset root (source = local).")
    seed: int = Field(0, ge=0, description="Simulator seed (source = sim).")
    episodes: int | None = Field(
        None, ge=1, description="Episodes to generate (source = sim); None uses data.sim.episodes."
    )
    rename_map: dict[str, str] | None = Field(
        None, description="This dataset's own rename map (dataset key -> policy key), used "
        "instead of data.rename_map for it: a client whose cameras are named differently. "
        "None: data.rename_map."
    )

    @model_validator(mode="after")
    def _check_source(self) -> DatasetSpec:
        if self.source == "local" and self.root is None:
            raise ValueError("root is required when source = 'local'")
        if self.source == "sim" and self.name not in SIM_TASKS:
            raise ValueError(f"name must be a simulator task when source = 'sim': one of "
                             f"{', '.join(SIM_TASKS)}")
        return self


class SimConfig(_Section):
    """Settings of zk0's generated SO-101 datasets (``source = "sim"``)."""

    episodes: int = Field(4, ge=1, le=10_000, description="Episodes per generated dataset.")
    height: int = Field(96, ge=16, le=1080, description="Camera image height (pixels).")
    width: int = Field(128, ge=16, le=1920, description="Camera image width (pixels).")
    only_success: bool = Field(True, description="Keep only episodes the expert solved.")


class DataConfig(_Section):
    """Client datasets, server evaluation datasets and how they are read."""

    clients: list[DatasetSpec] = Field(
        ..., min_length=1, description="Datasets of the clients (one per client, or shared)."
    )
    eval: list[DatasetSpec] = Field(
        default_factory=list, description="Held-out datasets the server evaluates on."
    )
    partition: Literal["dataset", "episodes"] = Field(
        "dataset",
        description="`dataset`: client i trains on clients[i]; `episodes`: the episodes of "
        "clients[0] are split across clients.",
    )
    heldout_episodes: int = Field(
        1, ge=0, description="Last k episodes of each client dataset held out for evaluation."
    )
    skip_bad_episodes: bool = Field(
        False,
        description="Drop episodes whose timestamps drift or whose state/action values are "
        "not finite (instead of refusing the run); their ids are recorded in run.json.",
    )
    rename_map: dict[str, str] = Field(
        default_factory=dict,
        description="Dataset feature key -> policy feature key, e.g. "
        '`"observation.images.top" = "observation.images.camera1"`.',
    )
    video_backend: Literal["pyav", "torchcodec"] = Field(
        "pyav", description="LeRobot video decoder; pyav needs no system FFmpeg."
    )
    stats: Literal["federated", "local"] = Field(
        "federated",
        description="Normalisation statistics: `federated` merges every client's statistics "
        "(count, sums, min/max; never raw data) before round 1 and all clients and the "
        "server use them; `local`: each client and eval dataset uses its own (personalised).",
    )
    stats_image_frames: int = Field(
        64, ge=0, le=100_000,
        description="Frames per client sampled (evenly) for camera statistics; 0 skips them.",
    )
    sim: SimConfig = Field(default_factory=SimConfig)

    def rename_map_for(self, spec: DatasetSpec) -> dict[str, str]:
        """The rename map of one dataset: its own ``rename_map``, else ``data.rename_map``."""
        return dict(spec.rename_map if spec.rename_map is not None else self.rename_map)

    def client_spec(self, index: int) -> DatasetSpec:
        """The dataset entry client ``index`` trains on (``clients[0]`` with ``episodes``)."""
        return self.clients[index] if self.partition == "dataset" else self.clients[0]

    def client_rename_map(self, index: int) -> dict[str, str]:
        """The rename map of client ``index`` (see :meth:`rename_map_for`)."""
        return self.rename_map_for(self.client_spec(index))

    def reference_spec(self) -> DatasetSpec:
        """The dataset the policy's input features come from: ``eval[0]``, else ``clients[0]``."""
        return self.eval[0] if self.eval else self.clients[0]


class TrainingConfig(_Section):
    """Local training on each client in each round (defaults: LeRobot's SmolVLA preset)."""

    steps_per_round: int = Field(20, ge=1, description="Optimizer steps per client per round.")
    batch_size: int = Field(8, ge=1, description="Frames per optimizer step.")
    lr: float = Field(1e-4, gt=0, le=1.0, description="Peak AdamW learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(1e-10, ge=0, description="AdamW weight decay.")
    grad_clip_norm: float = Field(10.0, gt=0, description="Clip the global gradient L2 norm.")
    scheduler: Literal["constant", "cosine"] = Field(
        "cosine", description="LR schedule within a round: constant, or cosine decay to min_lr."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps at the start of a round.")
    min_lr: float = Field(2.5e-6, ge=0, description="Final LR of the cosine schedule.")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must both be in [0, 1)")
        if self.min_lr > self.lr:
            raise ValueError("min_lr must not exceed lr")
        return self


class ScheduleConfig(_Section):
    """Per-round learning rate and FedProx mu, computed by the server each round."""

    lr: Literal["constant", "cosine", "cosine_restarts"] = Field(
        "constant", description="Round LR from training.lr: constant, cosine decay to lr_min "
        "over the rounds, or cosine with warm restarts (SGDR: lr_t0, lr_t_mult)."
    )
    lr_min: float = Field(0.0, ge=0, description="Final/floor LR of the cosine schedules.")
    lr_t0: int = Field(10, ge=1, description="Rounds in the first cosine_restarts cycle.")
    lr_t_mult: int = Field(1, ge=1, description="Cycle length multiplier of cosine_restarts.")
    mu: Literal["constant", "step", "adaptive"] = Field(
        "constant", description="Round mu from federation.proximal_mu: constant, step "
        "(x mu_step_factor at each of mu_step_rounds), or adaptive on the spread of the "
        "clients' policy losses."
    )
    mu_step_rounds: list[int] = Field(
        default_factory=list, description="Rounds at which the step schedule multiplies mu."
    )
    mu_step_factor: float = Field(0.5, gt=0, description="Multiplier of the step schedule.")
    mu_adaptive_threshold: float = Field(
        0.05, gt=0, description="Std of client policy losses above which adaptive mu grows."
    )
    mu_adaptive_factor: float = Field(
        2.0, gt=1, description="Adaptive mu is multiplied (spread high) or divided by this."
    )
    mu_min: float = Field(0.0, ge=0, description="Lower bound of the adaptive mu.")
    mu_max: float = Field(1.0, ge=0, description="Upper bound of the adaptive mu.")

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if any(r < 1 for r in self.mu_step_rounds):
            raise ValueError("mu_step_rounds must be rounds >= 1")
        if self.mu_min > self.mu_max:
            raise ValueError("mu_min must not exceed mu_max")
        return self


class EarlyStopConfig(_Section):
    """Stop the federation when the server's composite held-out loss stops improving."""

    enabled: bool = Field(False, description="Stop early (off by default).")
    patience: int = Field(
        3, ge=1, le=100_000, description="Evaluated rounds in a row without an improvement "
        "of at least min_delta before the run stops."
    )
    min_delta: float = Field(
        0.0, ge=0, description="Improvement of the composite server loss (absolute, in loss "
        "units) that counts as a new best."
    )


class FederationConfig(_Section):
    """Rounds, clients and the FedProx strategy."""

    rounds: int = Field(30, ge=1, le=100_000, description="Federated rounds.")
    num_clients: int | None = Field(
        None, ge=1, description="Clients (SuperNodes); None = one per entry of data.clients."
    )
    fraction_train: float = Field(
        1.0, gt=0, le=1, description="Fraction of connected clients sampled per round."
    )
    min_clients: int = Field(1, ge=1, description="Minimum clients to sample and to aggregate.")
    proximal_mu: float = Field(0.01, ge=0, description="FedProx mu; 0 gives FedAvg.")
    strategy: Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = Field(
        "fedprox", description="Aggregation: `fedprox` (clients' proximal term, weighted "
        "mean), `fedavg` (fedprox with mu = 0), or a server optimizer on the weighted mean "
        "(Reddi et al. 2021): `fedavgm` (server_lr, server_momentum), `fedadam`, `fedyogi`, "
        "`fedadagrad` (server_lr, server_beta_1, server_beta_2, server_tau); clients keep "
        "proximal_mu with the server optimizers.",
    )
    server_lr: float = Field(1.0, gt=0, description="Server learning rate (eta) of the "
                             "server optimizers.")
    server_momentum: float = Field(0.0, ge=0, lt=1, description="FedAvgM server momentum.")
    server_beta_1: float = Field(0.9, ge=0, lt=1, description="FedAdam/FedYogi/FedAdagrad "
                                 "first-moment decay.")
    server_beta_2: float = Field(0.99, ge=0, lt=1, description="FedAdam/FedYogi "
                                 "second-moment decay.")
    server_tau: float = Field(1e-3, gt=0, description="Adaptivity tau of FedAdam/FedYogi/"
                              "FedAdagrad (added to the root of the second moment).")
    round_timeout_s: float = Field(
        1800.0, gt=0, description="Seconds the server waits for replies in one round."
    )
    node_wait_timeout_s: float | None = Field(
        600.0, gt=0, description="Seconds a round waits for min_clients SuperNodes to be "
        "connected; then it trains the connected ones, or with fewer than min_clients is "
        "recorded empty (previous model kept). None waits forever (Flower's default)."
    )
    max_failed_rounds: int = Field(
        3, ge=1, description="End the run as failed after this many consecutive rounds "
        "without a valid client reply."
    )
    max_client_failure_rate: float = Field(
        0.5, ge=0.0, le=1.0, description="End the run as failed (non-zero exit, naming the "
        "clients and reasons) when a client failed in a larger share of the training rounds "
        "than this; below it, the summary lists the failures. 1.0 never fails the run."
    )
    transport_dtype: Literal["bfloat16", "float32"] = Field(
        "bfloat16",
        description="Wire dtype of the trainable tensors. `bfloat16`: values rounded to "
        "bfloat16 and carried losslessly as int16 arrays (half the bytes; the global model "
        "is rounded to bfloat16 every round, aggregation stays in float64); `float32`: exact.",
    )
    early_stop: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    client_cpus: int = Field(1, ge=1, description="CPUs reserved per simulated client.")
    client_gpus: float = Field(0.0, ge=0, description="GPUs reserved per simulated client.")
    max_parallel_clients: int | None = Field(
        None, ge=1, description="Simulated clients training at once; None = as many as the "
        "CPUs allow (CPUs // client_cpus)."
    )
    # --- simulation on an existing Ray cluster (issue #24) ---
    ray_address: str | None = Field(
        None, description="Ray cluster the simulated clients run on: None = a private local "
        "Ray that zk0 starts and stops; `auto` (the cluster `ray start` recorded on this "
        "machine) or `HOST:PORT` (the head node's GCS address) = an existing cluster, left "
        "running; see docs/deployment.md#simulation-on-a-ray-cluster."
    )

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, v: str | None) -> str | None:
        if v is None or v == "auto":
            return v
        host, sep, port = v.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"ray_address must be `auto` or `HOST:PORT` (the head node's "
                             f"address from `ray start --head`), got {v!r}")
        return v.strip()

    @model_validator(mode="after")
    def _ray_cluster_parallelism(self) -> FederationConfig:
        if self.ray_address is not None and self.max_parallel_clients is not None:
            raise ValueError(
                f"max_parallel_clients ({self.max_parallel_clients}) cannot be combined with "
                f"ray_address ({self.ray_address!r}): a running Ray cluster's CPUs are fixed by "
                "its `ray start --num-cpus`; lower the parallelism there or raise "
                "federation.client_cpus")
        return self
    # --- end ray_address ---

    @model_validator(mode="after")
    def _check(self) -> FederationConfig:
        if self.num_clients is not None and self.min_clients > self.num_clients:
            raise ValueError(
                f"min_clients ({self.min_clients}) must be <= num_clients ({self.num_clients}); "
                f"with fewer clients also lower it, e.g. --set federation.min_clients="
                f"{self.num_clients}"
            )
        return self


class ClosedLoopConfig(_Section):
    """Closed-loop rollouts of the global policy in zk0's SO-101 simulator (off by default).

    The server rolls the policy out on seeded layouts no generated training dataset holds and
    records the success rate (Wilson 95 % interval), mean steps to success and mean final
    distance per task. It runs on the server between rounds, which wait for it: measured
    ~0.025 s per control step for the tiny model at 96×128 on a CPU core, i.e. 20–26 s for
    10 failed 90-step reach episodes against ~15 s for a 3-client round of 50 local steps
    (docs/results.md, "Closed-loop evaluation"); raise ``every`` to spread the cost.
    """

    tasks: list[str] = Field(
        default_factory=list, description="Simulator tasks to roll out (e.g. `[\"reach\"]`); "
        "empty: no closed-loop evaluation. The policy's cameras must be the simulator's "
        "(top, wrist).")
    episodes: int = Field(10, ge=1, le=10_000, description="Episodes per task.")
    max_steps: int | None = Field(
        None, ge=1, le=10_000, description="Control steps (1/30 s) per episode; None: the "
        "task's default (90 for reach, 150 for lift, 250 for the others).")
    every: int = Field(
        1, ge=1, description="Roll out every N evaluated rounds (rounds that are multiples of "
        "eval.frequency x every, round 0 included) and after the last round.")
    seed: int = Field(
        0, ge=0, description="Evaluation seed: every rollout round uses the same layouts, "
        "drawn from a seed stream no generated dataset uses.")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in SIM_TASKS]
        if unknown:
            raise ValueError(f"unknown simulator task(s) {', '.join(unknown)}; valid tasks: "
                             f"{', '.join(SIM_TASKS)}")
        return value


class EvalConfig(_Section):
    """Deterministic server-side evaluation."""

    frequency: int = Field(1, ge=1, description="Evaluate every N rounds (and at round 0).")
    batches: int = Field(4, ge=1, description="Batches per evaluated dataset; the "
                         "batches x batch_size frames are evenly spaced over the whole "
                         "dataset (every frame when it is shorter).")
    batch_size: int = Field(8, ge=1, description="Frames per evaluation batch.")
    seed: int = Field(1234, ge=0, description="Seed of the flow-matching noise and time.")
    closed_loop: ClosedLoopConfig = Field(default_factory=ClosedLoopConfig)


class CheckpointConfig(_Section):
    """When checkpoints are written (always after the final round too)."""

    interval: int = Field(5, ge=1, description="Write a checkpoint every N rounds.")


class LoggingConfig(_Section):
    """What zk0 logs."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")


# --- experiment tracking (docs/tracking.md) -----------------------------------------------


class WandbConfig(_Section):
    """Weights & Biases logging (needs `pip install 'zk0cli[tracking]'`)."""

    mode: Literal["disabled", "online", "offline"] = Field(
        "disabled",
        description="`online` logs to the W&B server (falls back to `offline` without "
        "credentials or network); `offline` writes under outputs/<run>/wandb/ for a later "
        "`wandb sync`; `disabled` logs nothing.",
    )
    project: str = Field("zk0", min_length=1, description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (user or team); None: the "
                               "account's default.")
    tags: list[str] = Field(default_factory=list, description="W&B run tags.")


class TrackingConfig(_Section):
    """Experiment trackers fed from the run's records (the run directory stays the source)."""

    tensorboard: bool = Field(
        False, description="Write TensorBoard event files under outputs/<run>/tensorboard/ "
        "(needs `pip install 'zk0cli[tracking]'`).",
    )
    wandb: WandbConfig = Field(default_factory=WandbConfig)


# --- differential privacy (docs/privacy.md) -----------------------------------------------


class PrivacyConfig(_Section):
    """Central differential privacy: clipped client updates, Gaussian noise, an accountant."""

    mode: Literal["off", "central"] = Field(
        "off", description="`central`: each client clips its update to `clipping_norm`, the "
        "server averages the clipped updates with equal weights and adds Gaussian noise of "
        "std `noise_multiplier x clipping_norm / n` (n: clients aggregated); the RDP "
        "accountant records epsilon at `delta` after every round. `off`: no DP.",
    )
    clipping_norm: float = Field(
        1.0, gt=0, description="L2 bound C of one client's update w_local - w_global over "
        "all trainable tensors.")
    noise_multiplier: float = Field(
        1.0, ge=0, description="z: noise std over the sensitivity C of the sum of clipped "
        "updates; 0 adds no noise (epsilon is infinite).")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta at which epsilon is reported.")
    max_epsilon: float | None = Field(
        None, gt=0, description="Privacy budget: the run ends `completed` (with the reason in "
        "run.json's `stop_reason`) before the round whose epsilon would exceed it; None: no "
        "budget stop.")


class SitePrivacyLimits(_Section):
    """Privacy limits a site sets for itself; it refuses to train in a round that breaks one."""

    max_clipping_norm: float | None = Field(
        None, gt=0, description="Largest `privacy.clipping_norm` this site accepts (a set "
        "limit also refuses runs without `privacy.mode = \"central\"`).")
    min_noise_multiplier: float | None = Field(
        None, ge=0, description="Smallest `privacy.noise_multiplier` this site accepts.")
    max_epsilon: float | None = Field(
        None, gt=0, description="Largest epsilon (at the run's delta) this site lets the run "
        "reach: it refuses the round after which epsilon would exceed it.")

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return any(v is not None for v in
                   (self.max_clipping_norm, self.min_noise_multiplier, self.max_epsilon))


class SiteConfig(_Section):
    """A site's own settings for `zk0 train supernode` (`--site-config site.toml`, or flags)."""

    dataset: str = Field(
        ..., min_length=1,
        description="This site's dataset: a Hub repo id (read from the site's cache) or, with "
        "`dataset_root`, its name.",
    )
    dataset_root: Path | None = Field(
        None, description="Local LeRobotDataset v3.0 folder (stays on this machine)."
    )
    rename_map: dict[str, str] = Field(
        default_factory=dict,
        description="This site's dataset key -> policy key, e.g. "
        '`{"observation.images.top" = "observation.images.camera1"}`.',
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Torch device of local training; `auto`: cuda when available."
    )
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    cache_dir: Path | None = Field(
        None,
        description="Cache folder (Hugging Face / LeRobot caches and zk0's own); default: the "
        "site's usual caches (`HF_HOME`, `~/.cache`).",
    )
    client_id: str | None = Field(
        None, description="Name of this site in the run directory (`clients/<id>/`)."
    )
    privacy: SitePrivacyLimits = Field(default_factory=SitePrivacyLimits)


class RunConfig(_Section):
    """The whole configuration of a zk0 run."""

    seed: int = Field(42, ge=0, description="Global seed (model init, sampling, data order).")
    output_root: Path = Field(Path("outputs"), description="Folder holding run directories.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @property
    def num_clients(self) -> int:
        """Number of clients: ``federation.num_clients`` or one per client dataset."""
        return self.federation.num_clients or len(self.data.clients)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        n = self.num_clients
        if self.federation.min_clients > n:
            raise ValueError(
                f"federation.min_clients ({self.federation.min_clients}) must be <= the number "
                f"of clients ({n})"
            )
        if self.data.partition == "dataset" and n > len(self.data.clients):
            raise ValueError(
                f"federation.num_clients ({n}) must be <= len(data.clients) "
                f"({len(self.data.clients)}) with data.partition = 'dataset'; add datasets or "
                "use data.partition = 'episodes'"
            )
        sched = self.schedule
        if sched.lr != "constant" and sched.lr_min > self.training.lr:
            raise ValueError(
                f"schedule.lr_min ({sched.lr_min}) must not exceed training.lr "
                f"({self.training.lr})"
            )
        if sched.mu == "adaptive" and max(self.federation.proximal_mu, sched.mu_min) == 0:
            raise ValueError(
                "schedule.mu = 'adaptive' multiplies mu, so it cannot start at 0: set "
                "federation.proximal_mu > 0 or schedule.mu_min > 0"
            )
        if self.federation.early_stop.enabled and not self.data.eval \
                and self.data.heldout_episodes == 0:
            raise ValueError(
                "federation.early_stop needs a server loss to watch: add data.eval datasets "
                "or set data.heldout_episodes >= 1 (or set federation.early_stop.enabled = "
                "false)"
            )
        if self.model.kind == "tiny" and self.model.dtype != "float32":
            raise ValueError("model.dtype must be 'float32' for the tiny model")
        self._privacy_checks()
        return self

    def _privacy_checks(self) -> None:
        """Combinations that ``privacy.mode = "central"`` cannot support (docs/privacy.md)."""
        if self.privacy.mode != "central":
            return
        if self.federation.min_clients < 2:
            raise ValueError(
                f"privacy.mode = 'central' needs federation.min_clients >= 2 (got "
                f"{self.federation.min_clients}): the noise hides one client's update among "
                "the others, and a round with one client would publish its update plus noise "
                "alone; set --set federation.min_clients=2"
            )
        if self.schedule.mu == "adaptive":
            raise ValueError(
                "privacy.mode = 'central' cannot use schedule.mu = 'adaptive': it changes mu "
                "from the clients' own (un-noised) policy losses, a use of their data the "
                "accountant does not count; use schedule.mu = 'constant' or 'step'"
            )
        if self.data.stats == "federated":
            raise ValueError(
                "privacy.mode = 'central' cannot use data.stats = 'federated': the merged "
                "normalisation statistics come from the sites' data without noise and enter "
                "the released model outside the accountant; use data.stats = 'local'"
            )


# --- loading ------------------------------------------------------------------------------


def validate_config(data: Mapping[str, Any], *, source: str | None = None) -> RunConfig:
    """Validate a configuration mapping.

    Args:
        data: Nested mapping as read from TOML/JSON.
        source: Where it came from, for messages.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: Listing every offending field with dotted path, value and rule.
    """
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(field_problems(err, data=data, model=RunConfig),
                          source=source) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set section.key=value`` override.

    The value is read as a TOML value when it parses as one (``3``, ``1e-4``, ``true``,
    ``[1, 2]``, ``"x"``), else kept as a bare string.

    Returns:
        The key path and the value.

    Raises:
        ConfigError: When there is no ``=`` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            [FieldProblem("--set", text, "expected section.key=value, e.g. training.lr=1e-4")]
        )
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``--set`` overrides applied (see :func:`parse_override`).

    Raises:
        ConfigError: A malformed override, or one that descends into a non-table value.
    """
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    [FieldProblem(".".join(path[: i + 1]), child, "is a value, not a section")]
                )
            node = child
        node[path[-1]] = value
    return out


def load_site_config(path: Path | None, fields: Mapping[str, Any],
                     flag_names: Mapping[str, str] | None = None) -> SiteConfig:
    """A site's settings: the site file (TOML or JSON), then flags given on the command line.

    Args:
        path: The ``--site-config`` file, or ``None``.
        fields: Flag values (``None`` values are ignored).
        flag_names: How each field of ``fields`` is spelled on the command line
            (``{"dataset": "--dataset"}``). A problem with a value given by flag names the
            flag; a missing required field names the flag (and the site file's key when
            there is a site file); a problem with a value from the file names its key.

    Returns:
        The validated settings.

    Raises:
        ConfigError: The file is unreadable, or a field is unknown or invalid (named with
            the value seen and what is accepted).
    """
    data: dict[str, Any] = dict(read_config_file(path, flag="--site-config")) if path else {}
    data.update({k: v for k, v in fields.items() if v is not None})
    names: dict[str, str] = {}
    for key, flag in (flag_names or {}).items():
        if fields.get(key) is not None:
            names[key] = flag
        elif key not in data:
            names[key] = f"{flag} (or {key} in the site file)" if path else flag
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(field_problems(err, data=data, model=SiteConfig, names=names),
                          source=str(path) if path else "flags",
                          hint="Fix the site file or the flags; see the site file section "
                          "of docs/configuration.md.") from None


def read_config_file(path: Path, *, flag: str = "--config") -> dict[str, Any]:
    """Read a TOML (or JSON) configuration file into a mapping.

    Raises:
        ConfigError: The file is missing, unreadable or not valid TOML/JSON (named by
            ``flag``).
    """
    if path.is_dir():
        raise ConfigError([FieldProblem(flag, str(path),
                                        "is a directory; expected a TOML file")])
    if not path.is_file():
        raise ConfigError([FieldProblem(flag, str(path), "file does not exist")])
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return dict(json.loads(text))
        return tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(
            [FieldProblem(flag, str(path), f"not a readable TOML/JSON file ({err})")]
        ) from None


def load_config(
    *,
    preset: str | None = None,
    config_file: Path | None = None,
    base: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build the run configuration: preset or file, then ``--set`` overrides, then flags.

    Args:
        preset: Built-in preset name (``so100`` or ``tiny``); ignored if ``config_file``
            is given. Neither given means ``tiny``.
        config_file: TOML file path.
        base: A configuration mapping to start from (a run's ``config.json`` when
            resuming); used when no ``config_file`` is given.
        overrides: ``section.key=value`` strings, applied in order.
        flags: Dotted-path values from dedicated CLI flags (``federation.rounds``), applied
            last; ``None`` values are skipped.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: For an unknown preset, an unreadable file or any invalid field.
    """
    from zk0cli.core.presets import get_preset

    if config_file is not None:
        data = read_config_file(Path(config_file))
        source = str(config_file)
    elif base is not None:
        data, source = dict(base), "the run's config.json"
    else:
        data = get_preset(preset or "tiny")
        source = f"preset {preset or 'tiny'!r}"
    flag_sets = [f"{k}={json.dumps(v) if isinstance(v, str) else _toml_value(v)}"
                 for k, v in (flags or {}).items() if v is not None]
    data = apply_overrides(data, [*overrides, *flag_sets])
    try:
        return validate_config(data, source=source)
    except ConfigError as err:
        given = {k for k, v in (flags or {}).items() if v is not None}
        set_paths = {o.split("=", 1)[0].strip() for o in overrides}
        def from_set(path: str) -> bool:  # the field, or an item or key under it, was --set
            return any(path == s or path.startswith((s + ".", s + "[")) for s in set_paths)

        if set_paths and all(from_set(p.path) for p in err.problems):  # --set alone
            raise ConfigError(err.problems, source="the --set overrides") from None
        if not given & {p.path for p in err.problems}:
            raise
        problems = [FieldProblem(FLAG_NAMES.get(p.path, p.path), p.value, p.rule)
                    if p.path in given else p for p in err.problems]
        if all(p.path in given for p in err.problems):  # the flags alone are wrong
            raise ConfigError(problems, source="the command-line flags",
                              hint="Fix the flags above; --help lists them.") from None
        raise ConfigError(problems, source=f"{source} and the command-line flags") from None


FLAG_NAMES: dict[str, str] = {"federation.rounds": "--rounds",
                              "federation.num_clients": "--clients"}
"""The dedicated CLI flag of a configuration field, named in errors about its value."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if not isinstance(value, Path) else json.dumps(str(value))


def config_to_json(config: RunConfig) -> str:
    """Serialise a configuration to JSON (the run directory's ``config.json``)."""
    return config.model_dump_json(indent=2)


# --- reference documentation ------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "")
    text = text.replace("zk0cli.core.config.", "")
    return text


def _constraints(field: Any) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"),
                          ("min_length", "min length")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
    return ", ".join(parts)


def render_config_reference() -> str:
    """Markdown reference of every configuration field (``docs/configuration.md``)."""
    from pydantic_core import PydanticUndefined

    lines = [
        "# Configuration reference",
        "",
        "Generated from `zk0cli/core/config.py` by `scripts/gen_config_docs.py`; a test fails",
        "when this file is stale. Set fields in a TOML file (`--config`, see `examples/`) or",
        "with `--set section.key=value`. Unknown keys are rejected.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel]]] = [
        ("(top level)", RunConfig), ("model", ModelConfig),
        ("model.peft", PeftConfig), ("data", DataConfig),
        ("data.clients[] / data.eval[]", DatasetSpec), ("data.sim", SimConfig),
        ("training", TrainingConfig), ("federation", FederationConfig),
        ("federation.early_stop", EarlyStopConfig),
        ("schedule", ScheduleConfig), ("eval", EvalConfig),
        ("eval.closed_loop", ClosedLoopConfig),
        ("checkpoint", CheckpointConfig), ("logging", LoggingConfig),
        ("tracking", TrackingConfig), ("tracking.wandb", WandbConfig),
        ("privacy", PrivacyConfig),
        ("site file (`zk0 train supernode --site-config`)", SiteConfig),
        ("site file: privacy", SitePrivacyLimits),
    ]
    for title, model in sections:
        lines += [f"## `{title}`", "", (model.__doc__ or "").strip().splitlines()[0], "",
                  "| field | type | default | range | meaning |", "|---|---|---|---|---|"]
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                continue  # nested section, documented on its own
            if field.default is PydanticUndefined and field.default_factory is None:
                default = "required"
            elif field.default_factory is not None:
                default = f"`{field.get_default(call_default_factory=True)!r}`"
            else:
                default = f"`{field.default!r}`" if not isinstance(field.default, Path) \
                    else f"`{str(field.default)!r}`"
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | `{_type_name(ann)}` | {default} | "
                         f"{_constraints(field)} | {desc} |")
        lines.append("")
    return "\n".join(lines)
