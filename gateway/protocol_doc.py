"""Generate the message reference of docs/protocol.md, and the schema file, from
the Structs of ``gateway.protocol``.

``python -m gateway.protocol_doc`` rewrites ``docs/protocol.schema.json`` and
the part of ``docs/protocol.md`` between the ``BEGIN GENERATED`` and ``END
GENERATED`` markers. ``tests/gateway/test_protocol.py`` fails if either file
differs from what this module generates, so the documents cannot drift from
the code. Field descriptions are the Structs' trailing ``#`` comments.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Final

import msgspec

from exchange.reasons import CancelReason, Reason
from gateway import protocol as p

BEGIN: Final = "<!-- BEGIN GENERATED: python -m gateway.protocol_doc -->"
END: Final = "<!-- END GENERATED -->"
DOCS: Final = Path(__file__).resolve().parent.parent / "docs"

_FIELD = re.compile(r"^\s+(\w+): [^#]*?(?:#\s*(.*))?$")


@functools.cache
def _class_sources(module_name: str) -> dict[str, list[str]]:
    """Each class of a module: its source lines (one parse per module)."""
    module = sys.modules[module_name]
    source = inspect.getsource(module)
    lines = source.splitlines()
    return {
        node.name: lines[node.lineno - 1 : node.end_lineno]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
    }


def _source(cls: type[Any]) -> list[str]:
    return _class_sources(cls.__module__).get(cls.__name__, [])


def _comments(cls: type[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not isinstance(klass, type) or not issubclass(klass, msgspec.Struct):
            continue
        if klass.__module__ != p.__name__:
            continue
        for line in _source(klass):
            match = _FIELD.match(line)
            if match and match.group(2):
                out[match.group(1)] = match.group(2).strip()
    return out


def _type(t: msgspec.inspect.Type) -> str:
    match t:
        case msgspec.inspect.IntType():
            return "int"
        case msgspec.inspect.FloatType():
            return "number"
        case msgspec.inspect.StrType():
            return "string"
        case msgspec.inspect.BoolType():
            return "bool"
        case msgspec.inspect.NoneType():
            return "null"
        case msgspec.inspect.EnumType():
            return f"`{t.cls.__name__}`"
        case msgspec.inspect.UnionType():
            return " \\| ".join(_type(x) for x in t.types)
        case msgspec.inspect.ListType():
            return f"list of {_type(t.item_type)}"
        case msgspec.inspect.TupleType():
            return "[" + ", ".join(_type(x) for x in t.item_types) + "]"
        case msgspec.inspect.DictType():
            return f"object of {_type(t.value_type)}"
        case msgspec.inspect.StructType():
            return f"`{t.cls.__name__}` object"
        case _:
            return type(t).__name__


def _default(field: msgspec.inspect.Field) -> str:
    if field.required:
        return "required"
    value = field.default
    if value is msgspec.NODEFAULT:
        value = field.default_factory()
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{msgspec.json.encode(value).decode()}`"


def _message(cls: type[Any]) -> list[str]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    tag = cls.__struct_config__.tag
    lines = [f"### `{tag}`", ""]
    doc = inspect.getdoc(cls)
    if doc and cls.__doc__ is not None and "__doc__" in cls.__dict__:
        lines += [doc.replace("\n\n", "\n\n"), ""]
    comments = _comments(cls)
    lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines.append(f'| `type` | string | `"{tag}"` | |')
    for field in info.fields:
        lines.append(
            f"| `{field.encode_name}` | {_type(field.type)} | {_default(field)} "
            f"| {comments.get(field.name, '')} |"
        )
    return [*lines, ""]


def _enum(cls: type[enum.Enum]) -> list[str]:
    comments: dict[str, str] = {}
    for line in _source(cls):
        match = re.match(r"^\s+(\w+) = [^#]*(?:#\s*(.*))?$", line)
        if match:
            comments[match.group(1)] = (match.group(2) or "").strip()
    lines = [f"### `{cls.__name__}`", "", "| value | meaning |", "| --- | --- |"]
    for member in cls:
        lines.append(f"| `{member.value}` | {comments.get(member.name, '')} |")
    return [*lines, ""]


def reference_markdown() -> str:
    """The generated reference section of docs/protocol.md, markers included."""
    lines = [BEGIN, "", "## Message reference", "", "### Requests (client to server)", ""]
    for cls in p.REQUEST_TYPES.values():
        lines += _message(cls)
    lines += ["### Server messages", ""]
    for cls in p.SERVER_TYPES.values():
        lines += _message(cls)
    lines += ["## Enumerations", ""]
    for enum_cls in (
        p.Channel,
        p.ErrorCode,
        p.CloseCode,
        p.ExecType,
        p.OrdStatus,
        Reason,
        CancelReason,
    ):
        lines += _enum(enum_cls)
    lines.append(END)
    return "\n".join(lines) + "\n"


def render_protocol_md(current: str) -> str:
    """``current`` with its generated section replaced by a fresh one."""
    start = current.index(BEGIN)
    end = current.index(END) + len(END)
    return current[:start] + reference_markdown().rstrip("\n") + current[end:]


def main() -> int:
    (DOCS / "protocol.schema.json").write_text(p.json_schema_text())
    doc = DOCS / "protocol.md"
    doc.write_text(render_protocol_md(doc.read_text()))
    print(f"wrote {DOCS / 'protocol.schema.json'} and the reference of {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
