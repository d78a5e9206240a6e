"""JSON written by someone else, parsed in one place: every way it can be unusable is one error of its kind.

hfstream parses JSON it did not write: a repo's config.json, tokenizer files and shard index, every
safetensors header, the mirror's state file. Python's json module answers a hostile file with a
RecursionError (arrays nested 100,000 deep), a ValueError (a 5,000-digit number), silence (a key
named twice keeps its last value), or parses a structure nested a few hundred deep that a later
walk over it (``copy.deepcopy``, ``json.dumps``) overflows the stack on. ``load`` checks the size,
UTF-8, the nesting depth, the syntax, duplicate keys (where the kind refuses them) and the type at
the top, and raises the kind's error with one line that names the file:

    kind        files                                                      error (exit code)
    CONFIG      config.json and every other JSON file of a repo            InvalidConfigError (30)
    TOKENIZER   tokenizer.json, tokenizer_config.json, added_tokens.json,
                special_tokens_map.json, chat_template.json                UnsupportedTokenizerError (21)
    INDEX       model.safetensors.index.json                               InvalidIndexError (32)
    HEADER      a safetensors header                                       InvalidHeaderError (31)
    STATE       the mirror's state file                                    ManifestError (60)
    LISTING     the Hub's answer listing a repo's commit and files         ProtocolError (43)

The depth is counted on the text before it is parsed, without recursion: brackets outside strings,
in C-speed passes (``bytes.translate``, numpy). So the parser never nests deeper than the limit and
neither does anything that walks what it returns. That costs ~40 ms on a 9 MB tokenizer.json, whose
parse takes 0.3 s; a file with at most ``max_depth`` brackets (most configs) costs nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import errors
from .settings import MAX_HEADER_BYTES, MAX_LISTING_BYTES, MAX_SMALL_FILE_BYTES

#: deeper than any real file hfstream reads: configs nest 2-4 levels, tokenizer.json ~6, headers 3
MAX_DEPTH = 32


@dataclass(frozen=True)
class Kind:
    """What a file is to hfstream: the error its failures become, and how strict its parse is."""

    error: type[errors.HfstreamError]
    #: refuse an object that names a key twice (otherwise the last value wins, as for json and transformers)
    unique_keys: bool = False
    max_bytes: int = MAX_SMALL_FILE_BYTES
    max_depth: int = MAX_DEPTH


CONFIG = Kind(errors.InvalidConfigError)
TOKENIZER = Kind(errors.UnsupportedTokenizerError)
#: a tensor listed twice would point one name at two shards
INDEX = Kind(errors.InvalidIndexError, unique_keys=True)
#: a tensor named twice would hide one of them
HEADER = Kind(errors.InvalidHeaderError, unique_keys=True, max_bytes=MAX_HEADER_BYTES)
STATE = Kind(errors.ManifestError)
LISTING = Kind(errors.ProtocolError, max_bytes=MAX_LISTING_BYTES)

INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "added_tokens.json", "chat_template.json"})


def kind_of(path: str) -> Kind:
    """The kind of a repo file, by its path in the repo."""
    if path == INDEX_FILE:
        return INDEX
    if path in TOKENIZER_FILES:
        return TOKENIZER
    return CONFIG


def load(blob: bytes | bytearray | memoryview | str, name: str, kind: Kind | None = None, *,
         expect: type | None = None) -> Any:
    """Parse ``blob``, the file called ``name`` in messages, as JSON; every failure is ``kind``'s error.

    ``kind`` defaults to the kind of ``name`` as a repo path (``kind_of``). ``expect`` (``dict`` or
    ``list``) also refuses another type at the top.
    """
    kind = kind or kind_of(name)
    fail = kind.error
    if isinstance(blob, str):
        text, data = blob, blob.encode("utf-8", "surrogatepass")
    else:
        data = bytes(blob)
        if len(data) > kind.max_bytes:
            raise fail(f"{name}: {len(data)} bytes is too large (the limit is {kind.max_bytes})")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise fail(f"{name} is not valid UTF-8 (byte {e.start})") from None
    if nested_deeper_than(data, kind.max_depth):
        raise fail(f"{name} is nested more than {kind.max_depth} levels deep")
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys if kind.unique_keys else None)
    except _DuplicateKey as e:
        raise fail(f"{name} names the key {_short(e.args[0])} twice") from None
    except json.JSONDecodeError as e:
        raise fail(f"{name} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except ValueError:  # an integer longer than int_max_str_digits (4300)
        raise fail(f"{name} is not valid JSON (a number is too long)") from None
    except RecursionError:  # text that is not JSON can fool the depth count; the parser then stops here
        raise fail(f"{name} is nested too deeply") from None
    if expect is not None:
        check_type(value, name, expect, kind)
    return value


def check_type(value: Any, name: str, expect: type, kind: Kind | None = None) -> None:
    """Refuse a parsed ``value`` of file ``name`` that is not an ``expect`` (``dict`` or ``list``)."""
    if not isinstance(value, expect):
        raise (kind or kind_of(name)).error(f"{name} is not a JSON {'object' if expect is dict else 'array'}")


# --- the nesting depth, counted on the text -------------------------------------------------------

_QUOTE, _OPEN_ARRAY, _CLOSE_ARRAY, _OPEN_OBJECT, _CLOSE_OBJECT = b'"[]{}'
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
#: skeleton bytes per numpy pass: bounds the count's memory (~10 bytes each) on a file of brackets
_CHUNK = 1 << 20


def nested_deeper_than(data: bytes, limit: int) -> bool:
    """True when arrays and objects in the JSON text ``data`` nest more than ``limit`` deep.

    Exact for valid JSON; for text that is not, the parser's own error follows anyway.
    """
    if len(data) < _CHUNK and data.count(b"[") + data.count(b"{") <= limit:
        return False  # most config files: fewer brackets than the limit, wherever they are
    import numpy as np

    if b"\\" in data:
        # In JSON a backslash only starts an escape, and only \\ and \" have a backslash or a quote
        # after it. Dropped (pairs left to right, as a parser reads them), every quote left opens
        # or closes a string.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = data.translate(None, _NOT_STRUCTURE)
    depth = 0
    in_string = False
    for start in range(0, len(skeleton), _CHUNK):
        part = np.frombuffer(skeleton, np.uint8, count=min(_CHUNK, len(skeleton) - start), offset=start)
        # True from an opening quote up to (not including) its closing quote
        inside = np.bitwise_xor.accumulate(part == _QUOTE)
        if in_string:
            inside = ~inside
        in_string = bool(inside[-1])
        step = ((part == _OPEN_ARRAY) | (part == _OPEN_OBJECT)).astype(np.int8)
        step -= (part == _CLOSE_ARRAY) | (part == _CLOSE_OBJECT)
        levels = np.cumsum(np.where(inside, np.int8(0), step), dtype=np.int32)  # a chunk moves at most _CHUNK
        if depth + int(levels.max()) > limit:
            return True
        depth += int(levels[-1])
    return False


# --- duplicate keys -----------------------------------------------------------------------------


class _DuplicateKey(Exception):
    """An object names a key twice (``args[0]``); never leaves this module."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def _short(value: object, limit: int = 60) -> str:
    """repr of a value from a file, cut so a hostile one cannot flood the error line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
