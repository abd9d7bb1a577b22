"""Write Outlook MSG files for the tests: an OLE compound file ([MS-CFB]) holding the message's
properties as [MS-OXMSG] lays them out. Nothing on the development machine writes MSG files
and the corpus has none, so the tests build a small, conforming one (version 3, 512-byte
sectors, small streams in the mini stream).
"""

from __future__ import annotations

import math
import struct
from typing import Any

SECTOR, MINI, CUTOFF = 512, 64, 4096
FREE, END, FATSECT, NONE = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
STORAGE, STREAM, ROOT = 1, 2, 5
UNICODE, BINARY, INT32 = 0x001F, 0x0102, 0x0003


def compound_file(tree: dict[str, Any]) -> bytes:
    """A compound file of nested storages (dicts) and streams (bytes)."""
    entries: list[dict[str, Any]] = []

    def add(name: str, node: Any) -> int:
        index = len(entries)
        is_storage = isinstance(node, dict)
        entries.append({"name": name, "type": STORAGE if is_storage else STREAM, "kids": [],
                        "data": b"" if is_storage else node, "left": NONE, "right": NONE, "child": NONE,
                        "start": 0, "size": 0})
        if is_storage:
            entries[index]["kids"] = [add(child, value) for child, value in node.items()]
        return index

    add("Root Entry", tree)
    entries[0]["type"] = ROOT

    def balanced(kids: list[int]) -> int:
        # Siblings form a binary search tree ordered by name length, then upper-cased name.
        if not kids:
            return NONE
        middle = len(kids) // 2
        node = kids[middle]
        entries[node]["left"], entries[node]["right"] = balanced(kids[:middle]), balanced(kids[middle + 1 :])
        return node

    for entry in entries:
        entry["child"] = balanced(sorted(entry["kids"], key=lambda i: (len(entries[i]["name"]), entries[i]["name"].upper())))

    minifat: list[int] = []
    ministream = bytearray()
    for entry in entries:
        data = entry["data"]
        if entry["type"] == STREAM and 0 < len(data) < CUTOFF:
            count = math.ceil(len(data) / MINI)
            entry["start"], entry["size"] = len(minifat), len(data)
            minifat += [len(minifat) + k + 1 for k in range(count - 1)] + [END]
            ministream += data.ljust(count * MINI, b"\0")

    fat: list[int] = []
    sectors = bytearray()

    def allocate(data: bytes) -> int:
        if not data:
            return END
        count = math.ceil(len(data) / SECTOR)
        start = len(fat)
        fat.extend([start + k + 1 for k in range(count - 1)] + [END])
        sectors.extend(data.ljust(count * SECTOR, b"\0"))
        return start

    entries[0]["start"], entries[0]["size"] = allocate(bytes(ministream)), len(ministream)
    for entry in entries:
        if entry["type"] == STREAM:
            if len(entry["data"]) >= CUTOFF:
                entry["start"], entry["size"] = allocate(entry["data"]), len(entry["data"])
            elif not entry["data"]:
                entry["start"] = END
    minifat_entries = minifat + [FREE] * (-len(minifat) % (SECTOR // 4))
    minifat_start = allocate(struct.pack(f"<{len(minifat_entries)}I", *minifat_entries)) if minifat else END
    minifat_sectors = len(minifat_entries) * 4 // SECTOR if minifat else 0
    directory = b"".join(directory_entry(e) for e in entries)
    directory += empty_entry() * (-len(entries) % (SECTOR // 128))
    directory_start = allocate(directory)

    fat_sectors = 1
    while len(fat) + fat_sectors > fat_sectors * (SECTOR // 4):
        fat_sectors += 1
    fat_start = len(fat)
    fat.extend([FATSECT] * fat_sectors)
    fat.extend([FREE] * (fat_sectors * (SECTOR // 4) - len(fat)))
    sectors.extend(struct.pack(f"<{len(fat)}I", *fat))
    assert fat_sectors <= 109, "this writer keeps the FAT in the header's DIFAT"

    difat = [fat_start + k for k in range(fat_sectors)] + [FREE] * (109 - fat_sectors)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII109I",
        bytes.fromhex("D0CF11E0A1B11AE1"), b"\0" * 16, 0x3E, 3, 0xFFFE, 9, 6, b"\0" * 6,
        0, fat_sectors, directory_start, 0, CUTOFF, minifat_start, minifat_sectors, END, 0, *difat,
    )
    return header + bytes(sectors)


def directory_entry(entry: dict[str, Any]) -> bytes:
    name = entry["name"].encode("utf-16-le") + b"\0\0"
    assert len(name) <= 64, entry["name"]
    return struct.pack("<64sHBBIII16sIQQIQ", name, len(name), entry["type"], 1, entry["left"], entry["right"],
                       entry["child"], b"\0" * 16, 0, 0, 0, entry["start"], entry["size"])


def empty_entry() -> bytes:
    return struct.pack("<64sHBBIII16sIQQIQ", b"", 0, 0, 0, NONE, NONE, NONE, b"\0" * 16, 0, 0, 0, 0, 0)


def properties(header: bytes, props: list[tuple[int, int, Any]]) -> dict[str, bytes]:
    """The property stream ([MS-OXMSG] 2.4) and one stream per variable-length property."""
    stream = bytearray(header)
    streams: dict[str, bytes] = {}
    for pid, kind, value in props:
        tag = (pid << 16) | kind
        if kind == INT32:
            stream += struct.pack("<IIiI", tag, 6, value, 0)
            continue
        data = value.encode("utf-16-le") if kind == UNICODE else value
        streams[f"__substg1.0_{pid:04X}{kind:04X}"] = data
        stream += struct.pack("<IIII", tag, 6, len(data) + (2 if kind == UNICODE else 0), 0)
    return {"__properties_version1.0": bytes(stream), **streams}


def msg_file(*, subject: str, body: str, sender: tuple[str, str], to: list[str],
             attachments: list[tuple[str, bytes]]) -> bytes:
    """An Outlook message (IPM.Note) with Unicode properties, recipients and attachments."""
    tree: dict[str, Any] = properties(
        struct.pack("<8xIIII8x", len(to), len(attachments), len(to), len(attachments)),
        [(0x001A, UNICODE, "IPM.Note"), (0x0037, UNICODE, subject), (0x1000, UNICODE, body),
         (0x0C1A, UNICODE, sender[0]), (0x0C1F, UNICODE, sender[1]), (0x0E04, UNICODE, "; ".join(to)),
         (0x340D, INT32, 0x00040000)],  # PR_STORE_SUPPORT_MASK: STORE_UNICODE_OK
    )
    tree["__nameid_version1.0"] = {}
    for i, address in enumerate(to):
        tree[f"__recip_version1.0_#{i:08X}"] = properties(
            b"\0" * 8, [(0x3001, UNICODE, address), (0x3003, UNICODE, address), (0x39FE, UNICODE, address)]
        )
    for i, (name, data) in enumerate(attachments):
        tree[f"__attach_version1.0_#{i:08X}"] = properties(
            b"\0" * 8, [(0x3705, INT32, 1), (0x3707, UNICODE, name), (0x3704, UNICODE, name), (0x3701, BINARY, data)]
        )
    return compound_file(tree)
