"""The zk0 ServerApp: FedProx over the trainable tensors, server evaluation, records.

Per round (driven by Flower's ``Strategy.start``): the strategy samples clients and
aggregates their replies (:class:`~zk0cli.core.strategy.Zk0FedProx`); then the
``evaluate_fn`` hook evaluates the global model every ``eval.frequency`` rounds, writes
the round's files (:class:`~zk0cli.core.recorder.RunRecorder`) and a checkpoint every
``checkpoint.interval`` rounds and after the last one.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from zk0cli.core.config import RunConfig
from zk0cli.core.recorder import RunRecorder
from zk0cli.core.rundir import RunDir
from zk0cli.errors import FederationError
from zk0cli.flower.common import run_config_of
from zk0cli.log import logger

app = ServerApp()


class RoundHook:
    """Flower's ``evaluate_fn``: evaluation, round files and checkpoints for each round."""

    def __init__(self, cfg: RunConfig, rundir: RunDir, evaluator: Any, strategy: Any,
                 recorder: RunRecorder) -> None:
        self.cfg, self.rundir, self.evaluator = cfg, rundir, evaluator
        self.strategy, self.recorder = strategy, recorder
        self.t_last = time.monotonic()
        self.changed_since_checkpoint = False
        self.failed_streak = 0
        self.round_offset = int(getattr(strategy, "round_offset", 0))
        self.aggregated_rounds = 1 if self.round_offset else 0  # a checkpoint aggregated

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Evaluate, record and checkpoint round ``server_round`` (0 = initial model)."""
        from zk0cli.core.transport import from_array_record

        cfg = self.cfg
        if server_round == 0 and self.round_offset > 0:
            return None  # a resumed run: the checkpoint's round is already recorded
        server_round += self.round_offset
        outcome = self.strategy.outcomes.get(server_round)
        if outcome is not None and outcome.aggregated:
            self.evaluator.set_global(from_array_record(arrays))
            self.changed_since_checkpoint = True
            self.aggregated_rounds += 1
            self.failed_streak = 0
        elif server_round > 0:
            self.failed_streak += 1
        last = server_round == cfg.federation.rounds
        server_eval = None
        if server_round % cfg.eval.frequency == 0 or last:
            server_eval = self.evaluator.evaluate()
        now = time.monotonic()
        round_file = self.recorder.record_round(server_round, outcome=outcome,
                                                server_eval=server_eval,
                                                seconds=now - self.t_last)
        self.t_last = now
        if server_round > 0 and self.changed_since_checkpoint and (
            server_round % cfg.checkpoint.interval == 0 or last
        ):
            self._checkpoint(server_round, round_file)
        if self.failed_streak >= cfg.federation.max_failed_rounds:
            raise FederationError(
                f"{self.failed_streak} consecutive rounds without a valid client reply "
                f"(federation.max_failed_rounds = {cfg.federation.max_failed_rounds}); the "
                "last global model is kept. See the failures in server/round_*_server_eval.json."
            )
        if last and self.aggregated_rounds == 0:
            raise FederationError(
                f"no round aggregated a client update in {cfg.federation.rounds} round(s); "
                "every client failed. See the failures in server/round_*_server_eval.json."
            )
        comp = server_eval["composite"] if server_eval else None
        return MetricRecord({"composite": comp}) if comp is not None else None

    def _checkpoint(self, server_round: int, round_file: dict[str, Any]) -> None:
        from zk0cli.core.card import build_model_card
        from zk0cli.core.checkpoint import MODEL_CARD, write_checkpoint
        from zk0cli.core.policy import save_bundle

        metrics = {k: round_file[k] for k in ("round", "server_eval",
                                              "client_aggregated_training_metrics")}

        def card(directory: Any) -> None:
            build_model_card(self.rundir.root, checkpoint_round=server_round).save(
                directory / MODEL_CARD)

        previous = self.rundir.latest_checkpoint()
        need = sum(p.stat().st_size for p in previous.rglob("*") if p.is_file()) \
            if previous else 0
        try:
            write_checkpoint(self.rundir, server_round,
                             save_policy=lambda d: save_bundle(self.evaluator.bundle, d),
                             metrics=metrics, write_card=card, min_free_bytes=need)
        except OSError as err:
            kept = previous.name if previous else "none"
            raise FederationError(
                f"could not write the checkpoint of round {server_round} under "
                f"{self.rundir.models_dir} ({err}); the previous checkpoint ({kept}) and "
                "models/latest are intact. Free disk space, then continue with "
                f"`zk0 simulate --resume {self.rundir.root}` (or `zk0 train --resume ...` for a "
                "deployment)."
            ) from err
        self.changed_since_checkpoint = False


def recorded_client_losses(rundir: RunDir, *, up_to: int) -> dict[int, list[float]]:
    """Round -> aggregated clients' policy losses, from the round files 1..``up_to``."""
    from zk0cli import constants as K
    from zk0cli.core.rundir import read_json

    out: dict[int, list[float]] = {}
    for r in range(1, up_to + 1):
        path = rundir.server_eval(r)
        if path.is_file():
            clients = read_json(path).get("individual_client_training_metrics") or []
            out[r] = [float(c[K.POLICY_LOSS]) for c in clients
                      if isinstance(c.get(K.POLICY_LOSS), int | float)]
    return out


