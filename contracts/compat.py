"""Is a new set of message schemas compatible with the published one? Pure comparison.

A message that validated against the published schema must still validate, unless its type's
`schema_version` was raised (then the change is declared). Breaking: a removed message, a
removed (or renamed) field, a newly required field, and any narrowing of what a value may be
(a type or null no longer allowed, a bound tightened, a pattern or format changed, an enum value
dropped, unknown fields no longer allowed). Adding messages and optional fields is compatible.

Documents are the ones `contracts.schema_export.schema_documents` produces, by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from contracts.schema_export import SCHEMA_VERSION_KEY, Schema

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("pattern", "format", "multipleOf")


@dataclass(frozen=True)
class Problem:
    """One breaking change: the document (message type), where in it, and what changed."""

    message: str
    path: str
    what: str

    def line(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.message}:{where} {self.what}"


def compare(published: Mapping[str, Schema], current: Mapping[str, Schema]) -> list[Problem]:
    """Breaking changes from `published` to `current`, in name order."""
    problems: list[Problem] = []
    for name in sorted(published):
        old = published[name]
        new = current.get(name)
        if new is None:
            problems.append(Problem(name, "", "message removed"))
            continue
        old_version = int(old.get(SCHEMA_VERSION_KEY, 0))
        new_version = int(new.get(SCHEMA_VERSION_KEY, 0))
        if new_version < old_version:
            problems.append(
                Problem(name, "", f"schema_version lowered from {old_version} to {new_version}")
            )
            continue
        if new_version > old_version:
            continue  # a declared break: the version was raised for it
        unbumped = f" (schema_version {old_version} unchanged)" if old_version else ""
        problems += [
            Problem(name, path, what + unbumped)
            for path, what in _narrowing(_Doc(old), _Doc(new), old, new, "")
        ]
    return problems


class _Doc:
    """A schema document, to resolve its local `$ref`s."""

    def __init__(self, root: Schema) -> None:
        self.root = root

    def resolve(self, schema: Schema, seen: int = 0) -> Schema:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or seen > 32:
            return schema
        target: Any = self.root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        # Keywords beside a $ref (a description) apply too; the target's win on a clash.
        merged = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
        return self.resolve(merged, seen + 1)

    def alternatives(self, schema: Schema) -> list[Schema]:
        """The branches of a union (anyOf/oneOf), flattened; a plain schema is one branch."""
        schema = self.resolve(schema)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if not branches:
            return [schema]
        return [alt for branch in branches for alt in self.alternatives(branch)]


def _json_type(schema: Schema) -> str:
    if "type" in schema:
        return str(schema["type"])
    values = [schema["const"]] if "const" in schema else schema.get("enum", [])
    kinds = {_value_type(v) for v in values}
    return kinds.pop() if len(kinds) == 1 else "any"


def _value_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "object"


def _accepts(new_type: str, old_type: str) -> bool:
    return new_type in (old_type, "any") or (new_type, old_type) == ("number", "integer")


def _narrowing(
    old_doc: _Doc, new_doc: _Doc, old: Schema, new: Schema, path: str
) -> Iterator[tuple[str, str]]:
    new_branches = new_doc.alternatives(new)
    for old_branch in old_doc.alternatives(old):
        old_type = _json_type(old_branch)
        matches = [b for b in new_branches if _accepts(_json_type(b), old_type)]
        if not matches:
            yield path, f"no longer accepts {old_type}"
            continue
        # Of several candidate branches, the one that keeps the most of the old one counts.
        found = [list(_branch(old_doc, new_doc, old_branch, b, path)) for b in matches]
        yield from min(found, key=len)


def _branch(
    old_doc: _Doc, new_doc: _Doc, old: Schema, new: Schema, path: str
) -> Iterator[tuple[str, str]]:
    yield from _bounds(old, new, path)
    yield from _values(old, new, path)
    if _json_type(old) == "array" and "items" in old:
        yield from _narrowing(old_doc, new_doc, old["items"], new.get("items", {}), path + "[]")
    if _json_type(old) == "object":
        yield from _object(old_doc, new_doc, old, new, path)


def _bounds(old: Schema, new: Schema, path: str) -> Iterator[tuple[str, str]]:
    for key in _LOWER_BOUNDS:
        if key in new and (key not in old or new[key] > old[key]):
            yield path, f"{key} raised from {old.get(key, 'none')} to {new[key]}"
    for key in _UPPER_BOUNDS:
        if key in new and (key not in old or new[key] < old[key]):
            yield path, f"{key} lowered from {old.get(key, 'none')} to {new[key]}"
    for key in _EXACT:
        if key in new and new[key] != old.get(key):
            was = repr(old[key]) if key in old else "none"
            yield path, f"{key} changed from {was} to {new[key]!r}"


def _values(old: Schema, new: Schema, path: str) -> Iterator[tuple[str, str]]:
    allowed_new = _allowed(new)
    if allowed_new is None:
        return
    allowed_old = _allowed(old)
    if allowed_old is None:
        yield path, f"now limited to {sorted(map(repr, allowed_new))}"
        return
    dropped = [v for v in allowed_old if v not in allowed_new]
    if dropped:
        yield path, f"no longer accepts {', '.join(sorted(map(repr, dropped)))}"


def _allowed(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return list(schema["enum"]) if "enum" in schema else None


def _object(
    old_doc: _Doc, new_doc: _Doc, old: Schema, new: Schema, path: str
) -> Iterator[tuple[str, str]]:
    prefix = f"{path}." if path else ""
    old_fields: Schema = old.get("properties", {})
    new_fields: Schema = new.get("properties", {})
    if old.get("additionalProperties", True) is not False and (
        new.get("additionalProperties", True) is False
    ):
        yield path, "no longer accepts unknown fields"
    for name, schema in old_fields.items():
        if name not in new_fields:
            yield prefix + name, "field removed"
            continue
        yield from _narrowing(old_doc, new_doc, schema, new_fields[name], prefix + name)
    old_required = set(old.get("required", ()))
    for name in new.get("required", ()):
        if name not in old_required:
            state = "new required field" if name not in old_fields else "field now required"
            yield prefix + name, state
