"""`kasse-contracts` / `python -m kasse_contracts`: the contract tooling in one command.

kasse-contracts generate [--check] [--allow-breaking]   # see kasse_contracts.codegen
kasse-contracts compat [--against DIR | --git-ref REF]  # see kasse_contracts.compat
kasse-contracts types                                   # list the CloudEvents types and their topics
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "help"
    if command == "generate":
        from kasse_contracts import codegen

        return codegen.main(args)
    if command == "compat":
        from kasse_contracts import compat

        return compat.main(args)
    if command == "types":
        from kasse_contracts.events import ALL_EVENTS

        for event in ALL_EVENTS:
            print(f"{event.event_type}\t{event.topic}\tkey={event.key_field}")
        return 0
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    raise SystemExit(main())
