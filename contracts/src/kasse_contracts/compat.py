"""Is a change to the contracts compatible within a version? Compares JSON Schemas, not models.

Within a version (a `.vN` event type and topic) only additive changes are allowed: a new optional
field, a new enum value, a new event type, a new topic, looser constraints. Everything else breaks a
producer or a reader that is already deployed and must go to a new `.v(N+1)` event type and topic:

- a field removed, or its JSON type changed (including gaining or losing `null`);
- a new required field, an optional field made required, or a required field made optional
  (readers built against the old schema rely on it being there);
- an enum value removed (or an enum/const/pattern/format added to a free field), a tighter bound;
- a value added to a *closed* enum (readers of the old schema reject it). Kasse's enums are open
  (`x-kasse-open-enum`, `kasse_contracts.base.OpenEnum`): readers keep a value they do not know, so
  adding one is additive;
- the CloudEvents type, topic or key field of an event changed; an event type removed;
- an event type removed from a topic, a topic removed, its key changed, its partitions decreased,
  or its cleanup policy changed.

Standard library only, so subscribers can run it too, against the schemas they pinned:

    uv run python -m kasse_contracts.compat                     # current models vs contracts/schemas
    uv run python -m kasse_contracts.compat --against DIR       # vs the artefacts in DIR (a contracts/ dir)
    uv run python -m kasse_contracts.compat --git-ref origin/main   # vs contracts/ at a git revision

Exit status 1 when there is a breaking change. `make contracts` runs the same check before it
overwrites the committed schemas, and refuses a breaking change.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMAS_DIR = "schemas"
ENVELOPE_FILE = f"{SCHEMAS_DIR}/envelope.json"
TOPICS_FILE = f"{SCHEMAS_DIR}/topics.json"
BREAKING_METADATA = ("x-kasse-ce-type", "x-kasse-topic", "x-kasse-key")
INFO_METADATA = ("x-kasse-ga4-event", "x-kasse-producer")

# kinds of finding
REMOVED_FIELD = "removed-field"
TYPE_CHANGED = "type-changed"
NEWLY_REQUIRED = "newly-required-field"
MADE_REQUIRED = "optional-made-required"
MADE_OPTIONAL = "required-made-optional"
ENUM_NARROWED = "enum-value-removed"
ENUM_WIDENED = "enum-value-added"
ENUM_WIDENED_CLOSED = "closed-enum-value-added"
ENUM_OPENED = "enum-opened"
CONSTRAINT_NARROWED = "constraint-narrowed"
CONSTRAINT_WIDENED = "constraint-widened"
CLOSED_OBJECT = "additional-properties-closed"
NEW_OPTIONAL = "optional-field-added"
METADATA_CHANGED = "metadata-changed"
EVENT_REMOVED = "event-type-removed"
EVENT_ADDED = "event-type-added"
TOPIC_REMOVED = "topic-removed"
TOPIC_ADDED = "topic-added"
TOPIC_KEY_CHANGED = "topic-key-changed"
TOPIC_EVENT_REMOVED = "topic-event-type-removed"
TOPIC_EVENT_ADDED = "topic-event-type-added"
PARTITIONS_DECREASED = "partitions-decreased"
PARTITIONS_INCREASED = "partitions-increased"
CLEANUP_CHANGED = "cleanup-policy-changed"
RETENTION_CHANGED = "retention-changed"
DEFAULT_CHANGED = "default-changed"
INFO_CHANGED = "info-changed"


@dataclass(frozen=True, order=True)
class Finding:
    subject: str  # the schema file or topic the finding is about
    path: str  # where in it: a dotted field path ("lines[].quantity"), "" for the whole thing
    kind: str
    breaking: bool
    message: str

    def __str__(self) -> str:
        where = f"{self.subject}:{self.path}" if self.path else self.subject
        return f"{'BREAKING' if self.breaking else 'ok'} {self.kind} {where}: {self.message}"


# --------------------------------------------------------------------------------------------
# schemas


def _resolve(node: Any, root: Mapping[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s; sibling keywords of a `$ref` are kept on top of the target."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **siblings}
        seen += 1
        if seen > 50:
            raise ValueError(f"reference loop at {ref!r}")
    return node if isinstance(node, dict) else {}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _alternatives(node: Any, root: Mapping[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node, root)
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:  # `allOf: [$ref]` + siblings
        siblings = {k: v for k, v in node.items() if k != "allOf"}
        node = {**_resolve(node["allOf"][0], root), **siblings}
    for key in ("anyOf", "oneOf"):
        if key in node:
            out: list[dict[str, Any]] = []
            for branch in node[key]:
                out.extend(_alternatives(branch, root))
            return out
    return [node]


def _types(alt: Mapping[str, Any]) -> set[str]:
    if "type" in alt:
        t = alt["type"]
        return set(t) if isinstance(t, list) else {t}
    if "const" in alt:
        return {_json_type(alt["const"])}
    if "enum" in alt:
        return {_json_type(v) for v in alt["enum"]}
    if "properties" in alt:
        return {"object"}
    if "items" in alt:
        return {"array"}
    return {"any"}


X_KNOWN_VALUES = "x-kasse-known-values"  # an open enum (kasse_contracts.base.OpenEnum): its known values
X_OPEN_ENUM = "x-kasse-open-enum"


def _values(alt: Mapping[str, Any]) -> list[Any] | None:
    """The values a closed `const`/`enum` allows; None when any value of the type is valid."""
    if "const" in alt:
        return [alt["const"]]
    if "enum" in alt:
        return list(alt["enum"])
    return None


def _known_values(alt: Mapping[str, Any]) -> list[Any] | None:
    """The documented values of an open enum (any string is valid, readers keep the others)."""
    if alt.get(X_OPEN_ENUM) is True:
        return list(alt.get(X_KNOWN_VALUES, ()))
    return None


_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


class _Comparer:
    def __init__(self, subject: str, old_root: Mapping[str, Any], new_root: Mapping[str, Any]) -> None:
        self.subject = subject
        self.old_root = old_root
        self.new_root = new_root
        self.findings: list[Finding] = []
        self._seen: set[tuple[int, int]] = set()

    def add(self, path: str, kind: str, breaking: bool, message: str) -> None:
        self.findings.append(Finding(self.subject, path, kind, breaking, message))

    def compare(self, old: Any, new: Any, path: str) -> None:
        old_alts = _alternatives(old, self.old_root)
        new_alts = _alternatives(new, self.new_root)
        old_types = set().union(*(_types(a) for a in old_alts))
        new_types = set().union(*(_types(a) for a in new_alts))
        if old_types != new_types:
            self.add(
                path,
                TYPE_CHANGED,
                True,
                f"type changed from {'|'.join(sorted(old_types))} to {'|'.join(sorted(new_types))}",
            )
        for json_type in sorted(old_types & new_types):
            for old_alt, new_alt in self._pairs(json_type, old_alts, new_alts):
                self._compare_alt(json_type, old_alt, new_alt, path)

    @staticmethod
    def _pairs(
        json_type: str, old_alts: list[dict[str, Any]], new_alts: list[dict[str, Any]]
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        olds = [a for a in old_alts if json_type in _types(a)]
        news = [a for a in new_alts if json_type in _types(a)]
        if len(olds) == 1 and len(news) == 1:
            yield olds[0], news[0]
            return
        by_title = {a.get("title"): a for a in news}
        for old in olds:
            if old.get("title") in by_title:
                yield old, by_title[old["title"]]

    def _compare_alt(self, json_type: str, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        marker = (id(old), id(new))
        if marker in self._seen:
            return
        self._seen.add(marker)
        self._compare_values(old, new, path)
        self._compare_bounds(old, new, path)
        if json_type == "object":
            self._compare_object(old, new, path)
        elif json_type == "array":
            if "items" in old or "items" in new:
                self.compare(old.get("items", {}), new.get("items", {}), f"{path}[]")

    def _compare_values(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        """Enums. What counts is what the *old* readers accept: a value added to an open enum is
        additive (readers keep unknown values), one added to a closed enum is breaking (readers built
        on the old schema reject it, e.g. during a rolling deploy). Removing a value always breaks."""
        old_closed, new_closed = _values(old), _values(new)
        old_open, new_open = _known_values(old), _known_values(new)
        old_listed = old_closed if old_closed is not None else old_open
        new_listed = new_closed if new_closed is not None else new_open
        if new_closed is not None and old_closed is None:
            self.add(path, ENUM_NARROWED, True, f"now restricted to {sorted(map(str, new_closed))}")
            return
        if old_listed is None or new_listed is None:
            return
        if old_closed is not None and new_closed is None:
            self.add(path, ENUM_OPENED, False, "enum opened: readers now keep values they do not know")
        removed = [v for v in old_listed if v not in new_listed]
        added = [v for v in new_listed if v not in old_listed]
        if removed:
            self.add(path, ENUM_NARROWED, True, f"enum value(s) removed: {', '.join(map(str, removed))}")
        if added and old_closed is not None:
            self.add(
                path,
                ENUM_WIDENED_CLOSED,
                True,
                f"enum value(s) added to a closed enum: {', '.join(map(str, added))}; readers of the "
                "previous contract reject them (make it an OpenEnum first, in an earlier release)",
            )
        elif added:
            self.add(path, ENUM_WIDENED, False, f"enum value(s) added: {', '.join(map(str, added))}")

    def _compare_bounds(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        for keyword in _LOWER_BOUNDS + _UPPER_BOUNDS:
            before, after = old.get(keyword), new.get(keyword)
            if before == after:
                continue
            lower = keyword in _LOWER_BOUNDS
            tighter = after is not None and (before is None or (after > before if lower else after < before))
            self.add(
                path,
                CONSTRAINT_NARROWED if tighter else CONSTRAINT_WIDENED,
                tighter,
                f"{keyword} {before} -> {after}",
            )
        for keyword in ("pattern", "format"):
            before, after = old.get(keyword), new.get(keyword)
            if before != after:
                breaking = after is not None
                self.add(
                    path,
                    CONSTRAINT_NARROWED if breaking else CONSTRAINT_WIDENED,
                    breaking,
                    f"{keyword} {before!r} -> {after!r}",
                )

    def _compare_object(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_props: dict[str, Any] = old.get("properties", {})
        new_props: dict[str, Any] = new.get("properties", {})
        old_req, new_req = set(old.get("required", ())), set(new.get("required", ()))
        prefix = f"{path}." if path else ""
        for name in old_props:
            if name not in new_props:
                self.add(f"{prefix}{name}", REMOVED_FIELD, True, "field removed")
        for name in new_props:
            if name in old_props:
                continue
            if name in new_req:
                self.add(f"{prefix}{name}", NEWLY_REQUIRED, True, "new required field")
            else:
                self.add(f"{prefix}{name}", NEW_OPTIONAL, False, "new optional field")
        for name in old_props:
            if name not in new_props:
                continue
            if name in new_req and name not in old_req:
                self.add(f"{prefix}{name}", MADE_REQUIRED, True, "optional field made required")
            elif name in old_req and name not in new_req:
                self.add(
                    f"{prefix}{name}",
                    MADE_OPTIONAL,
                    True,
                    "required field made optional: readers built on the old schema rely on it",
                )
            old_prop, new_prop = _resolve(old_props[name], self.old_root), _resolve(new_props[name], self.new_root)
            if "default" in old_prop and "default" in new_prop and old_prop["default"] != new_prop["default"]:
                self.add(
                    f"{prefix}{name}",
                    DEFAULT_CHANGED,
                    False,
                    f"default {old_prop['default']!r} -> {new_prop['default']!r}",
                )
            self.compare(old_props[name], new_props[name], f"{prefix}{name}")
        if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
            self.add(path, CLOSED_OBJECT, True, "unknown fields are now rejected: breaks additive evolution")


def compare_schemas(old: Mapping[str, Any], new: Mapping[str, Any], subject: str = "") -> list[Finding]:
    """Findings for the change from JSON Schema `old` to `new` (each with its own `$defs`)."""
    subject = subject or str(new.get("title") or old.get("title") or "schema")
    comparer = _Comparer(subject, old, new)
    for key in BREAKING_METADATA:
        if old.get(key) != new.get(key):
            comparer.add("", METADATA_CHANGED, True, f"{key} {old.get(key)!r} -> {new.get(key)!r}")
    for key in INFO_METADATA:
        if old.get(key) != new.get(key):
            comparer.add("", INFO_CHANGED, False, f"{key} {old.get(key)!r} -> {new.get(key)!r}")
    comparer.compare(old, new, "")
    return sorted(comparer.findings)


# --------------------------------------------------------------------------------------------
# topics


def compare_topics(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Finding]:
    """Compare two `schemas/topics.json` documents."""
    findings: list[Finding] = []
    old_topics: Mapping[str, Any] = old.get("topics", {})
    new_topics: Mapping[str, Any] = new.get("topics", {})

    def add(topic: str, path: str, kind: str, breaking: bool, message: str) -> None:
        findings.append(Finding(topic, path, kind, breaking, message))

    for name, before in old_topics.items():
        after = new_topics.get(name)
        if after is None:
            add(name, "", TOPIC_REMOVED, True, "topic removed")
            continue
        if before["key"] != after["key"]:
            add(name, "key", TOPIC_KEY_CHANGED, True, f"key {before['key']!r} -> {after['key']!r}")
        if after["partitions"] < before["partitions"]:
            add(name, "partitions", PARTITIONS_DECREASED, True, f"{before['partitions']} -> {after['partitions']}")
        elif after["partitions"] > before["partitions"]:
            add(
                name,
                "partitions",
                PARTITIONS_INCREASED,
                False,
                f"{before['partitions']} -> {after['partitions']}: moves keys to other partitions, "
                "needs a migration note",
            )
        if before["cleanup_policy"] != after["cleanup_policy"]:
            add(
                name,
                "cleanup_policy",
                CLEANUP_CHANGED,
                True,
                f"{before['cleanup_policy']} -> {after['cleanup_policy']}",
            )
        if before["retention_ms"] != after["retention_ms"]:
            add(name, "retention_ms", RETENTION_CHANGED, False, f"{before['retention_ms']} -> {after['retention_ms']}")
        for event_type in before["event_types"]:
            if event_type not in after["event_types"]:
                add(name, "event_types", TOPIC_EVENT_REMOVED, True, f"{event_type} no longer published here")
        for event_type in after["event_types"]:
            if event_type not in before["event_types"]:
                add(name, "event_types", TOPIC_EVENT_ADDED, False, f"{event_type} added")
    for name in new_topics:
        if name not in old_topics:
            add(name, "", TOPIC_ADDED, False, "new topic")
    return sorted(findings)


# --------------------------------------------------------------------------------------------
# artefact sets


def parse_artefacts(texts: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The JSON files of an artefact set (path relative to contracts/ -> parsed document)."""
    return {path: json.loads(text) for path, text in texts.items() if path.endswith(".json")}


