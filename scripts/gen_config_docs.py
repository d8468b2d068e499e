"""Generate docs/configuration.md from the pydantic models in zk0cli.core.config.

Usage: python scripts/gen_config_docs.py [--check]
With --check, exit 1 if the file on disk differs from what would be generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from zk0cli.core.config import render_config_reference

OUT = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def write_or_check(out: Path, text: str, *, script: str) -> int:
    """Write ``text`` to ``out``, or with ``--check`` verify it is there; the exit code."""
    if "--check" in sys.argv:
        if not out.is_file() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is stale: run `python scripts/{script}`")
            return 1
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


def main() -> int:
    """Write (or with --check, verify) docs/configuration.md; returns the exit code."""
    return write_or_check(OUT, render_config_reference(), script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
