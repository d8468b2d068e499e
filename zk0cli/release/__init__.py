"""Release work for a Python project in git: version bump, changelog, annotated tag.

``pyproject.toml``'s ``[project] version`` is the single source of truth. The public
surface: :func:`validate_request` → :func:`plan_release` (checks, changes nothing) →
:func:`perform_release`, or :func:`release` for both; :func:`bump_version` for the
version arithmetic. See docs/releasing.md.
"""

from zk0cli.release.changelog import Commit, group_commits, parse_commit, render_section
from zk0cli.release.plan import (
    DEFAULT_TEST_COMMAND,
    ReleasePlan,
    ReleaseRequest,
    check_versions,
    perform_release,
    plan_release,
    release,
    validate_request,
)
from zk0cli.release.versioning import Part, PreLabel, bump_version

__all__ = [
    "DEFAULT_TEST_COMMAND",
    "Commit",
    "Part",
    "PreLabel",
    "ReleasePlan",
    "ReleaseRequest",
    "bump_version",
    "check_versions",
    "group_commits",
    "parse_commit",
    "perform_release",
    "plan_release",
    "release",
    "render_section",
    "validate_request",
]
