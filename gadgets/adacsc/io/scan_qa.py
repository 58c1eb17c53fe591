"""Scan-level QA figures (the noise and EMI report, the EMI removal) sent down a chain to the
gadget that makes the images, which adds them to every image's QA meta.

Only ISMRMRD messages cross the process boundaries of a Gadgetron chain, so the figures travel as
one ismrmrd.Waveform with the user waveform id `SCAN_QA_WAVEFORM_ID` (ids from 1024 are free for
users): its uint32 samples hold the UTF-8 JSON of a {name: [text, ...]} mapping, padded with
spaces to whole words. Gadgets that do not know it pass it on untouched (connection filters);
the image writers and the server drop it, since it is chain-internal.
"""

from __future__ import annotations

import json

import ismrmrd
import numpy as np

SCAN_QA_WAVEFORM_ID = 1121
"""user waveform id of the scan QA message"""


def qa_waveform(meta: dict[str, list[str]]) -> ismrmrd.Waveform:
    """A waveform carrying `meta` (name -> list of strings)."""
    text = json.dumps({str(k): [str(v) for v in values] for k, values in meta.items()}, sort_keys=True)
    raw = text.encode("utf-8")
    raw += b" " * (-len(raw) % 4)
    words = np.frombuffer(raw, dtype="<u4").astype(np.uint32).reshape(1, -1)
    return ismrmrd.Waveform.from_array(words, waveform_id=SCAN_QA_WAVEFORM_ID)


def is_scan_qa(item: object) -> bool:
    """Whether `item` is a scan QA waveform."""
    return isinstance(item, ismrmrd.Waveform) and item.waveform_id == SCAN_QA_WAVEFORM_ID


def read_scan_qa(item: ismrmrd.Waveform) -> dict[str, list[str]]:
    """The mapping a scan QA waveform carries; ValueError when it does not decode."""
    try:
        meta = json.loads(np.asarray(item.data, dtype="<u4").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"scan QA waveform does not decode: {err}") from err
    if not isinstance(meta, dict) or not all(isinstance(v, list) for v in meta.values()):
        raise ValueError("scan QA waveform does not hold a name -> list mapping")
    return {str(k): [str(x) for x in v] for k, v in meta.items()}
