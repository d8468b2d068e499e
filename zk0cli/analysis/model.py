"""Typed records of a loaded run and of its analysis (pydantic v2).

A run directory, in zk0's format or the upstream zk0 project's, is loaded into a
:class:`RunData` (what the files say, normalised); :func:`zk0cli.analysis.summary.summarize`
turns it into a :class:`Summary` (what ``summary.json`` holds) and the detectors in
:mod:`zk0cli.analysis.findings` into :class:`Finding` items. Losses are the SmolVLA
flow-matching MSE (unitless); ``seconds`` are wall-clock seconds. Non-finite numbers,
stored in the files as the strings ``"nan"``, ``"inf"``, ``"-inf"``, are ``float`` NaN/Inf
here and strings again in ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunFormat = Literal["zk0", "upstream"]
Severity = Literal["error", "warning", "info"]
FindingKind = Literal[
    "client_dropout",
    "no_aggregation",
    "non_finite",
    "zeroed_metric",
    "divergence",
    "stall",
    "outlier_client",
    "history_gap",
    "incomplete_checkpoint",
    "generalization_gap",
]
SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnalyzeRunOptions(_Model):
    """Validated inputs of ``zk0 analyze-run`` (see docs/analyze-run.md).

    Attributes:
        run: Run directory, ``latest`` or a name prefix such as ``outputs/2025-10-17``.
        compare: Another run, in the same forms, to compare with.
        format: Console output: ``text`` (tables), ``md`` (report.md) or ``json``
            (summary.json).
        outputs_root: Folder holding run directories, for ``latest`` and bare prefixes.
        write_report: Write ``report/`` into the run directory.
    """

    run: str = Field(min_length=1)
    compare: str | None = None
    format: Literal["text", "md", "json"] = "text"
    outputs_root: Path = Path("outputs")
    write_report: bool = True


# --- what the files say ----------------------------------------------------------------------


class ClientRecord(_Model):
    """One client's report for one round (an entry of ``individual_client_training_metrics``)."""

    client_id: str
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    dataset_name: str | None = None
    loss: float | None = None
    policy_loss: float | None = None
    fedprox_loss: float | None = None
    grad_norm: float | None = None
    param_update_norm: float | None = None
    num_examples: float | None = None
    num_steps: float | None = None
    lr: float | None = None
    seconds: float | None = None


class RoundRecord(_Model):
    """One federated round, normalised from ``server/round_<N>_server_eval.json``.

    Attributes:
        round: Round number; 0 is the evaluation of the initial model.
        source: File the record came from (``server_eval`` or, when that file is missing,
            a ``federated_metrics`` row).
        aggregated: Whether the server aggregated client updates this round (``None``
            when the file does not say and it cannot be inferred).
        note: The server's note on the round (e.g. why nothing was aggregated).
        eval_datasets: Server eval loss per held-out dataset.
        composite: Server composite eval loss (mean over eval datasets).
        aggregated_metrics: Aggregated client training metrics under zk0's names
            (``loss_avg``, ``policy_loss_avg``, ``param_update_norm_avg``, ``num_clients``...).
        clients: Per-client reports (successful and failed).
        failures: ``{"client_id", "reason"}`` for each client whose round failed.
        closed_loop: Task -> closed-loop rollout numbers (``eval.closed_loop``:
            ``success_rate``, ``ci_low``, ``ci_high``, ``mean_steps_to_success``,
            ``mean_final_distance``, ``episodes``, ``successes``); empty when not rolled out.
    """

    round: int
    source: Literal["server_eval", "federated_metrics"] = "server_eval"
    aggregated: bool | None = None
    note: str | None = None
    proximal_mu: float | None = None
    lr: float | None = None
    seconds: float | None = None
    eval_datasets: dict[str, float | None] = Field(default_factory=dict)
    composite: float | None = None
    aggregated_metrics: dict[str, float | None] = Field(default_factory=dict)
    clients: list[ClientRecord] = Field(default_factory=list)
    failures: list[dict[str, str]] = Field(default_factory=list)
    closed_loop: dict[str, dict[str, float | None]] = Field(default_factory=dict)

    @property
    def ok_clients(self) -> list[ClientRecord]:
        """Clients whose round succeeded."""
        return [c for c in self.clients if c.status == "ok"]


