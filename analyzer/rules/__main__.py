"""``python -m analyzer.rules --markdown [--write docs/rules.md]``: the README rule table.

The table is generated from the registry; ``tests/test_rules.py`` fails when docs/rules.md
drifts from it. Regenerate with ``python -m analyzer.rules --markdown --write docs/rules.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import all_rules, markdown_document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analyzer.rules", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the rule table as Markdown")
    parser.add_argument("--write", metavar="PATH", help="write it to PATH instead of stdout")
    args = parser.parse_args(argv)
    if args.markdown:
        text = markdown_document()
        if args.write:
            Path(args.write).parent.mkdir(parents=True, exist_ok=True)
            Path(args.write).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0
    for r in all_rules():
        print(f"{r.code} {r.name} [{r.citation}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
