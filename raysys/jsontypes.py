"""Strict JSON: parsing text that is JSON and nothing else, and checking the JSON type of
each field of a parsed record.

`loads` is json.loads without Python's extensions: NaN, Infinity and -Infinity (and
numbers such as 1e999 that only parse as infinity) are refused, as are integers too long
to convert, nesting too deep for the parser and strings holding a lone surrogate; each
is a `NotJSON` with the line and column where it can be found. Files are read with it in
raysys.io (whole documents) and raysys.pools.jsonio (JSONL lines).

Readers take values from parsed JSON (or from Parquet / Hugging Face rows, which have the
same shapes) and must accept a value only when it has the JSON type the field needs, so
that a number, an object or a boolean where a string is expected is an error rather than
something converted silently. Python's types do not map one to one on JSON's: bool is a
subclass of int (so a boolean is not a number here, nor a number a boolean), a float may
be NaN or Infinity (not JSON, but a Parquet float column can hold them).

Every mistake is a `FieldError` whose message names the field (``field 'instances[2].input'
must be a string, got number``); readers add the file and the record (raysys.pools.record).
"""
from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Mapping

STRING, NUMBER, BOOLEAN, OBJECT, ARRAY, NULL = "string", "number", "boolean", "object", "array", "null"
_ARTICLE = {STRING: "a string", NUMBER: "a number", BOOLEAN: "a boolean", OBJECT: "an object",
            ARRAY: "an array", NULL: "null"}
_REQUIRED = object()


class FieldError(ValueError):
    """A field of a record is missing or of the wrong JSON type."""


class NotJSON(ValueError):
    """Text that is not JSON; `lineno` and `colno` say where (None when not known)."""

    def __init__(self, msg: str, lineno: int | None = None, colno: int | None = None):
        self.msg, self.lineno, self.colno = msg, lineno, colno
        super().__init__(msg)


class _Refused(ValueError):
    """Raised from json's parse hooks for a literal JSON does not have."""

    def __init__(self, token: str, msg: str):
        self.token, self.msg = token, msg
        super().__init__(msg)


def _constant(token: str):
    raise _Refused(token, f"{token} is not a JSON value")


def _float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _Refused(token, f"number {token} is too large")
    return value


# parse_int stays the built-in int (the scanner's fast path): an integer too long to
# convert raises a plain ValueError, caught in `loads`.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float)
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile(r"(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
                             r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})")


def loads(text: str) -> Any:
    """The JSON value of `text`, or NotJSON (see the module docstring)."""
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise NotJSON(e.msg, e.lineno, e.colno) from None
    except _Refused as e:
        raise NotJSON(e.msg, *_position(text, _outside_strings(re.escape(e.token), r"(?![\w.+-])"))) from None
    except RecursionError:
        raise NotJSON("nested too deeply to read") from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        digits = sys.get_int_max_str_digits()
        raise NotJSON(f"an integer has more than {digits} digits",
                      *_position(text, _outside_strings(rf"-?\d{{{digits + 1},}}"))) from None
    if _ESCAPED_SURROGATE.search(text):  # only escapes can spell a lone surrogate in decoded text
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise NotJSON("a string holds a lone surrogate (\\uD800-\\uDFFF without its pair), "
                          "which is not text", *_position(text, _LONE_SURROGATE.pattern)) from None
        except RecursionError:  # parsed just below the limit, but too deep to write back
            raise NotJSON("nested too deeply to read") from None
    return value


def _outside_strings(token: str, after: str = "") -> str:
    # A literal is found where a regex that consumes whole strings first does not swallow it.
    return r'"(?:[^"\\]|\\.)*"|(?<![\w.+-])(' + token + ")" + after


def _position(text: str, pattern: str) -> tuple[int | None, int | None]:
    """(line, column) of the first match of `pattern` whose group 1 matched."""
    for m in re.finditer(pattern, text):
        if m.group(1) is not None:
            start = m.start(1)
            return text.count("\n", 0, start) + 1, start - (text.rfind("\n", 0, start) + 1) + 1
    return None, None


def type_name(value: Any) -> str:
    """The JSON type of a parsed value (a Python type name for values JSON cannot hold)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, (int, float)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, Mapping):
        return OBJECT
    if isinstance(value, (list, tuple)):
        return ARRAY
    return type(value).__name__


def checked(value: Any, kind: str | tuple[str, ...], name: str) -> Any:
    """`value` when its JSON type is `kind` (or one of them), else FieldError naming `name`."""
    kinds = (kind,) if isinstance(kind, str) else kind
    got = type_name(value)
    if got not in kinds:
        wanted = " or ".join(_ARTICLE[k] for k in kinds)
        raise FieldError(f"field {name!r} must be {wanted}, got {got}")
    if got == NUMBER and not math.isfinite(value):  # NaN from a Parquet float column
        raise FieldError(f"field {name!r} must be a finite number, got {value}")
    return value


def field(obj: Mapping[str, Any], key: str, kind: str | tuple[str, ...] = STRING, *, path: str = "",
          default: Any = _REQUIRED) -> Any:
    """obj[key] checked for its JSON type. Absent or null gives `default`; without a
    default the field is required. `path` is where `obj` sits in the record
    (``instances[2]``), for the message."""
    name = f"{path}.{key}" if path else key
    value = obj.get(key)
    if value is None:
        if default is _REQUIRED:
            raise FieldError(f"missing required field {name!r}")
        return default
    return checked(value, kind, name)


def strings(value: Any, name: str) -> tuple[str, ...]:
    """An array of strings as a tuple (null gives ())."""
    if value is None:
        return ()
    checked(value, ARRAY, name)
    return tuple(checked(v, STRING, f"{name}[{k}]") for k, v in enumerate(value))


def record(value: Any, name: str = "") -> Mapping[str, Any]:
    """`value` when it is a JSON object; `name` is its place in the record ('' for the record itself)."""
    if not isinstance(value, Mapping):
        if not name:
            raise FieldError(f"expected a JSON object, got {type_name(value)}")
        checked(value, OBJECT, name)
    return value


def items(value: Any, name: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(path, object) for each element of an array of objects (null gives [])."""
    if value is None:
        return []
    checked(value, ARRAY, name)
    return [(f"{name}[{k}]", record(v, f"{name}[{k}]")) for k, v in enumerate(value)]
