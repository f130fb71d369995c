"""``python -m analyzer.rules --markdown [--write docs/rules.md] [--readme README.md]``: the rule table.

The table is generated from the registry; ``tests/test_rules.py`` fails when docs/rules.md or
the README's ``<!-- rules:start -->``...``<!-- rules:end -->`` section drifts from it.
Regenerate both with ``python -m analyzer.rules --markdown --write docs/rules.md --readme README.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import all_rules, markdown_document, with_readme_section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analyzer.rules", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the rule table as Markdown")
    parser.add_argument("--write", metavar="PATH", help="write it to PATH instead of stdout")
    parser.add_argument("--readme", metavar="PATH",
                        help="regenerate the rules:start/rules:end section of this README in place")
    args = parser.parse_args(argv)
    if args.readme:
        path = Path(args.readme)
        try:
            path.write_text(with_readme_section(path.read_text(encoding="utf-8")), encoding="utf-8")
        except (OSError, ValueError) as err:
            print(f"python -m analyzer.rules: error: {path}: {getattr(err, 'strerror', None) or err}",
                  file=sys.stderr)
            return 2
        if not args.markdown:
            return 0
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
