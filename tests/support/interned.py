"""How many strings CPython adds to its table of interned strings while some code runs.

The table is a dict inside the interpreter (`interned` in Objects/unicodeobject.c), not reachable
from Python. Interning a string whose value is not in the table adds an entry; when the string
dies its entry is only marked deleted, and the slot is reused only when the table is rebuilt,
once all its free slots are spent. So every insertion uses a slot, and a long-running process
that interns strings which then die (pathlib interns every part of every path it makes) rebuilds
the table, larger, after enough of them (issue 19, item 13: a 1.8 MB step in the server's RSS).
The count of used slots (dk_nentries) only grows between rebuilds: its difference is the number
of insertions.

`InternedTable` finds the table by reading memory: the pointer to it lies in the writable data of
the Python runtime (libpython or the executable), and the table is the dict whose entries hold a
freshly interned probe string as key and value. Only raw reads of mapped memory: no Python
reference to a candidate is made (some are freed dicts on a free list). Written for CPython 3.11's
layouts of PyDictObject and PyDictKeysObject (offsets below; 3.12 has the same): `find` checks
that interning a new string adds exactly one used slot, and returns None elsewhere or when not.
"""

from __future__ import annotations

import ctypes
import os
import sys
import uuid

import numpy as np

_MA_USED, _MA_KEYS, _MA_VALUES = 16, 32, 40  # PyDictObject: refcount, type, ma_used, version tag, ma_keys, ma_values
_DK_LOG2_SIZE, _DK_LOG2_INDEX_BYTES, _DK_KIND, _DK_NENTRIES, _DK_HEADER = 8, 9, 10, 24, 32  # PyDictKeysObject
_UNICODE_KEYS = 1  # DICT_KEYS_UNICODE: entries are (key, value) pairs, 16 bytes
_WORD = 8


class TableRebuilt(RuntimeError):
    """The table was rebuilt while counting: the count of that window is unknown."""


def _mappings() -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, file) of every mapping of this process."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end, fields[1], fields[5].strip() if len(fields) > 5 else ""))
    return found


class _Memory:
    """Raw reads of this process's readable mappings (a snapshot of /proc/self/maps)."""

    def __init__(self, mappings: list[tuple[int, int, str, str]]) -> None:
        readable = sorted((start, end) for start, end, perms, _ in mappings if perms.startswith("r"))
        self.starts = np.array([start for start, _ in readable], dtype=np.uint64)
        self.ends = np.array([end for _, end in readable], dtype=np.uint64)

    def readable(self, address: int, size: int) -> bool:
        index = int(np.searchsorted(self.starts, np.uint64(address), side="right")) - 1
        return index >= 0 and address + size <= int(self.ends[index])

    def word(self, address: int) -> int | None:
        return ctypes.c_uint64.from_address(address).value if self.readable(address, _WORD) else None


def _runtime_data(mappings: list[tuple[int, int, str, str]]) -> list[tuple[int, int]]:
    """The writable data of the Python runtime: its file's rw mappings and the anonymous mapping
    right after each (the rest of .bss, where the pointer to the table lives)."""
    files = {os.path.realpath(sys.executable)}
    files |= {path for *_, path in mappings if "libpython" in os.path.basename(path)}
    regions = []
    for index, (start, end, perms, path) in enumerate(mappings):
        if path in files and perms.startswith("rw"):
            regions.append((start, end))
            if index + 1 < len(mappings):
                after = mappings[index + 1]
                if after[0] == end and after[2].startswith("rw") and not after[3]:
                    regions.append(after[:2])
    return regions


class InternedTable:
    """The interpreter's table of interned strings, read in place."""

    def __init__(self, address: int) -> None:
        self.address = address

    @classmethod
    def find(cls) -> InternedTable | None:
        """The table, or None where it cannot be found (not CPython 3.11/3.12, no /proc)."""
        if sys.implementation.name != "cpython" or sys.version_info[:2] not in ((3, 11), (3, 12)) \
                or not os.path.exists("/proc/self/maps"):
            return None
        probe = sys.intern(f"adacsc-interned-probe-{uuid.uuid4().hex}")
        mappings = _mappings()
        memory = _Memory(mappings)
        for start, end in _runtime_data(mappings):
            words = np.frombuffer(ctypes.string_at(start, end - start), dtype=np.uint64)
            for pointer in np.unique(words[(words >= memory.starts[0]) & (words % _WORD == 0)]).tolist():
                if memory.word(pointer + _WORD) == id(dict) and cls._holds(memory, pointer, probe):
                    table = cls(pointer)
                    before = table.slots_used()
                    sys.intern(f"adacsc-interned-probe-{uuid.uuid4().hex}")
                    if table.slots_used() == (before[0], before[1] + 1):
                        return table
        return None

    @staticmethod
    def _holds(memory: _Memory, pointer: int, probe: str) -> bool:
        """Whether the dict at `pointer` is alive, combined, with str keys, and maps `probe` to itself."""
        refcount, used = memory.word(pointer), memory.word(pointer + _MA_USED)
        keys, values = memory.word(pointer + _MA_KEYS), memory.word(pointer + _MA_VALUES)
        if not refcount or not used or values != 0 or not keys or not memory.readable(keys, _DK_HEADER):
            return False
        header = ctypes.string_at(keys, _DK_HEADER)
        log2_size, log2_index_bytes, kind = header[_DK_LOG2_SIZE], header[_DK_LOG2_INDEX_BYTES], header[_DK_KIND]
        entries = int.from_bytes(header[_DK_NENTRIES:_DK_NENTRIES + _WORD], "little")
        if kind != _UNICODE_KEYS or not 3 <= log2_size <= 40 or not 0 < entries <= 1 << log2_size:
            return False
        first = keys + _DK_HEADER + (1 << log2_index_bytes)
        if not memory.readable(first, entries * 2 * _WORD):
            return False
        pairs = np.frombuffer(ctypes.string_at(first, entries * 2 * _WORD), dtype=np.uint64).reshape(-1, 2)
        return bool(((pairs[:, 0] == id(probe)) & (pairs[:, 1] == id(probe))).any())

    def slots_used(self) -> tuple[int, int]:
        """(address of the current entry table, how many of its slots are used, dead or alive)."""
        keys = ctypes.c_uint64.from_address(self.address + _MA_KEYS).value
        return keys, ctypes.c_int64.from_address(keys + _DK_NENTRIES).value

    def insertions_since(self, mark: tuple[int, int]) -> int:
        """Strings interned since `slots_used()` returned `mark`; TableRebuilt if it was rebuilt."""
        keys, used = self.slots_used()
        if keys != mark[0]:
            raise TableRebuilt("the table of interned strings was rebuilt meanwhile")
        return used - mark[1]
