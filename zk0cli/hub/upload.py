"""Plan and perform the upload of a validated checkpoint to the Hugging Face Hub.

:func:`prepare_push` resolves, validates and describes what would be sent (the dry
run stops there; it needs no token and sends nothing). :func:`upload_checkpoint`
sends it with :class:`huggingface_hub.HfApi`: create the repo (``exist_ok``), refuse an
existing tag before anything is uploaded, upload the folder in one commit, tag that
commit. The token comes from ``HF_TOKEN`` or the stored ``hf auth login``
(:func:`huggingface_hub.get_token`); it is handed to ``HfApi`` only, and never printed,
logged or written.

The checkpoint directory itself is never modified: the files travel from a temporary
staging folder of symbolic links (copies where links are not allowed), which also
holds the regenerated ``README.md`` and the matching ``manifest.json`` when the card
is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from zk0cli.errors import (
    CheckpointError,
    HubAuthError,
    HubError,
    UsageError,
    field_problems,
    problem_lines,
)
from zk0cli.hub.checkpoint import (
    CARD_FILE,
    MANIFEST_FILE,
    ResolvedCheckpoint,
    check_repo_id,
    resolve_checkpoint,
    validate_checkpoint,
)
from zk0cli.log import logger

DEFAULT_TAG_FORMAT = "fl-round-{round}"
DEFAULT_COMMIT_FORMAT = "zk0: federated SmolVLA checkpoint, round {round}"
_GIT_REF = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"


def _git_ref(value: str) -> str:
    if ".." in value or value.endswith((".", ".lock")) or value.startswith((".", "-")):
        raise ValueError("a git ref name may not contain '..', start with '.' or '-', or end "
                         "with '.' or '.lock'")
    return value


GitRef = Annotated[str, StringConstraints(pattern=_GIT_REF, max_length=200),
                   AfterValidator(_git_ref)]


class PushOptions(BaseModel):
    """What ``zk0 push`` was asked to do (validated before anything is read or sent).

    Attributes:
        checkpoint: A checkpoint directory or a run directory (its newest complete
            checkpoint is used).
        repo_id: Target model repository ``namespace/name`` (checked with the checkpoint).
        private: Create the repository private (an existing one keeps its visibility).
        revision: Branch to commit to; created from ``main`` if missing. ``None``: ``main``.
        tag: Tag for the commit; ``None``: ``fl-round-N``.
        commit_message: Commit title; ``None``: a message naming the round.
        endpoint: Hub URL; ``None``: huggingface_hub's (``HF_ENDPOINT`` or huggingface.co).
        dry_run: Validate and describe the upload, send nothing.
        regenerate_card: Rebuild ``README.md`` from the run directory instead of
            uploading the checkpoint's own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path
    repo_id: str = Field(min_length=1)
    private: bool = False
    revision: GitRef | None = None
    tag: GitRef | None = None
    commit_message: str | None = Field(None, min_length=1, max_length=1000)
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$")] | None = None
    dry_run: bool = False
    regenerate_card: bool = False

    @classmethod
    def from_flags(cls, **values: object) -> PushOptions:
        """Validate CLI values, naming the offending flag on error.

        Raises:
            UsageError: Listing each bad flag, the value seen and what is accepted.
        """
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problems = field_problems(err, data=values, model=cls,
                                      names={"checkpoint": "CHECKPOINT_DIR"}, flags=True)
            raise UsageError(
                f"Invalid zk0 push options {problem_lines(problems)}\nRevisions and tags are "
                "git ref names (letters, digits, . _ - /); --endpoint is an http(s) URL."
            ) from None


@dataclass(frozen=True)
class PushPlan:
    """Everything an upload will send, decided before anything is sent.

    Attributes:
        options: The validated options.
        checkpoint: The resolved checkpoint.
        files: ``(path in repo, size in bytes)`` of every file to upload, sorted.
        card: The ``README.md`` text that will be uploaded.
        tag: Tag to create on the commit.
        commit_message: Commit title.
        endpoint: Hub URL the upload goes to.
        card_rewritten: ``card`` differs from the checkpoint's ``README.md`` (regenerated,
            or its ``<user>/<model>`` placeholder filled in); the staged manifest lists it.
    """

    options: PushOptions
    checkpoint: ResolvedCheckpoint
    files: list[tuple[str, int]]
    card: str
    tag: str
    commit_message: str
    endpoint: str
    card_rewritten: bool = False

    @property
    def total_bytes(self) -> int:
        """Sum of the file sizes, in bytes."""
        return sum(size for _, size in self.files)


