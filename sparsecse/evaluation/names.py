"""How tasks and metrics are named for people: table columns and progress bars."""

from __future__ import annotations

COLUMN_NAMES = {
    "sts12": "STS12", "sts13": "STS13", "sts14": "STS14", "sts15": "STS15", "sts16": "STS16",
    "stsb": "STS-B", "sickr": "SICK-R", "sts_avg": "STS avg",
    "mr": "MR", "cr": "CR", "subj": "SUBJ", "mpqa": "MPQA", "sst2": "SST-2", "trec": "TREC",
    "mrpc": "MRPC", "transfer_avg": "Tr. avg", "alignment": "alignment", "uniformity": "uniformity",
}  # fmt: skip


def display_name(key: str) -> str:
    return COLUMN_NAMES.get(key, key)