def run_instruction_of(cfg: RunConfig, rundir: RunDir, evaluator: Any) -> Any:
    """The run's train instruction: the config's site settings and the policy's inputs."""
    from zk0cli.core.contract.instruction import features_of, run_instruction

    simulated = str(rundir.read_run().get("engine")) == "simulation"
    return run_instruction(cfg, input_features=features_of(evaluator.bundle.policy.config),
                           stats=None, simulation=simulated)


def join_check(grid: Grid, cfg: RunConfig, rundir: RunDir, instruction: Any) -> None:
    """Ask every site to check its dataset against the policy; record the reports.

    Raises:
        JoinCheckError: Fewer than ``federation.min_clients`` sites passed (run.json's
            ``join_check`` holds the reports; ``zk0 train`` exits 2).
    """
    from zk0cli import constants as K
    from zk0cli.flower.join import JoinCheckError, query_join

    try:
        reports = query_join(grid, cfg, instruction)
    except JoinCheckError as err:
        rundir.update_run(**{K.JOIN_CHECK_FIELD: [r.model_dump() for r in err.reports]})
        raise
    rundir.update_run(**{K.JOIN_CHECK_FIELD: [r.model_dump() for r in reports]})


def run_server(grid: Grid, cfg: RunConfig, rundir: RunDir, recorder: RunRecorder) -> None:
    """Run the whole federation from the ServerApp.

    Raises:
        FederationError: Too many consecutive rounds without a valid reply, or none at all.
    """
    from zk0cli.core.contract.instruction import encode
    from zk0cli.core.evaluation import ServerEvaluator
    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.schedules import lr_schedule, mu_schedule
    from zk0cli.core.strategy import Zk0FedProx
    from zk0cli.core.transport import from_array_record, specs_of, to_array_record

    evaluator = ServerEvaluator.from_config(cfg)
    initial = get_trainable_state(evaluator.bundle.policy)
    resume = rundir.read_run().get("resume") or {}
    offset = int(resume.get("from_round", 0))
    if offset:
        from pathlib import Path

        from zk0cli.core.resume import load_global_tensors

        initial = load_global_tensors(Path(resume["checkpoint"]), list(initial))
        logger.info("resuming after round %s from %s", offset, resume["checkpoint"])
    fed = cfg.federation
    initial_arrays = to_array_record(initial, transport_dtype=fed.transport_dtype)
    evaluator.set_global(from_array_record(initial_arrays))  # what clients get (bf16-rounded)
    strategy = Zk0FedProx(
        expected=specs_of(initial),
        proximal_mu=fed.proximal_mu,
        lr_for_round=lr_schedule(cfg),
        mu_for_round=mu_schedule(cfg),
        steps=cfg.training.steps_per_round,
        fraction_train=fed.fraction_train,
        min_train_nodes=fed.min_clients,
        min_available_nodes=fed.min_clients,
        node_wait_timeout_s=fed.node_wait_timeout_s,
        transport_dtype=fed.transport_dtype,
    )
    strategy.round_offset = offset
    strategy.prior_losses = recorded_client_losses(rundir, up_to=offset)
    instruction = run_instruction_of(cfg, rundir, evaluator)
    if not instruction.simulation:  # zk0 simulate checked every client before it started
        join_check(grid, cfg, rundir, instruction)
    if cfg.data.stats == "federated":  # merged statistics for clients, evaluation, checkpoints
        from zk0cli.flower.stats import query_stats

        merged = query_stats(grid, cfg, instruction)
        if merged is not None:
            evaluator.use_stats(merged)
            instruction = instruction.model_copy(update={"stats": merged})
    train_config = ConfigRecord(encode(instruction))
    hook = RoundHook(cfg, rundir, evaluator, strategy, recorder)
    strategy.start(grid=grid, initial_arrays=initial_arrays,
                   num_rounds=fed.rounds - offset, timeout=fed.round_timeout_s,
                   train_config=train_config, evaluate_fn=hook)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """ServerApp entry point: marks run.json running, runs, marks completed or failed."""
    import logging

    cfg, run_dir = run_config_of(dict(context.run_config))
    rundir = RunDir(run_dir)
    handler = logging.FileHandler(rundir.root / "server.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("zk0", "flwr"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("zk0").setLevel(cfg.logging.level)
    recorder = RunRecorder(rundir)
    recorder.start(engine=str(rundir.read_run().get("engine", "deployment")),
                   command="flower", seed=cfg.seed, rounds=cfg.federation.rounds)
    try:
        run_server(grid, cfg, rundir, recorder)
    except BaseException as err:
        recorder.finish("failed", error=f"{type(err).__name__}: {err}")
        logger.exception("federation failed")
        raise
    recorder.finish("completed")