@dataclass(frozen=True)
class PushResult:
    """What the Hub answered.

    Attributes:
        repo_url: URL of the model repository.
        commit_url: URL of the upload commit.
        commit_oid: Hex id of that commit.
        tag: The tag created on it.
    """

    repo_url: str
    commit_url: str
    commit_oid: str
    tag: str


def _nothing_sent(problems: list[str]) -> str:
    return (f"Nothing was sent {problem_lines(problems)}\nPoint at a complete checkpoint "
            "(models/checkpoint_round_N) or a run directory, and give --repo-id as "
            "namespace/name.")


def prepare_push(options: PushOptions) -> PushPlan:
    """Resolve and validate the checkpoint and build the card; sends nothing.

    Args:
        options: Validated push options.

    Returns:
        The upload plan (also what ``--dry-run`` prints).

    Raises:
        CheckpointError: The checkpoint is missing files, corrupt, not SmolVLA, or
            ``--regenerate-card`` has no run directory to read.
        UsageError: The repo id is malformed (with the checkpoint's problems, if any).
        RunDirError: A run-directory file read for the card is not valid JSON.
    """
    from huggingface_hub import constants

    from zk0cli.core.card import build_model_card

    repo_problem = check_repo_id(options.repo_id)
    try:
        resolved = resolve_checkpoint(options.checkpoint)
        if resolved.from_run_dir:
            logger.debug("Using the newest complete checkpoint: %s", resolved.path)
        early = []
        if options.regenerate_card and resolved.run_dir is None:
            early.append("--regenerate-card needs the run directory around the checkpoint "
                         "(outputs/<run>/models/checkpoint_round_N); this checkpoint is not "
                         "in one")
        try:
            files = validate_checkpoint(resolved.path, require_card=not options.regenerate_card)
        except CheckpointError as err:
            raise CheckpointError(err.path, [*early, *err.problems]) from None
        if early:
            raise CheckpointError(str(resolved.path), early)
    except CheckpointError as err:
        if repo_problem is None:
            raise
        raise UsageError(_nothing_sent([f"--repo-id: {repo_problem}",
                                        *(f"checkpoint {err.path}: {p}" for p in err.problems)])
                         ) from None
    if repo_problem is not None:
        raise UsageError(f"--repo-id: {repo_problem}. Nothing was sent.")
    if options.regenerate_card and resolved.run_dir is not None:
        card = str(build_model_card(resolved.run_dir, checkpoint_round=resolved.round,
                                    repo_id=options.repo_id, checkpoint_dir=resolved.path))
        card_size = len(card.encode("utf-8"))
        rewritten = True
    else:
        from zk0cli.core.card import REPO_PLACEHOLDER, with_repo_id

        card = (resolved.path / CARD_FILE).read_text(encoding="utf-8")
        rewritten = REPO_PLACEHOLDER in card  # written at checkpoint time; the repo is known now
        if rewritten:
            card = with_repo_id(card, options.repo_id)
        card_size = len(card.encode("utf-8"))
    sizes = {f.relpath: f.size for f in files}
    sizes[CARD_FILE] = card_size
    sizes[MANIFEST_FILE] = _staged_manifest_size(resolved.path, card if rewritten else None)
    return PushPlan(
        options=options,
        checkpoint=resolved,
        files=sorted(sizes.items()),
        card=card,
        tag=options.tag or DEFAULT_TAG_FORMAT.format(round=resolved.round),
        commit_message=options.commit_message or DEFAULT_COMMIT_FORMAT.format(round=resolved.round),
        endpoint=(options.endpoint or constants.ENDPOINT).rstrip("/"),
        card_rewritten=rewritten,
    )


def _manifest_with_card(checkpoint: Path, card: str) -> str:
    from zk0cli.core.checkpoint import read_manifest
    from zk0cli.core.contract import ManifestEntry

    manifest = read_manifest(checkpoint)
    data = card.encode("utf-8")
    manifest.files[CARD_FILE] = ManifestEntry(size=len(data),
                                              sha256=hashlib.sha256(data).hexdigest())
    return json.dumps(manifest.to_json(), indent=2) + "\n"


def _staged_manifest_size(checkpoint: Path, card: str | None) -> int:
    if card is None:
        return (checkpoint / MANIFEST_FILE).stat().st_size
    return len(_manifest_with_card(checkpoint, card).encode("utf-8"))


