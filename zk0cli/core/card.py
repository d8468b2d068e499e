"""The model card (``README.md``) of a zk0 checkpoint, from a Jinja template.

Used by the checkpoint writer (each ``models/checkpoint_round_N/README.md``) and by
``zk0 push --regenerate-card``. The card is built with huggingface_hub's
:class:`~huggingface_hub.ModelCard` and :class:`~huggingface_hub.ModelCardData` from
``zk0cli/core/templates/model_card.md``; every number comes from the run directory
(``config.json``, ``run.json``, ``server/policy_loss_history.json``,
``server/federated_metrics.json``, ``server/round_N_server_eval.json``). Missing files
are tolerated (a run still running has no ``ended_at``, a round may not be evaluated):
the card then says less, it never guesses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zk0cli.core.contract import POLICY_CONFIG_FILE, MetricsRow, RunRecord
from zk0cli.core.rundir import RunDir, read_json

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
CARD_TAGS: tuple[str, ...] = (
    "robotics",
    "lerobot",
    "smolvla",
    "federated-learning",
    "flower",
    "fedprox",
    "so100",
    "so101",
)
LICENSE = "apache-2.0"
LIBRARY_NAME = "lerobot"
PIPELINE_TAG = "robotics"
MODEL_NAME = "smolvla"  # LeRobot's policy type, as LeRobot's own cards name it
HELDOUT_PREFIX = "heldout/"  # = zk0cli.core.evaluation.HELDOUT_PREFIX (not imported: torch)
REPO_PLACEHOLDER = "<user>/<model>"
MAX_EVAL_ROWS = 50  # longer histories are thinned to every k-th round (+ first, best, last)
_VERSION_ORDER = ("zk0", "flwr", "lerobot", "torch", "python")
_MISSING = "–"


@dataclass(frozen=True)
class EvalPoint:
    """Server evaluation of one round.

    Attributes:
        round: Federated round (0 = the initial model).
        loss: Composite server eval policy loss; ``nan`` if it was not finite.
    """

    round: int
    loss: float


def _as_float(value: Any) -> float | None:
    """A JSON number or one of the strings ``"nan"``, ``"inf"``, ``"-inf"``; else ``None``."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value: Any) -> str:
    number = _as_float(value)
    if number is None:
        return _MISSING
    return f"{number:.4g}"


