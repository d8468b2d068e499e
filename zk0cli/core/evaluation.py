"""Server-side evaluation of the global model (Flower's ``evaluate_fn``).

The server holds the whole policy. Each evaluation sets the global trainable tensors,
then computes the deterministic policy loss (:func:`zk0cli.core.trainer.evaluate`) on
every held-out dataset it can open: the ``data.eval`` datasets and, where the server
can read them (simulation, shared storage), the held-out episodes of each client's
dataset (named ``heldout/<client dataset>``). Each dataset is normalised with its own
statistics, or, after :meth:`ServerEvaluator.use_stats` (``data.stats = "federated"``),
all of them with the clients' merged statistics. The composite loss is the mean over the
``data.eval`` datasets (over the held-out client episodes when there are no eval datasets).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zk0cli.core.config import RunConfig
from zk0cli.core.contract import ServerEval
from zk0cli.errors import DatasetError
from zk0cli.log import logger

if TYPE_CHECKING:
    import torch

    from zk0cli.core.data import ClientPartition
    from zk0cli.core.policy import PolicyBundle
    from zk0cli.core.trainer import EvalFrames

HELDOUT_PREFIX = "heldout/"


@dataclass
class EvalSet:
    """One dataset the server evaluates on.

    Attributes:
        name: Key in the round file (``<eval dataset>`` or ``heldout/<client dataset>``).
        dataset: The LeRobotDataset (with action chunks).
        bundle: The policy bundle whose preprocessor carries this dataset's statistics
            (shares the policy module with the server bundle).
        composite: Whether it counts in the composite loss.
        frames: Its evaluation frames once decoded (first evaluation), reused every round.
    """

    name: str
    dataset: Any
    bundle: PolicyBundle
    composite: bool
    frames: EvalFrames | None = None


def eval_name(spec_name: str, seed: int | None = None) -> str:
    """Display name of an eval dataset: the task/repo id, with ``@seed`` for sim data."""
    return f"{spec_name}@{seed}" if seed is not None else spec_name


def heldout_set_names(partitions: Sequence[ClientPartition]
                      ) -> list[tuple[ClientPartition, str]]:
    """The clients' held-out sets the server scores, each once, each under its own name.

    ``heldout/<dataset name>``; partitions holding out the same episodes of the same
    dataset (``data.partition = "episodes"``) are one set; distinct datasets that share a
    display name (two sites on the same simulator task with other seeds) get
    ``#<client id>`` so that neither replaces the other in ``server_eval.datasets``.
    Partitions without held-out episodes are left out.
    """
    seen: set[tuple[str, tuple[int, ...]]] = set()
    unique = []
    for part in partitions:
        key = (str(part.ref.root or part.ref.repo_id), tuple(part.heldout_episodes))
        if part.heldout_episodes and key not in seen:
            seen.add(key)
            unique.append(part)
    counts = Counter(p.name for p in unique)
    return [(p, f"{HELDOUT_PREFIX}{p.name}" + (f"#{p.client_id}" if counts[p.name] > 1 else ""))
            for p in unique]


class ServerEvaluator:
    """The server's policy and held-out datasets.

    Args:
        config: The run configuration.
        bundle: The server's policy bundle (its preprocessor carries the reference
            dataset's statistics).
        sets: Datasets to evaluate on.
    """

    def __init__(self, config: RunConfig, bundle: PolicyBundle, sets: list[EvalSet]) -> None:
        self.config = config
        self.bundle = bundle
        self.sets = sets

    @classmethod
    def from_config(cls, config: RunConfig, *, include_client_heldout: bool = True
                    ) -> ServerEvaluator:
        """Build the server policy and open the held-out datasets.

        The policy's features come from the first ``data.eval`` dataset, else the first
        client dataset. Client datasets the server cannot open are skipped with a warning
        (in a real federation they are private).

        Raises:
            DatasetError: The reference dataset cannot be opened.
        """
        from zk0cli.core import data as D
        from zk0cli.core.policy import build_policy

        cfg = config
        ref_spec = cfg.data.reference_spec()
        ref = D.resolve_dataset(ref_spec, cfg.data.sim)
        ref_meta = D.load_metadata(ref)
        ref_map = cfg.data.rename_map_for(ref_spec)
        bundle = build_policy(cfg.model, meta=ref_meta, rename_map=ref_map,
                              stats=D.dataset_stats(ref_meta, ref_map),
                              seed=cfg.seed,
                          allow_missing_cameras=cfg.model.allow_missing_cameras)
        chunk = bundle.policy.config.chunk_size
        sets: list[EvalSet] = []
        for spec in cfg.data.eval:
            r = D.resolve_dataset(spec, cfg.data.sim)
            meta = D.load_metadata(r)
            episodes, skipped = D.usable_episodes(r, meta, skip_bad=cfg.data.skip_bad_episodes)
            ds = D.open_dataset(r, episodes=episodes if skipped else None, chunk_size=chunk,
                                video_backend=cfg.data.video_backend)
            name = eval_name(spec.name, spec.seed if spec.source == "sim" else None)
            sets.append(EvalSet(name, ds, _with_stats(bundle, meta,
                                                      cfg.data.rename_map_for(spec)),
                                composite=True))
        if include_client_heldout and cfg.data.heldout_episodes > 0:
            try:
                partitions = D.client_partitions(cfg)
            except DatasetError as err:
                logger.warning("server cannot read client datasets (%s); skipping their "
                               "held-out episodes", err)
                partitions = []
            for part, label in heldout_set_names(partitions):
                meta = D.load_metadata(part.ref)
                ds = D.open_dataset(part.ref, episodes=part.heldout_episodes, chunk_size=chunk,
                                    video_backend=cfg.data.video_backend)
                rmap = cfg.data.client_rename_map(
                    int(part.client_id) if cfg.data.partition == "dataset" else 0)
                sets.append(EvalSet(label, ds,
                                    _with_stats(bundle, meta, rmap),
                                    composite=not cfg.data.eval))
        return cls(cfg, bundle, sets)

    def use_stats(self, sums_json: str) -> None:
        """Normalise every eval set (and the checkpointed processors) with merged statistics.

        Args:
            sums_json: Merged sufficient statistics (:func:`zk0cli.core.stats.sums_to_json`).
        """
        from dataclasses import replace

        from zk0cli.core.policy import make_processors, rename_map_of
        from zk0cli.core.stats import sums_from_json, to_lerobot_stats

        stats = to_lerobot_stats(sums_from_json(sums_json))
        data = self.config.data
        pre, post = make_processors(self.bundle.policy.config, stats=stats,
                                    rename_map=data.rename_map_for(data.reference_spec()))
        self.bundle = replace(self.bundle, preprocessor=pre, postprocessor=post)
        sets = []
        for s in self.sets:  # each eval set keeps its own rename map
            pre_s, post_s = make_processors(self.bundle.policy.config, stats=stats,
                                            rename_map=rename_map_of(s.bundle))
            sets.append(replace(s, bundle=replace(self.bundle, preprocessor=pre_s,
                                                  postprocessor=post_s)))
        self.sets = sets

    def set_global(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Load the global trainable tensors into the server policy (checked)."""
        from zk0cli.core.policy import set_trainable_state

        set_trainable_state(self.bundle.policy, tensors, source="aggregation")

    def evaluate(self) -> ServerEval:
        """Deterministic policy loss on every eval set.

        Returns:
            The loss per eval set (``datasets``) and the mean over the composite sets.
        """
        from zk0cli.core.trainer import EvalFrames, evaluate

        ec = self.config.eval
        losses = {}
        for s in self.sets:
            if s.frames is None:  # decoded once: every round scores the same frames
                s.frames = EvalFrames.read(s.dataset, batches=ec.batches,
                                           batch_size=ec.batch_size)
            losses[s.name] = evaluate(s.bundle, s.dataset, batches=ec.batches,
                                      batch_size=ec.batch_size, seed=ec.seed, frames=s.frames)
        comp = [losses[s.name] for s in self.sets if s.composite]
        return ServerEval(datasets=losses, composite=statistics.fmean(comp) if comp else None)


def _with_stats(bundle: PolicyBundle, meta: Any, rename_map: dict[str, str]) -> PolicyBundle:
    """A bundle sharing ``bundle.policy``; its processors use ``meta``'s statistics."""
    from dataclasses import replace

    from zk0cli.core import data as D
    from zk0cli.core.policy import make_processors

    pre, post = make_processors(bundle.policy.config,
                                stats=D.dataset_stats(meta, rename_map),
                                rename_map=rename_map)
    return replace(bundle, preprocessor=pre, postprocessor=post)
