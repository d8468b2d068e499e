"""Generate the record tables of docs/run-directory.md from zk0cli.core.contract.

Usage: python scripts/gen_run_dir_docs.py [--check]
Replaces the text between the BEGIN/END GENERATED markers; with --check, exit 1 if the
file on disk differs from what would be generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from zk0cli.core.contract import DOC_BEGIN, DOC_END, render_record_tables

OUT = Path(__file__).resolve().parent.parent / "docs" / "run-directory.md"


def generated(text: str) -> str:
    """``text`` with its generated section replaced (appended when it has none)."""
    if DOC_BEGIN in text and DOC_END in text:
        head, _, rest = text.partition(DOC_BEGIN)
        _, _, tail = rest.partition(DOC_END)
        return head + render_record_tables() + tail
    return text.rstrip("\n") + "\n\n## Record reference\n\n" + render_record_tables() + "\n"


def main() -> int:
    """Write (or with --check, verify) docs/run-directory.md; returns the exit code."""
    from gen_config_docs import write_or_check  # scripts/ is on sys.path when run

    return write_or_check(OUT, generated(OUT.read_text(encoding="utf-8")),
                          script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
