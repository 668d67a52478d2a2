"""Read the records of an offline wandb run file (`run-<id>.wandb`): a LevelDB-style log of
32 KiB blocks, each record split into chunks with a 7-byte header (crc32, length, kind)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = struct.Struct("<IHB")
FULL, LAST = 1, 4


def read_records(path: Path) -> Iterator[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, chunks = 7, b""
    while pos + HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = HEADER.unpack_from(data, pos)
        if left < HEADER.size or (length == 0 and kind == 0):  # block padding
            pos += left
            continue
        chunks += data[pos + HEADER.size : pos + HEADER.size + length]
        pos += HEADER.size + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def run_summary(path: Path) -> dict:
    """{"group", "name", "tags", "exit_code", "summary": {key: json}} of one offline run."""
    out: dict = {"exit_code": None, "summary": {}}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(group=record.run.run_group, name=record.run.display_name, tags=list(record.run.tags))
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
        elif kind == "summary":
            for item in record.summary.update:  # tables and images arrive as nested keys
                out["summary"][item.key or "/".join(item.nested_key)] = item.value_json
    return out
