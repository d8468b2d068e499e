"""The zk0 ServerApp: FedProx over the trainable tensors, server evaluation, records.

Per round (driven by Flower's ``Strategy.start``): the strategy samples clients and
aggregates their replies (:class:`~zk0cli.core.strategy.Zk0FedProx`); then the
``evaluate_fn`` hook evaluates the global model every ``eval.frequency`` rounds, writes
the round's files (:class:`~zk0cli.core.recorder.RunRecorder`) and a checkpoint every
``checkpoint.interval`` rounds and after the last one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from zk0cli import constants as K
from zk0cli.core.config import RunConfig
from zk0cli.core.contract import EVAL, REL_LATEST, ServerRoundRecord
from zk0cli.core.diskfull import RunLogHandler, is_disk_full, run_writes
from zk0cli.core.recorder import RunRecorder
from zk0cli.core.resume import recorded_client_losses, resume_start  # noqa: F401  (re-export)
from zk0cli.core.rounds import EarlyStopper, RoundPolicy, checkpoint_space_needed
from zk0cli.core.rundir import RunDir
from zk0cli.core.server_opt import client_mu, from_federation
from zk0cli.errors import DiskFullError, FederationError
from zk0cli.flower.common import run_config_of
from zk0cli.flower.streaming import streaming_grid
from zk0cli.log import logger

app = ServerApp()
#: Metric Flower's ``evaluate_fn`` result carries: the composite server eval loss.
COMPOSITE_METRIC = EVAL.composite


class EarlyStop(Exception):  # noqa: N818  (control flow, not an error)
    """Raised by :class:`RoundHook` to end Flower's round loop (1.42 has no ``should_stop``).

    Attributes:
        server_round: The run's round after which the federation stops.
    """

    def __init__(self, server_round: int) -> None:
        super().__init__(f"early stop after round {server_round}")
        self.server_round = server_round


class RoundHook:
    """Flower's ``evaluate_fn``: a thin adapter over :class:`~zk0cli.core.rounds.RoundPolicy`.

    Evaluates, records and checkpoints each round as the policy decides; with
    ``federation.early_stop`` it also checkpoints each new best round, records the best
    round in run.json and raises :class:`EarlyStop` once the patience is spent.
    """

    def __init__(self, cfg: RunConfig, rundir: RunDir, evaluator: Any, strategy: Any,
                 recorder: RunRecorder) -> None:
        self.cfg, self.rundir, self.evaluator = cfg, rundir, evaluator
        self.strategy, self.recorder = strategy, recorder
        self.t_last = time.monotonic()
        offset = int(getattr(strategy, "round_offset", 0))
        self.policy = RoundPolicy(cfg, round_offset=offset)
        es = cfg.federation.early_stop
        self.stopper = None
        if es.enabled:  # a resumed run replays the rounds it recorded before
            from zk0cli.core.resume import recorded_composites

            self.stopper = EarlyStopper.replay(
                es.patience, es.min_delta,
                recorded_composites(rundir, up_to=offset) if offset else [])

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Evaluate, record and checkpoint round ``server_round`` (0 = initial model)."""
        from zk0cli.core.transport import from_array_record

        policy = self.policy
        run_round = policy.run_round(server_round)
        if run_round is None:
            return None
        outcome = self.strategy.outcomes.get(run_round)
        aggregated = outcome is not None and outcome.aggregated
        if aggregated:
            self.evaluator.set_global(from_array_record(arrays))
        policy.observe(run_round, aggregated=aggregated, outcome=outcome)
        server_eval = None
        if policy.should_evaluate(run_round):
            from zk0cli.flower.progress import write_phase

            write_phase(self.rundir.server_dir, phase=f"round {run_round} server evaluation",
                        server_round=run_round)
            server_eval = self.evaluator.evaluate()
        closed_loop = self._closed_loop(run_round) if policy.should_roll_out(run_round) else None
        now = time.monotonic()
        record = self.recorder.record_round(run_round, outcome=outcome,
                                            server_eval=server_eval, seconds=now - self.t_last,
                                            closed_loop=closed_loop)
        self.t_last = now
        comp = record.server_composite_eval_loss
        stopper = self.stopper
        improved = stopper is not None and server_eval is not None and \
            stopper.observe(run_round, comp)
        stop = stopper is not None and stopper.should_stop and not policy.is_last(run_round)
        budget = self._privacy(run_round)  # records ε; the reason to stop, if any
        budget = None if policy.is_last(run_round) else budget
        stop = stop or budget is not None
        if policy.should_checkpoint(run_round) or (
                (improved or stop) and run_round > 0 and policy.changed_since_checkpoint):
            self._checkpoint(run_round, record)
        if improved:
            ckpt = self.rundir.checkpoint(run_round)
            self.rundir.update_run(best_round=run_round, best_checkpoint=(
                str(ckpt.relative_to(self.rundir.root)) if ckpt.is_dir() else None))
        policy.check_failures(run_round, outcome)
        if budget is not None:
            logger.info("%s", budget)
            self.rundir.update_run(stop_reason=budget)
            raise EarlyStop(run_round)
        if stop and stopper is not None:
            reason = stopper.reason(run_round)
            logger.info("%s", reason)
            self.rundir.update_run(stop_reason=reason)
            raise EarlyStop(run_round)
        return MetricRecord({COMPOSITE_METRIC: comp}) if comp is not None else None

    def _closed_loop(self, run_round: int) -> dict[str, Any]:
        """Roll the global policy out in the simulator (``eval.closed_loop``); task -> summary."""
        from zk0cli.core.closed_loop import evaluate_bundle, summaries
        from zk0cli.flower.progress import write_phase

        cl = self.cfg.eval.closed_loop
        write_phase(self.rundir.server_dir, phase=f"round {run_round} closed-loop rollouts",
                    server_round=run_round)
        started = time.monotonic()
        results = evaluate_bundle(self.evaluator.bundle, tasks=cl.tasks, episodes=cl.episodes,
                                  seed=cl.seed, max_steps=cl.max_steps, where="The global policy")
        out = summaries(results)
        logger.info("round %s closed loop (%.1f s): %s", run_round, time.monotonic() - started,
                    ", ".join(f"{t} {r['successes']}/{r['episodes']}" for t, r in out.items()))
        return out

    def _privacy(self, run_round: int) -> str | None:
        """Record ε in run.json; the budget-stop reason when the next round would exceed it."""
        priv = getattr(self.strategy, "privacy", None)
        if priv is None:
            return None
        self.rundir.update_run(privacy=priv.summary())
        return priv.budget_stop(run_round)

    def _checkpoint(self, server_round: int, record: ServerRoundRecord | Mapping[str, Any]
                    ) -> None:
        from zk0cli.core.card import build_model_card
        from zk0cli.core.checkpoint import write_checkpoint
        from zk0cli.core.contract import MODEL_CARD, CheckpointMetrics
        from zk0cli.core.policy import save_bundle
        from zk0cli.core.server_opt import save_state

        if not isinstance(record, ServerRoundRecord):
            record = ServerRoundRecord.model_validate(record)
        metrics = CheckpointMetrics.model_validate(
            record.model_dump(include=set(CheckpointMetrics.model_fields)))

        def card(directory: Any) -> None:
            build_model_card(self.rundir.root, checkpoint_round=server_round,
                             checkpoint_dir=directory).save(directory / MODEL_CARD)

        server_opt = getattr(self.strategy, "server_optimizer", None)
        previous = self.rundir.latest_checkpoint()
        privacy = getattr(self.strategy, "privacy", None)

        def save(directory: Path) -> None:
            from zk0cli.core.privacy import save_state as save_privacy

            save_bundle(self.evaluator.bundle, directory)
            save_state(server_opt, directory)  # the server optimizer's state, if any
            save_privacy(privacy, directory)  # the accountant and noise generator, if DP

        try:
            write_checkpoint(self.rundir, server_round, save_policy=save,
                             metrics=metrics, write_card=card,
                             min_free_bytes=checkpoint_space_needed(previous))
        except DiskFullError:  # run.json already says why (core.diskfull.run_writes)
            raise
        except OSError as err:
            kept = previous.name if previous else "none"
            raise FederationError(
                f"could not write the checkpoint of round {server_round} under "
                f"{self.rundir.models_dir} ({err}); the previous checkpoint ({kept}) and "
                f"{REL_LATEST} are intact. Free disk space, then continue with "
                f"`zk0 simulate --resume {self.rundir.root}` (or `zk0 train --resume ...` for a "
                "deployment)."
            ) from err
        self.policy.checkpointed()


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
    from zk0cli.flower.join import JoinCheckError, query_join

    try:
        reports = query_join(grid, cfg, instruction)
    except JoinCheckError as err:
        rundir.update_run(join_check=[r.model_dump() for r in err.reports])
        raise
    rundir.update_run(join_check=[r.model_dump() for r in reports])


