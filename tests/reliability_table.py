"""Print the figures the reliability tests recorded (`make reliability`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str) -> int:
    figures = json.loads(Path(path).read_text())
    columns = ("area", "case", "tried", "failed", "lost", "mismatched")
    widths = {c: max(len(c), *(len(str(f.get(c, ""))) for f in figures)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-+-".join("-" * widths[c] for c in columns))
    for figure in figures:
        print(" | ".join(str(figure.get(c, "")).ljust(widths[c]) for c in columns))
    failed = sum(int(f.get("failed", 0)) for f in figures)
    lost = sum(int(f.get("lost", 0) or 0) for f in figures)
    mismatched = sum(int(f.get("mismatched", 0) or 0) for f in figures)
    print(
        f"\n{sum(int(f['tried']) for f in figures)} cases tried; {failed} failed expectations; "
        f"{lost} lost; {mismatched} mismatched"
    )
    return 0 if failed == lost == mismatched == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "reliability.json"))