class CheckpointRecord(_Model):
    """One ``models/checkpoint_round_<N>/`` directory and what is wrong with it."""

    round: int
    path: Path
    has_manifest: bool
    problems: list[str] = Field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when the manifest exists and every file matches it."""
        return self.has_manifest and not self.problems


class RunData(_Model):
    """A run directory as loaded: normalised records plus what could not be read.

    Attributes:
        root: Absolute run directory.
        format: ``zk0`` (has ``run.json``) or ``upstream`` (the upstream zk0 project's layout).
        status: ``running``, ``completed``, ``failed``, ``interrupted`` or ``unknown``.
        run_info: ``run.json`` as read (empty when absent).
        config: ``config.json`` as read, or ``None``.
        rounds: One record per round found, ascending.
        policy_loss_history: ``server/policy_loss_history.json`` as round -> loss, or
            ``None`` when the file is absent.
        federated_rounds: Rounds present in ``server/federated_metrics.json`` (``None``
            when absent).
        checkpoints: Checkpoint directories found, ascending.
        latest: Name written in ``models/latest`` (``None`` when absent).
        latest_problem: Why ``models/latest`` is wrong (names a missing directory), if it is.
        notes: Things the reader should know (missing files, format quirks).
        non_finite: ``(file, field, value)`` for every ``"nan"``/``"inf"`` string read.
    """

    root: Path
    format: RunFormat
    status: str = "unknown"
    run_info: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] | None = None
    rounds: list[RoundRecord] = Field(default_factory=list)
    policy_loss_history: dict[int, float | None] | None = None
    federated_rounds: list[int] | None = None
    checkpoints: list[CheckpointRecord] = Field(default_factory=list)
    latest: str | None = None
    latest_problem: str | None = None
    notes: list[str] = Field(default_factory=list)
    non_finite: list[tuple[str, str, str]] = Field(default_factory=list)

    @property
    def training_rounds(self) -> list[RoundRecord]:
        """Rounds >= 1 (round 0 only evaluates the initial model)."""
        return [r for r in self.rounds if r.round >= 1]


# --- what the analysis says ----------------------------------------------------------------


class Finding(_Model):
    """One anomaly, with the rounds it concerns and the evidence for it."""

    kind: FindingKind
    severity: Severity
    message: str
    rounds: list[int] = Field(default_factory=list)
    client_id: str | None = None
    evidence: list[str] = Field(default_factory=list)


class Point(_Model):
    """A value at a round."""

    round: int
    value: float


class LossStats(_Model):
    """First, best (lowest) and last finite value of a loss series."""

    first: Point | None = None
    best: Point | None = None
    last: Point | None = None


class RoundRow(_Model):
    """Per-round line of the summary (the data behind the plots)."""

    round: int
    aggregated: bool | None
    clients: int
    failures: int
    participation_pct: float | None
    composite: float | None
    eval_datasets: dict[str, float | None]
    client_loss_avg: float | None
    client_losses: dict[str, float | None]
    param_update_norm_avg: float | None
    proximal_mu: float | None
    lr: float | None
    seconds: float | None
    closed_loop: dict[str, dict[str, float | None]] = Field(default_factory=dict)


class Summary(_Model):
    """Everything ``summary.json`` holds; see docs/analyze-run.md for the schema."""

    schema_version: int = SCHEMA_VERSION
    run_dir: Path
    run_name: str
    format: RunFormat
    status: str
    status_note: str
    notes: list[str]
    run: dict[str, Any]
    config_highlights: dict[str, Any]
    rounds_planned: int | None
    rounds_completed: int
    expected_clients: list[str]
    participation_pct: float | None
    server_eval: dict[str, LossStats]
    client_loss: LossStats
    param_update_norm: LossStats
    seconds_per_round_mean: float | None
    checkpoints: list[dict[str, Any]]
    latest_checkpoint: str | None
    rounds: list[RoundRow]
    findings: list[Finding]
    comparison: Comparison | None = None
    privacy: dict[str, Any] | None = None  # run.json's privacy (privacy.mode = "central")


class Comparison(_Model):
    """Differences between this run and ``--compare`` OTHER (this minus other)."""

    other_run_dir: Path
    other_run_name: str
    other_status: str
    rounds_completed: tuple[int, int]
    server_eval: dict[str, dict[str, float | None]]
    client_loss_last: tuple[float | None, float | None]
    findings_count: tuple[int, int]
    config_differences: dict[str, tuple[Any, Any]]
    other_rounds: list[RoundRow]
    not_compared: list[str] = Field(default_factory=list)  # what only one run has, once


Summary.model_rebuild()


class RunAnalysis(_Model):
    """Result of :func:`zk0cli.analysis.analyze_run`.

    Attributes:
        summary: The summary (also written to ``report/summary.json``).
        report_dir: ``report/`` inside the run, or ``None`` when nothing was written.
        plots: Plot name -> PNG path (empty when nothing was written).
        plot_series: Plot name -> line label -> ``(rounds, values)`` as drawn.
        markdown: The text of ``report.md``.
    """

    summary: Summary
    report_dir: Path | None = None
    plots: dict[str, Path] = Field(default_factory=dict)
    plot_series: dict[str, dict[str, tuple[list[float], list[float]]]] = Field(
        default_factory=dict
    )
    markdown: str = ""
