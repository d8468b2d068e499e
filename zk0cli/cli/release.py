"""``zk0 release``: semantic version bump, changelog and annotated git tag.

Thin: the flags are validated by :class:`zk0cli.release.ReleaseRequest` and
:func:`zk0cli.release.release` does the work (see docs/releasing.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zk0cli.cli.errors import handle_errors


def release(
    part: Annotated[
        str, typer.Argument(help="Which part to bump: patch, minor or major.",
                            metavar="PART:{patch|minor|major}", show_default=False)
    ],
    pre: Annotated[
        str | None,
        typer.Option("--pre", help="Make it a pre-release: a, b or rc (e.g. 0.2.0rc1).",
                     show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the new version, changelog and commands; "
                           "change nothing.")
    ] = False,
    push: Annotated[
        bool, typer.Option("--push", help="Push the release commit and tag to the remote.")
    ] = False,
    remote: Annotated[
        str | None,
        typer.Option("--remote", help="Remote for --push (default: the branch's, else origin).",
                     show_default=False),
    ] = None,
    skip_tests: Annotated[
        bool, typer.Option("--skip-tests", help="Do not run the test command first.")
    ] = False,
    test_command: Annotated[
        str | None,
        typer.Option("--test-command", help="Run in the repository root before releasing; "
                     "a failure aborts (exit 1). [default: make test]", show_default=False),
    ] = None,
    repo: Annotated[
        Path, typer.Option("--repo", help="The git repository to release.")
    ] = Path("."),
) -> None:
    """Bump the version in pyproject.toml, prepend CHANGELOG.md, commit and tag vX.Y.Z.

    PART is patch (0.1.2 -> 0.1.3), minor (0.1.2 -> 0.2.0) or major (0.1.2 -> 1.0.0).
    """
    from zk0cli.release import release as do_release
    from zk0cli.release import validate_request

    with handle_errors():
        given = {"test_command": test_command} if test_command is not None else {}
        request = validate_request(
            part=part, pre=pre, dry_run=dry_run, push=push, remote=remote,
            skip_tests=skip_tests, repo=repo, **given,
        )
        plan = do_release(request)
        verb = "Would release" if dry_run else "Released"
        typer.echo(f"{verb} {plan.name} {plan.current} -> {plan.new} (tag {plan.tag}) "
                   f"on branch {plan.branch}.")
        if dry_run:
            typer.echo(f"\nChangelog section:\n\n{plan.section.rstrip()}\n")
            typer.echo("Steps (nothing was run or changed):")
            for step in plan.steps():
                typer.echo(f"  {step}")
            return
        if plan.push_command:
            typer.echo(f"Pushed {plan.branch} and {plan.tag} to {plan.push_command[2]}.")
        else:
            typer.echo(f"Not pushed; push with: git push --atomic origin {plan.branch} {plan.tag}")
        if plan.installed is not None:
            typer.echo(f"Reinstall (pip install -e .) so that '{plan.name}' reports {plan.new}.")
