"""Generate docs/configuration.md from the pydantic models in zk0cli.core.config.

Usage: python scripts/gen_config_docs.py [--check]
With --check, exit 1 if the file on disk differs from what would be generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from zk0cli.core.config import render_config_reference

OUT = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main() -> int:
    """Write (or with --check, verify) docs/configuration.md; returns the exit code."""
    text = render_config_reference()
    if "--check" in sys.argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run `python scripts/gen_config_docs.py`")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
