"""inventory.toml on disk: one writer at a time, the operator's comments and layout kept, and a
reader never sees half a file.

The model (inventory.py) says what the file must contain; this module changes an existing TOML
document (tomlkit) only where the content differs, so comments, key order and formatting survive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, InlineTable, Item, Table


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file's directory (flock: released by the kernel if the process
    dies). The directory, not the file, because every write replaces the file's inode."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write(path: Path, full: Mapping[str, Any], minimal: Mapping[str, Any], header: str) -> None:
    """Make the file say `full`. Keys the file lacks are added only as far as `minimal` (the same
    data without default values) has them; keys with a value `full` lacks are removed."""
    doc = _read(path, header)
    _merge(doc, full, minimal, tables=2)
    replace(path, tomlkit.dumps(doc))


def replace(path: Path, text: str) -> None:
    """Write a unique temporary file beside `path`, flush it to disk, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path, header: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text())
    except (FileNotFoundError, TOMLKitError):
        doc = tomlkit.document()
        doc.add(tomlkit.comment(header))
        return doc


def _plain(item: Any) -> Any:
    return item.unwrap() if isinstance(item, Item) else item


def _merge(table: Any, full: Mapping[str, Any], minimal: Mapping[str, Any], tables: int) -> None:
    """`tables`: how many levels down a new mapping still becomes a [table] (settings, nodes,
    a node) rather than an inline table (an app's params); below 0, inside an inline table,
    arrays of tables are inline too."""
    if isinstance(table, InlineTable):
        tables = -1  # nothing but inline values inside an inline table
    for key in [k for k in table if k not in full]:
        del table[key]
    for key, value in full.items():
        if key not in table:
            if key in minimal:
                table[key] = _new(minimal[key], tables)
            continue
        old = table[key]
        if isinstance(value, Mapping) and isinstance(old, Table | InlineTable):
            _merge(old, value, minimal.get(key, {}), tables - 1)
        elif isinstance(old, AoT) and isinstance(value, list):
            if value:
                _merge_array(table, key, old, value, minimal.get(key, [{} for _ in value]))
            else:  # the last entry went: no `key = []` left behind in place of the tables
                del table[key]
        elif _plain(old) != value:
            table[key] = _new(minimal.get(key, value), tables)


def _instance(entry: Mapping[str, Any]) -> object:
    """Which [[...apps]] entry is which: an app's instance name (its name, else its template)."""
    return entry.get("name") or entry.get("template")


def _merge_array(table: Any, key: str, old: AoT, full: list[Any], minimal: list[Any]) -> None:
    """An array of tables (a node's apps): each entry keeps its comments, matched by instance."""
    known = {_instance(t.unwrap()): t for t in old}
    entries = []
    for value, least in zip(full, minimal, strict=True):
        entry = known.get(_instance(value))
        if entry is None:
            entry = tomlkit.table()
        _merge(entry, value, least, tables=0)
        entries.append(entry)
    if [id(e) for e in entries] != [id(e) for e in old]:
        array = tomlkit.aot()
        for entry in entries:
            array.append(entry)
        table[key] = array


def _new(value: Any, tables: int) -> Any:
    if isinstance(value, Mapping):
        if tables > 0:
            new = tomlkit.table(
                is_super_table=bool(value) and all(isinstance(v, Mapping) for v in value.values())
            )
            for k, v in value.items():
                new[k] = _new(v, tables - 1)
            return new
        inline = tomlkit.inline_table()
        inline.update({k: _new(v, -1) for k, v in value.items()})
        return inline
    if isinstance(value, list) and tables < 0:
        return [_new(v, tables) for v in value]
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        array = tomlkit.aot()
        for v in value:
            entry = tomlkit.table()
            _merge(entry, v, v, tables=0)
            array.append(entry)
        return array
    return value