def run_server(grid: Grid, cfg: RunConfig, rundir: RunDir, recorder: RunRecorder) -> None:
    """Run the whole federation from the ServerApp.

    Raises:
        FederationError: Too many consecutive rounds without a valid reply, or none at all.
    """
    from zk0cli.core.contract.instruction import encode
    from zk0cli.core.evaluation import ServerEvaluator
    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.privacy import from_run_config as privacy_from_config
    from zk0cli.core.schedules import lr_schedule, mu_schedule
    from zk0cli.core.strategy import Zk0FedProx
    from zk0cli.core.transport import from_array_record, specs_of, to_array_record
    from zk0cli.flower.progress import ProgressGrid, write_progress

    write_progress(rundir.server_dir, phase="building the model and evaluation datasets",
                   server_round=0)
    evaluator = ServerEvaluator.from_config(cfg)
    initial = get_trainable_state(evaluator.bundle.policy)
    start = resume_start(rundir, names=list(initial))
    if start.tensors is not None:
        initial = start.tensors
    fed = cfg.federation
    initial_arrays = to_array_record(initial, transport_dtype=fed.transport_dtype)
    evaluator.set_global(from_array_record(initial_arrays))  # what clients get (bf16-rounded)
    strategy = Zk0FedProx(
        expected=specs_of(initial),
        proximal_mu=client_mu(fed),
        lr_for_round=lr_schedule(cfg),
        mu_for_round=None if fed.strategy == K.STRATEGY_FEDAVG else mu_schedule(cfg),
        steps=cfg.training.steps_per_round,
        fraction_train=fed.fraction_train,
        min_train_nodes=fed.min_clients,
        min_available_nodes=fed.min_clients,
        node_wait_timeout_s=fed.node_wait_timeout_s,
        transport_dtype=fed.transport_dtype,
        round_offset=start.offset,
        prior_losses=start.prior_losses,
        server_optimizer=from_federation(fed),
        privacy=privacy_from_config(cfg),
    )
    if start.checkpoint is not None:
        from zk0cli.core.privacy import load_state as load_privacy
        from zk0cli.core.server_opt import load_state

        load_state(strategy.server_optimizer, start.checkpoint)
        load_privacy(strategy.privacy, start.checkpoint)  # same budget, same noise stream
    train_config = ConfigRecord()
    # Flower's Grid, handing over replies one at a time as they arrive (flat memory in the
    # number of clients) and reporting each one (server/progress.json)
    grid = cast(Grid, ProgressGrid(streaming_grid(grid), rundir.server_dir,
                                   round_offset=start.offset))
    instruction = run_instruction_of(cfg, rundir, evaluator)
    if not instruction.simulation:  # zk0 simulate checked every client before it started
        join_check(grid, cfg, rundir, instruction)
    if cfg.data.stats == "federated":  # merged statistics for clients, evaluation, checkpoints
        from zk0cli.flower.stats import query_stats

        merged = query_stats(grid, cfg, instruction, rundir=rundir)
        if merged is not None:
            evaluator.use_stats(merged)
            instruction = instruction.model_copy(update={"stats": merged})
    train_config = ConfigRecord(encode(instruction))
    if cfg.eval.closed_loop.tasks:  # a policy the simulator cannot drive fails before round 1
        from zk0cli.core.closed_loop import sim_image_size

        sim_image_size(evaluator.bundle, where="The global policy (eval.closed_loop)")
    hook = RoundHook(cfg, rundir, evaluator, strategy, recorder)
    write_progress(rundir.server_dir, phase="round 0 evaluation" if not start.offset else
                   f"resuming after round {start.offset}", server_round=start.offset)
    try:
        strategy.start(grid=grid, initial_arrays=initial_arrays,
                       num_rounds=fed.rounds - start.offset, timeout=fed.round_timeout_s,
                       train_config=train_config, evaluate_fn=hook)
    except EarlyStop as stop:  # recorded by the hook; the run completed
        logger.info("federation stopped early after round %s", stop.server_round)