def _read_optional(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def eval_history(run_dir: RunDir, *, up_to_round: int) -> list[EvalPoint]:
    """Server eval loss per evaluated round, ascending, rounds ``<= up_to_round``.

    Reads ``server/policy_loss_history.json``; rounds it lacks are taken from
    ``server/federated_metrics.json`` (``server_policy_loss``).

    Args:
        run_dir: The run directory.
        up_to_round: Last round to include (the checkpoint's round).

    Returns:
        One point per evaluated round.

    Raises:
        RunDirError: A file exists but is not valid JSON.
    """
    from zk0cli.core.rundir import read_metrics_rows, read_policy_loss_history

    losses: dict[int, float] = {}
    for rnd, value in read_policy_loss_history(run_dir).items():
        loss = _as_float(value)
        if rnd >= 0 and loss is not None:
            losses[rnd] = loss
    for row in read_metrics_rows(run_dir):
        loss = _as_float(row.server_policy_loss)
        if loss is not None:
            losses.setdefault(row.round, loss)
    return [EvalPoint(r, losses[r]) for r in sorted(losses) if r <= up_to_round]


def _eval_rows(
    points: list[EvalPoint], metrics_rows: list[MetricsRow]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int]:
    """Rows of the per-round table, the summary (first/best/last) and the thinning step."""
    if not points:
        return [], None, 1
    by_round = {row.round: row for row in metrics_rows}
    finite = [p for p in points if math.isfinite(p.loss)]
    best = min(finite, key=lambda p: p.loss) if finite else points[0]
    first, last = points[0], points[-1]
    step = max(1, math.ceil(len(points) / MAX_EVAL_ROWS))
    keep = {first.round, best.round, last.round}
    chosen = [p for i, p in enumerate(points) if i % step == 0 or p.round in keep]

    def row(p: EvalPoint) -> dict[str, Any]:
        metrics = by_round.get(p.round)
        return {
            "round": p.round,
            "loss": _fmt(p.loss),
            "client_loss": _fmt(metrics.avg_client_loss if metrics else None),
            "clients": metrics.num_clients if metrics else _MISSING,
        }

    summary = {"first": row(first), "best": row(best), "last": row(last)}
    return [row(p) for p in chosen], summary, step


def _clients(config: dict[str, Any]) -> list[dict[str, str]]:
    data = config.get("data") or {}
    specs = [s for s in data.get("clients") or [] if isinstance(s, dict)]
    federation = config.get("federation") or {}
    n = federation.get("num_clients") or len(specs)
    partition = data.get("partition", "dataset")
    out = []
    for i in range(n):
        if partition == "episodes":
            spec = specs[0] if specs else {}
        else:
            spec = specs[i] if i < len(specs) else {}
        name = str(spec.get("name", _MISSING))
        if partition == "episodes":
            name = f"{name} (episodes split {n} ways)"
        source = str(spec.get("source", _MISSING))
        out.append({"client_id": str(i), "dataset": name, "source": source})
    return out


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.count("/") != 1 or name.startswith(("/", ".", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_datasets(config: dict[str, Any]) -> list[str]:
    data = config.get("data") or {}
    names = []
    for spec in data.get("clients") or []:
        name = str(spec.get("name", ""))
        if spec.get("source", "hub") in ("hub", "local") and _is_hub_id(name) and name not in names:
            names.append(name)
    return names


def _composite(config: dict[str, Any], datasets: list[str]) -> tuple[list[str], list[str]]:
    """Which evaluated datasets make up the composite loss, and which do not.

    As :class:`zk0cli.core.evaluation.ServerEvaluator` computes it: the unweighted mean over
    the ``data.eval`` datasets, or over the clients' held-out episodes
    (``heldout/<dataset>``) when there are no eval datasets.
    """
    has_eval = bool((config.get("data") or {}).get("eval"))
    inside = [d for d in datasets if d.startswith(HELDOUT_PREFIX) != has_eval]
    return inside, [d for d in datasets if d not in inside]


def _features(checkpoint_dir: Path | None) -> dict[str, list[dict[str, str]]]:
    """Input and output features (key, type, shape) from the checkpoint's ``config.json``."""
    cfg = _safe_json(checkpoint_dir / POLICY_CONFIG_FILE) if checkpoint_dir else None
    out: dict[str, list[dict[str, str]]] = {"inputs": [], "outputs": []}
    if not isinstance(cfg, dict):
        return out
    for side, key in (("inputs", "input_features"), ("outputs", "output_features")):
        for name, feat in sorted((cfg.get(key) or {}).items()):
            if isinstance(feat, dict):
                shape = "×".join(str(int(d)) for d in feat.get("shape") or [])
                out[side].append({"key": str(name), "type": str(feat.get("type", _MISSING)),
                                  "shape": shape or _MISSING})
    return out


def _safe_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _dataset_facts(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Robot types and task instructions of the client datasets (what can be read locally).

    Simulator datasets are zk0's SO-101 follower with the task's instruction; local and
    cached Hub datasets are read from their ``meta/info.json`` and ``meta/tasks.parquet``.
    Nothing of the dataset's location is returned.
    """
    import os

    robots: list[str] = []
    tasks: list[str] = []

    def add(items: list[str], value: Any) -> None:
        if isinstance(value, str) and value and value not in items:
            items.append(value)

    home = Path(os.environ.get("HF_LEROBOT_HOME", Path.home() / ".cache/huggingface/lerobot"))
    for spec in (config.get("data") or {}).get("clients") or []:
        if not isinstance(spec, dict):
            continue
        if spec.get("source") == "sim":
            from zk0cli.core.sim.recorder import ROBOT_TYPE
            from zk0cli.core.sim.tasks import TASK_INSTRUCTIONS

            add(robots, ROBOT_TYPE)
            for text in _as_list(TASK_INSTRUCTIONS.get(str(spec.get("name")))):
                add(tasks, text)
            continue
        root = Path(spec["root"]) if spec.get("root") else home / str(spec.get("name", ""))
        info = _safe_json(root / "meta" / "info.json")
        if isinstance(info, dict):
            add(robots, info.get("robot_type"))
        for text in _parquet_tasks(root / "meta" / "tasks.parquet"):
            add(tasks, text)
    return robots, tasks


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def _parquet_tasks(path: Path) -> list[str]:
    """Task strings of a LeRobotDataset v3.0 ``meta/tasks.parquet`` (the index or a column)."""
    if not path.is_file():
        return []
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception:  # an unreadable or foreign file: the card says less, never guesses
        return []
    for name in ("task", "__index_level_0__"):
        if name in table.column_names:
            return [str(v) for v in table.column(name).to_pylist()]
    return []


def _base_model_text(model: dict[str, Any]) -> str:
    """The base model as the card shows it: a Hub id, never a local path."""
    path = str(model.get("path") or "")
    if model.get("kind") == "tiny":
        return "zk0 tiny (random init)"
    if _is_hub_id(path):
        return path
    return "a local SmolVLA checkpoint" if path else _MISSING


def _versions(run: RunRecord) -> list[tuple[str, str]]:
    versions = {str(k): str(v) for k, v in run.versions.items()}
    ordered = [(k, versions.pop(k)) for k in _VERSION_ORDER if k in versions]
    return ordered + sorted(versions.items())


def _wandb_url(run: RunRecord) -> str | None:
    """The W&B run page recorded in ``run.json`` when the run was logged online."""
    from zk0cli import constants as K

    wb = run.tracking.get("wandb") or {}
    if wb.get(K.WANDB_MODE) == "online" and wb.get(K.WANDB_URL):
        return str(wb[K.WANDB_URL])
    return None


_PLACEHOLDER_NOTE = ("\n\nReplace `{placeholder}` with the repository this checkpoint was "
                     "pushed to (or a local\nfolder holding it).")


def _privacy_text(config: dict[str, Any], round_eval: Any) -> str:
    """The card's privacy line: ε at δ after the checkpoint's round, or why there is none."""
    priv = config.get("privacy") or {}
    if priv.get("mode") != "central":
        return "none (`privacy.mode = \"off\"`): the weights are not differentially private"
    rec = getattr(round_eval, "privacy", None)
    eps = _as_float(rec.epsilon) if rec is not None else None
    eps_text = "not recorded" if eps is None else (
        "infinite (no noise)" if not math.isfinite(eps) else f"{eps:.3g}")
    return (f"central DP, ε = {eps_text} at δ = {_fmt(priv.get('delta'))} (client-level, "
            f"RDP accountant); clipping norm {_fmt(priv.get('clipping_norm'))}, noise "
            f"multiplier {_fmt(priv.get('noise_multiplier'))}; see zk0's docs/privacy.md")


def _finetuning_text(model: dict[str, Any]) -> str:
    """The card's fine-tuning line: the LoRA settings, or the full action expert."""
    peft = model.get("peft")
    if not peft:
        return "full action expert (no LoRA)"
    targets = peft.get("target_modules")
    where = ("LeRobot's SmolVLA default modules" if targets is None
             else f"modules `{targets}`")
    how = ("FFA-LoRA: A frozen at its seeded initialisation, B trained and averaged "
           "(exact)" if peft.get("aggregation") == "ffa"
           else "A and B trained and averaged separately (naive, biased)")
    return (f"LoRA rank {peft.get('rank')}, alpha {_fmt(peft.get('alpha'))}, dropout "
            f"{_fmt(peft.get('dropout'))}, on {where}; "
            f"{how}; merged into the weights of this checkpoint (the adapter is in "
            "`adapter/`)")


def _closed_loop_rows(rd: RunDir, up_to_round: int) -> tuple[int | None, list[dict[str, str]]]:
    """The newest closed-loop rollouts (``eval.closed_loop``) up to a round, one row per task."""
    from zk0cli.core.rundir import read_metrics_rows

    rows = [r for r in read_metrics_rows(rd) if r.round <= up_to_round and r.closed_loop]
    if not rows:
        return None, []
    last = max(rows, key=lambda r: r.round)
    out = []
    for task, t in (last.closed_loop or {}).items():
        steps = t.mean_steps_to_success
        out.append({
            "task": task, "successes": str(t.successes), "episodes": str(t.episodes),
            "rate": f"{100 * t.success_rate:.0f}%",
            "interval": "n/a" if t.ci_low is None or t.ci_high is None
            else f"{100 * t.ci_low:.0f}–{100 * t.ci_high:.0f}%",
            "steps": "n/a" if steps is None else f"{steps:.0f}",
            "distance": "n/a" if t.mean_final_distance is None
            else f"{100 * t.mean_final_distance:.1f} cm",
        })
    return last.round, out


def with_repo_id(card_text: str, repo_id: str) -> str:
    """A card written at checkpoint time, with the ``<user>/<model>`` placeholder filled in.

    Args:
        card_text: ``README.md`` text from :func:`build_model_card` without a repo id.
        repo_id: The Hub repository the card is pushed to.

    Returns:
        The text with every placeholder replaced and the "Replace ..." note removed.
    """
    note = _PLACEHOLDER_NOTE.format(placeholder=REPO_PLACEHOLDER)
    return card_text.replace(note, "").replace(REPO_PLACEHOLDER, repo_id)


def build_model_card(
    run_dir: Path, *, checkpoint_round: int, repo_id: str | None = None,
    checkpoint_dir: Path | None = None,
) -> ModelCard:
    """Build the model card of the checkpoint of round ``checkpoint_round`` of a run.

    Args:
        run_dir: The run directory (``outputs/<timestamp>``), possibly of a run still
            running; optional files it lacks are left out of the card.
        checkpoint_round: Federated round of the checkpoint (rows of later rounds are
            left out).
        repo_id: Hub repository the card will live in, used in the loading snippet;
            ``None`` writes the placeholder ``<user>/<model>``.
        checkpoint_dir: The checkpoint's policy directory, for the input/output features
            of its ``config.json``; ``None``: ``models/checkpoint_round_<N>`` of the run.

    Returns:
        A :class:`huggingface_hub.ModelCard`; ``str(card)`` is the ``README.md`` text
        (YAML metadata header + markdown body), ``card.save(path)`` writes it.

    Raises:
        RunDirError: A run-directory file exists but is not valid JSON.
    """
    from huggingface_hub import ModelCard, ModelCardData

    rd = RunDir(Path(run_dir).absolute())
    config = dict(_read_optional(rd.config_json) or {})
    from zk0cli.core.rundir import read_metrics_rows, read_server_round

    run = rd.run_record()
    model = config.get("model") or {}
    training = config.get("training") or {}
    federation = config.get("federation") or {}
    data = config.get("data") or {}
    metrics_rows = read_metrics_rows(rd)
    round_eval = read_server_round(rd, checkpoint_round) \
        if rd.server_eval(checkpoint_round).is_file() else None

    base_model = None
    if model.get("kind") == "pretrained" and _is_hub_id(str(model.get("path") or "")):
        base_model = str(model["path"])
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=LICENSE,
        tags=list(CARD_TAGS),
        model_name=MODEL_NAME,
        base_model=base_model,
        datasets=_hub_datasets(config) or None,
    )
    rows, summary, step = _eval_rows(eval_history(rd, up_to_round=checkpoint_round), metrics_rows)
    eval_datasets = sorted(round_eval.server_eval.datasets) \
        if round_eval is not None and round_eval.server_eval is not None else []
    if not eval_datasets:
        eval_datasets = [str(s.get("name")) for s in data.get("eval") or [] if isinstance(s, dict)]
    composite_sets, other_sets = _composite(config, eval_datasets)
    features = _features(checkpoint_dir or rd.checkpoint(checkpoint_round))
    robots, tasks = _dataset_facts(config)
    clients = _clients(config)
    closed_loop_round, closed_loop_rows = _closed_loop_rows(rd, checkpoint_round)
    title_repo = repo_id or "zk0 federated SmolVLA"
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_title=title_repo.split("/")[-1],
        repo_id=repo_id or REPO_PLACEHOLDER,
        checkpoint_round=checkpoint_round,
        rounds_planned=run.rounds_planned or federation.get("rounds"),
        run_status=run.status if rd.run_json.is_file() else None,
        model_kind=model.get("kind"),
        base_model_text=_base_model_text(model),
        num_clients=len(clients) or _MISSING,
        steps_per_round=training.get("steps_per_round", _MISSING),
        batch_size=training.get("batch_size", _MISSING),
        lr=_fmt(training.get("lr")),
        scheduler=training.get("scheduler", _MISSING),
        proximal_mu=_fmt(federation.get("proximal_mu")),
        seed=config.get("seed", _MISSING if run.seed is None else run.seed),
        privacy_text=_privacy_text(config, round_eval),
        finetuning_text=_finetuning_text(model),
        partition=data.get("partition", _MISSING),
        clients=clients,
        eval_datasets=eval_datasets,
        composite_sets=composite_sets,
        other_eval_sets=other_sets,
        input_features=features["inputs"],
        output_features=features["outputs"],
        cameras=[f["key"] for f in features["inputs"] if f["type"] == "VISUAL"],
        robot_types=robots,
        tasks=tasks,
        repo_known=repo_id is not None,
        eval_rows=rows,
        eval_rows_thinned=step > 1,
        eval_rows_step=step,
        first=(summary or {}).get("first"),
        best=(summary or {}).get("best"),
        last=(summary or {}).get("last"),
        versions=_versions(run),
        wandb_url=_wandb_url(run),
        closed_loop_round=closed_loop_round,
        closed_loop_rows=closed_loop_rows,
    )
