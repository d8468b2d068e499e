"""A site's own side of a federation: its dataset check and the join check.

* :func:`check_site` runs on the site before its SuperNode connects: the dataset exists,
  is a LeRobotDataset v3.0 with episodes and readable features, and the site's rename map
  names keys the dataset has.
* :func:`join_report` compares a dataset's observation keys, after the site's rename map,
  with the policy's input features the coordinator sent (``query.join``, and ``zk0
  simulate`` for every client before any process starts). The report names what is
  missing and extra and the lines that fix it: rename-map lines for the site file, or
  ``model.allow_missing_cameras`` on the coordinator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from zk0cli.core.config import SiteConfig
from zk0cli.errors import ConfigError, DatasetError, FieldProblem

if TYPE_CHECKING:
    from zk0cli.core.checks import EpisodeProblem
    from zk0cli.core.contract.instruction import FeatureSpec
    from zk0cli.core.data import DatasetRef

IMAGE_PREFIX = "observation.images."
OBS_PREFIX = "observation."


class JoinReport(BaseModel):
    """One site's answer to the join check.

    Attributes:
        client_id: The site's name in the run.
        dataset: The site's dataset name.
        ok: The site can train this policy.
        missing: Policy input keys the dataset lacks (after the site's rename map).
        extra: Dataset observation keys the policy does not declare (after renaming).
        problems: Other reasons it cannot join (shape of the state, unreadable dataset).
        rename_fix: Site-file rename-map lines (``dataset key -> policy key``) that fix it.
        allow_missing_cameras: ``model.allow_missing_cameras = true`` would let it join.
        bad_episodes: Episode ids whose timestamps are not spaced ``1 / fps`` or whose
            state/action values are not finite (:func:`zk0cli.core.checks.check_dataset`).
        episode_problems: ``episode N: what is wrong``, one per problem of those episodes.
        skipped_bad_episodes: The site trains without ``bad_episodes``
            (``data.skip_bad_episodes``); otherwise they refuse it.
    """

    model_config = ConfigDict(extra="forbid")

    client_id: str
    dataset: str
    ok: bool
    missing: list[str] = []
    extra: list[str] = []
    problems: list[str] = []
    rename_fix: dict[str, str] = {}
    allow_missing_cameras: bool = False
    bad_episodes: list[int] = []
    episode_problems: list[str] = []
    skipped_bad_episodes: bool = False

    def describe(self) -> str:
        """A few lines for the coordinator's console, naming the fix."""
        head = f"site {self.client_id} ({self.dataset}): " + ("ok" if self.ok else "REFUSED")
        lines = [head]
        if self.missing:
            lines.append(f"  missing: {', '.join(self.missing)}")
        if self.extra:
            lines.append(f"  extra:   {', '.join(self.extra)}")
        lines += [f"  {p}" for p in self.problems]
        if self.bad_episodes:
            what = "skipped (data.skip_bad_episodes)" if self.skipped_bad_episodes else \
                "refused"
            lines.append(f"  {len(self.bad_episodes)} bad episode(s) {self.bad_episodes} "
                         f"{what}:")
            lines += [f"    {p}" for p in self.episode_problems[:20]]
            if not self.skipped_bad_episodes:
                lines.append("  fix: re-record these episodes at the site, or set "
                             "data.skip_bad_episodes = true on the coordinator")
        if self.rename_fix:
            lines.append("  fix: add to the site's rename map (site file [rename_map]):")
            lines += [f'    "{k}" = "{v}"' for k, v in self.rename_fix.items()]
        if self.allow_missing_cameras:
            lines.append("  fix: set model.allow_missing_cameras = true on the coordinator "
                         "(SmolVLA skips absent cameras)")
        return "\n".join(lines)


def dataset_ref(site: SiteConfig) -> DatasetRef:
    """Where the site's dataset lives (local root, or the Hub cache for a repo id)."""
    from zk0cli.core.data import DatasetRef

    root = Path(site.dataset_root).expanduser().absolute() if site.dataset_root else None
    return DatasetRef(name=site.dataset, repo_id=site.dataset, root=root)


def check_site(site: SiteConfig) -> Any:
    """Check a site's dataset and rename map before its SuperNode connects.

    Args:
        site: The site's settings.

    Returns:
        The dataset's LeRobot metadata.

    Raises:
        DatasetError: The dataset is missing, not v3.0, has no episodes or unreadable
            features (the message names the dataset and the fix).
        ConfigError: ``rename_map`` names a key the dataset does not have.
    """
    from zk0cli.core.data import load_metadata
    from zk0cli.core.policy import policy_features_from_dataset

    ref = dataset_ref(site)
    try:
        meta = load_metadata(ref)
    except DatasetError as err:  # name the site's own field, not the coordinator's
        raise DatasetError(str(err).replace("data.clients[].root", "the site's dataset_root "
                                            "(--dataset-root)")) from None
    try:
        features = policy_features_from_dataset(meta, {})
    except Exception as err:  # noqa: BLE001 - LeRobot raises several types here
        raise DatasetError(f"Dataset {ref.name!r}: its features cannot be read "
                           f"({type(err).__name__}: {err}).") from None
    if not any(k.startswith(OBS_PREFIX) for k in features):
        raise DatasetError(f"Dataset {ref.name!r} has no observation.* features (it has "
                           f"{', '.join(sorted(features)) or 'none'}); zk0 needs a state and "
                           "at least one camera.")
    unknown = sorted(set(site.rename_map) - set(features))
    if unknown:
        raise ConfigError([FieldProblem(
            f"rename_map.{unknown[0]}", site.rename_map[unknown[0]],
            f"the dataset has no key {unknown[0]!r}; its keys are "
            f"{', '.join(sorted(features))}")], source="site settings")
    return meta


def join_report(client_id: str, dataset: str, dataset_keys: Mapping[str, tuple[int, ...]],
                rename_map: Mapping[str, str], expected: Mapping[str, FeatureSpec], *,
                allow_missing_cameras: bool) -> JoinReport:
    """Compare a dataset's observations, after the rename map, with the policy's inputs.

    Images may differ in size (SmolVLA resizes them); the state shape must match.

    Args:
        client_id: The site.
        dataset: Its dataset name.
        dataset_keys: ``{dataset key: shape}`` of the dataset's policy features, before
            renaming (e.g. from :func:`~zk0cli.core.policy.policy_features_from_dataset`
            with an empty map).
        rename_map: The site's dataset key -> policy key.
        expected: The policy's observation inputs (from the train instruction).
        allow_missing_cameras: The coordinator's ``model.allow_missing_cameras``.

    Returns:
        The report; ``ok`` is ``False`` when the site would fail or train on other inputs.
    """
    renamed = {rename_map.get(k, k): (k, tuple(s)) for k, s in dataset_keys.items()
               if rename_map.get(k, k).startswith(OBS_PREFIX)}
    want = {k for k in expected if k.startswith(OBS_PREFIX)}
    missing = sorted(want - set(renamed))
    extra = sorted(set(renamed) - want)
    problems = []
    for key in sorted(want & set(renamed)):
        if not key.startswith(IMAGE_PREFIX) and tuple(expected[key].shape) != renamed[key][1]:
            problems.append(f"{key}: shape {list(renamed[key][1])}, the policy expects "
                            f"{list(expected[key].shape)}")
    extra_images = [renamed[k][0] for k in extra if k.startswith(IMAGE_PREFIX)]
    missing_images = [k for k in missing if k.startswith(IMAGE_PREFIX)]
    fix = dict(zip(extra_images, missing_images, strict=False))
    still_missing = [k for k in missing if k not in fix.values()]
    still_extra = [k for k in extra if renamed[k][0] not in fix]
    cameras_only = bool(still_missing) and all(k.startswith(IMAGE_PREFIX)
                                               for k in still_missing)
    has_camera = any(k.startswith(IMAGE_PREFIX) for k in want & set(renamed)) or bool(fix)
    allow_fix = cameras_only and not still_extra and has_camera
    ok = not problems and not extra and (not missing or (allow_fix and allow_missing_cameras
                                                         and not fix))
    return JoinReport(client_id=client_id, dataset=dataset, ok=ok, missing=missing,
                      extra=extra, problems=problems, rename_fix=fix if not ok else {},
                      allow_missing_cameras=allow_fix and not allow_missing_cameras and not ok)


def with_episode_checks(report: JoinReport, meta: Any, skipped: Sequence[EpisodeProblem], *,
                        skip_bad: bool) -> JoinReport:
    """Add the dataset's frame checks (timestamps, non-finite values) to a join report.

    Args:
        report: The report of :func:`join_report`.
        meta: The site's dataset metadata (its ``root`` and ``fps``).
        skipped: The problems of the episodes the site's partition already dropped
            (``ClientPartition.skipped``; used when ``skip_bad``).
        skip_bad: ``data.skip_bad_episodes``: bad episodes are dropped, the site may join.

    Returns:
        The report naming the bad episode ids; not ``ok`` when there are some and
        ``skip_bad`` is off.
    """
    from zk0cli.core.checks import dataset_problems, problem_ids

    problems = list(skipped) if skip_bad else dataset_problems(Path(meta.root),
                                                                float(meta.fps))
    if not problems:
        return report
    return report.model_copy(update={
        "ok": report.ok and skip_bad, "bad_episodes": problem_ids(problems),
        "episode_problems": [f"episode {p.episode}: {p.detail}" for p in problems],
        "skipped_bad_episodes": skip_bad})


def dataset_shapes(meta: Any) -> dict[str, tuple[int, ...]]:
    """``{dataset key: shape}`` of a dataset's policy features, before any rename map."""
    from zk0cli.core.policy import policy_features_from_dataset

    return {k: tuple(f.shape) for k, f in policy_features_from_dataset(meta, {}).items()}


def check_all_clients(config: Any) -> list[JoinReport]:
    """The join check of every configured client, in this process (``zk0 simulate``).

    The policy's inputs are those the server builds: the pretrained checkpoint's, or for
    the tiny preset the reference dataset's (``data.eval[0]``, else ``data.clients[0]``)
    after its rename map; each client is checked after its own (``data.clients[i].
    rename_map``, else ``data.rename_map``).

    Args:
        config: The validated :class:`~zk0cli.core.config.RunConfig`.

    Returns:
        One report per distinct client dataset, all passing.

    Raises:
        DatasetError: A client's dataset does not fit the policy; the message holds every
            report with its fix.
    """
    from zk0cli.core import data as D
    from zk0cli.core.contract.instruction import FeatureSpec
    from zk0cli.core.policy import expected_input_features

    cfg = config
    ref_spec = cfg.data.reference_spec()
    ref_meta = D.load_metadata(D.resolve_dataset(ref_spec, cfg.data.sim))
    expected = {k: FeatureSpec(type=t, shape=s) for k, (t, s) in
                expected_input_features(cfg.model, ref_meta,
                                        cfg.data.rename_map_for(ref_spec)).items()}
    n = cfg.num_clients if cfg.data.partition == "dataset" else 1
    reports, where = [], {}
    for i in range(n):
        spec = cfg.data.client_spec(i)
        ref = D.resolve_dataset(spec, cfg.data.sim)
        meta = D.load_metadata(ref)
        reports.append(join_report(str(i), ref.name, dataset_shapes(meta),
                                   cfg.data.client_rename_map(i), expected,
                                   allow_missing_cameras=cfg.model.allow_missing_cameras))
        where[str(i)] = (f"data.clients[{i}].rename_map" if spec.rename_map is not None
                         else "data.rename_map")
    bad = [r for r in reports if not r.ok]
    if bad:
        body = "\n".join(r.describe().replace("the site's rename map (site file [rename_map])",
                                              where[r.client_id]) for r in bad)
        raise DatasetError(f"join check: {len(bad)} of {len(reports)} client dataset(s) do "
                           f"not fit the policy's input features:\n{body}")
    return reports