def _trackers(cfg: RunConfig, rundir: RunDir) -> list[Any]:
    """The experiment trackers ``cfg.tracking`` asks for (:mod:`zk0cli.core.tracking`)."""
    from zk0cli.core.tracking import build_trackers

    return list(build_trackers(cfg, rundir.root))


@app.main()
def main(grid: Grid, context: Context) -> None:
    """ServerApp entry point: marks run.json running, runs, marks completed or failed."""
    import logging

    from zk0cli.log import quiet_libraries

    quiet_libraries()
    cfg, run_dir = run_config_of(dict(context.run_config))
    rundir = RunDir(run_dir)
    handler = RunLogHandler(rundir.server_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("zk0", "flwr"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("zk0").setLevel(cfg.logging.level)
    try:  # every write of the federation: a full disk fails the run with zk0's message
        with run_writes(rundir):
            recorder = RunRecorder(rundir, trackers=_trackers(cfg, rundir))
            recorder.start(engine=rundir.run_record().engine or "deployment",
                           command="flower", seed=cfg.seed, rounds=cfg.federation.rounds)
            try:
                run_server(grid, cfg, rundir, recorder)
            except BaseException as err:
                if is_disk_full(err):  # run_writes records it
                    raise
                recorder.finish("failed", error=f"{type(err).__name__}: {err}")
                logger.exception("federation failed")
                raise
            recorder.finish("completed")
    except DiskFullError as err:  # no traceback for a full disk; run.json says why
        logger.error("federation failed: %s", err)
        raise