def _stage(plan: PushPlan, folder: Path) -> None:
    """Fill ``folder`` with links to the files of ``plan`` (+ a regenerated card)."""
    for relpath, _ in plan.files:
        target = folder / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if plan.card_rewritten and relpath in (CARD_FILE, MANIFEST_FILE):
            continue
        source = plan.checkpoint.path / relpath
        try:
            os.symlink(source, target)
        except OSError:
            shutil.copy2(source, target)
    if plan.card_rewritten:
        (folder / CARD_FILE).write_text(plan.card, encoding="utf-8")
        (folder / MANIFEST_FILE).write_text(
            _manifest_with_card(plan.checkpoint.path, plan.card), encoding="utf-8"
        )


def resolve_token() -> str:
    """The Hugging Face token: ``HF_TOKEN``, else the stored ``hf auth login``.

    Raises:
        HubAuthError: No token is available (nothing has been sent).
    """
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubAuthError(
            "No Hugging Face token found: HF_TOKEN is not set and there is no stored login. "
            "Create a write token at https://huggingface.co/settings/tokens, then run "
            "`hf auth login` or export HF_TOKEN=...; nothing was uploaded."
        )
    return token


def upload_checkpoint(plan: PushPlan, *, token: str | None = None) -> PushResult:
    """Create the repo, upload the checkpoint in one commit and tag it.

    Args:
        plan: From :func:`prepare_push`.
        token: Hub token; ``None`` uses :func:`resolve_token`. Never logged.

    Returns:
        The repository, commit and tag.

    Raises:
        HubAuthError: No token (before anything is sent; the message also says when offline
            mode is on).
        UsageError: Offline mode (``HF_HUB_OFFLINE``) is on; nothing is sent.
        HubError: The tag already exists (before the upload), or the
            Hub refused or failed a request (the step is named; the token is not).
    """
    from huggingface_hub import HfApi, constants

    from zk0cli import __version__

    offline = ("HF_HUB_OFFLINE is set, so huggingface_hub refuses every request; unset it "
               "to push." if constants.is_offline_mode() else None)
    try:
        token = token or resolve_token()
    except HubAuthError as err:  # both preconditions fail: say both at once
        raise HubAuthError(f"{err} Also: {offline}" if offline else str(err)) from None
    if offline:
        raise UsageError(f"{offline} Nothing was uploaded.")
    repo_id, options = plan.options.repo_id, plan.options
    api = HfApi(endpoint=plan.endpoint, token=token, library_name="zk0cli",
                library_version=__version__)
    step = "create the repository"
    try:
        repo_url = api.create_repo(repo_id, private=options.private, exist_ok=True)
        step = "read the repository's branches and tags"
        refs = api.list_repo_refs(repo_id)
        if plan.tag in {t.name for t in refs.tags}:
            raise HubError(f"Tag {plan.tag!r} already exists in {repo_id}; nothing was uploaded. "
                           "Pass another --tag.")
        if options.revision and options.revision not in {b.name for b in refs.branches}:
            step = f"create branch {options.revision!r}"
            api.create_branch(repo_id, branch=options.revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="zk0-push-") as staging:
            _stage(plan, Path(staging))
            step = "upload the checkpoint"
            logger.debug("Uploading %d files (%d bytes) to %s", len(plan.files),
                        plan.total_bytes, repo_id)
            commit = api.upload_folder(repo_id=repo_id, folder_path=staging,
                                       commit_message=plan.commit_message,
                                       revision=options.revision)
        step = f"create tag {plan.tag!r} (the files were uploaded in {commit.commit_url})"
        api.create_tag(repo_id, tag=plan.tag, revision=commit.oid,
                       tag_message=plan.commit_message)
    except HubError:
        raise
    except Exception as err:  # huggingface_hub/httpx raise many types; all mean "push failed"
        raise HubError(_failure_message(step, repo_id, plan.endpoint, err)) from None
    return PushResult(repo_url=str(repo_url), commit_url=commit.commit_url,
                      commit_oid=commit.oid, tag=plan.tag)


def _failure_message(step: str, repo_id: str, endpoint: str, err: Exception) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    status = None
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
    hint = "Check the network and the endpoint, then run zk0 push again."
    if status in (401, 403):
        hint = ("The token was refused or lacks write access to this namespace: use a write "
                "token (hf auth login) for a namespace you own.")
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"Could not {step} for {repo_id} at {endpoint}: {type(err).__name__}: "
            f"{first_line}. {hint}")