def load_artefacts(root: Path) -> dict[str, dict[str, Any]]:
    """The JSON artefacts under `root/schemas` (`root` is a contracts/ dir or an installed package dir)."""
    return {
        f"{SCHEMAS_DIR}/{path.name}": json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((root / SCHEMAS_DIR).glob("*.json"))
    }


def load_artefacts_at_git_ref(ref: str, root: Path) -> dict[str, dict[str, Any]]:
    """The JSON artefacts under `root/schemas` as of git revision `ref`."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout

    rel = git("rev-parse", "--show-prefix").strip()  # contracts/ relative to the repository root
    listing = git("ls-tree", "--full-tree", "--name-only", f"{ref}:{rel}{SCHEMAS_DIR}").split()
    out: dict[str, dict[str, Any]] = {}
    for name in listing:
        if name.endswith(".json"):
            out[f"{SCHEMAS_DIR}/{name}"] = json.loads(git("show", f"{ref}:{rel}{SCHEMAS_DIR}/{name}"))
    return out


def schema_revisions(root: Path, count: int, ref: str = "HEAD") -> list[str]:
    """The last `count` commits (newest first, reachable from `ref`) that changed `root/schemas`:
    each is a version of the contracts that was on the main line, so readers built on it may still
    be deployed."""
    rel = subprocess.run(
        ["git", "rev-parse", "--show-prefix"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()
    out = subprocess.run(
        ["git", "log", f"-n{count}", "--format=%H", ref, "--", f":/{rel}{SCHEMAS_DIR}"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def compare_artefacts(old: Mapping[str, dict[str, Any]], new: Mapping[str, dict[str, Any]]) -> list[Finding]:
    """Every finding between two artefact sets: event schemas, the envelope and the topics."""
    findings: list[Finding] = []
    for path in sorted(set(old) | set(new)):
        name = path.rsplit("/", 1)[-1]
        if path == TOPICS_FILE:
            findings.extend(compare_topics(old.get(path, {}), new.get(path, {})))
        elif path not in new:
            findings.append(Finding(name, "", EVENT_REMOVED, True, "schema removed (event type no longer published)"))
        elif path not in old:
            findings.append(Finding(name, "", EVENT_ADDED, False, "new schema"))
        else:
            findings.extend(compare_schemas(old[path], new[path], subject=name))
    return findings


def current_artefacts() -> dict[str, dict[str, Any]]:
    from kasse_contracts.codegen import generate_artefacts

    return parse_artefacts(generate_artefacts())


def default_root() -> Path:
    """Where the committed artefacts are: the source checkout's contracts/, else the installed package."""
    from kasse_contracts.codegen import source_root

    return source_root() or Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kasse_contracts.compat",
        description="Report breaking changes of the current contract models against committed schemas.",
    )
    parser.add_argument("--against", type=Path, help="a contracts/ directory holding schemas/ (default: this one)")
    parser.add_argument("--git-ref", help="compare against contracts/schemas at this git revision instead")
    parser.add_argument(
        "--history",
        type=int,
        metavar="N",
        help="compare against each of the last N committed versions of the schemas (CI: readers built on "
        "any of them may still run during a rolling deploy), not only the working tree's",
    )
    parser.add_argument("--all", action="store_true", help="also print the non-breaking findings")
    args = parser.parse_args(argv)
    root = args.against or default_root()
    if args.history:
        return _check_history(root, args.history, show_all=args.all)
    baseline = load_artefacts_at_git_ref(args.git_ref, root) if args.git_ref else load_artefacts(root)
    if not baseline:
        print(f"no committed schemas found under {root / SCHEMAS_DIR}", file=sys.stderr)
        return 2
    findings = compare_artefacts(baseline, current_artefacts())
    breaking = [f for f in findings if f.breaking]
    for finding in findings if args.all else breaking:
        print(finding)
    if breaking:
        print(
            f"{len(breaking)} breaking change(s): within a version only additive changes are allowed; "
            "publish a new .v2 event type on a new .v2 topic instead (contracts/README.md).",
            file=sys.stderr,
        )
        return 1
    print(f"compatible ({len(findings)} additive or informational finding(s))")
    return 0


def _check_history(root: Path, count: int, *, show_all: bool) -> int:
    current = current_artefacts()
    revisions = schema_revisions(root, count)
    if not revisions:
        print(f"no committed versions of {root / SCHEMAS_DIR} in git history", file=sys.stderr)
        return 2
    status = 0
    for revision in revisions:
        findings = compare_artefacts(load_artefacts_at_git_ref(revision, root), current)
        breaking = [f for f in findings if f.breaking]
        for finding in findings if show_all else breaking:
            print(f"{revision[:10]} {finding}")
        print(f"vs {revision[:10]}: {'BREAKING' if breaking else 'compatible'} ({len(findings)} finding(s))")
        status = status or (1 if breaking else 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
