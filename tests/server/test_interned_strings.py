"""A scan adds nothing to CPython's table of interned strings (issue 19, item 13).

Every string interned during a scan that dies with it uses a slot of the table until the table is
rebuilt, and once its free slots run out it is rebuilt at twice the size: after about 20,000 such
strings (some 2,200 scans at 9 a scan) the server's RSS stepped up by 1.8 MB. pathlib interns every
part of every path it makes, so the per-scan paths (the chain's file, the noise file and its
uniquely named temporary) are text, and the folders' paths are made once (adacsc.resources).
The table is read in place (support.interned).
"""

import gc
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from adacsc import resources
from adacsc.io.noise_store import NoiseStore, StoredNoise
from adacsc.io.output_file import atomic_output
from adacsc.server import protocol as proto
from support.interned import InternedTable, TableRebuilt
from support.server import FRONTEND, error_texts, exchange, scan_stream, threaded_server

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def table() -> InternedTable:
    found = InternedTable.find()
    if found is None:
        pytest.skip("the table of interned strings is read on CPython 3.11 and 3.12 on Linux only")
    return found


def _interned_elsewhere(text: str) -> bool:
    """Whether a string equal to `text` is interned (a fresh copy of it is then not what sys.intern returns)."""
    copy = "".join(list(text))
    return sys.intern(copy) is not copy


def test_the_count_counts_insertions(table: InternedTable) -> None:
    mark = table.slots_used()
    kept = [sys.intern(f"adacsc-test-{uuid.uuid4().hex}") for _ in range(3)]
    sys.intern(kept[0])  # already there: not an insertion
    assert table.insertions_since(mark) == 3


def test_an_atomic_write_interns_no_name(tmp_path: Path, table: InternedTable) -> None:
    output = os.path.join(tmp_path, f"noise_{uuid.uuid4().hex}.npz")
    mark = table.slots_used()
    with atomic_output(output) as temporary, open(temporary, "wb") as stream:
        stream.write(b"complete")
    assert table.insertions_since(mark) == 0
    assert Path(output).read_bytes() == b"complete" and os.listdir(tmp_path) == [os.path.basename(output)]
    with atomic_output(output, overwrite=True) as temporary:  # and while the temporary is there
        assert not _interned_elsewhere(temporary) and not _interned_elsewhere(os.path.basename(temporary))


def test_the_noise_store_interns_no_measurement_id(tmp_path: Path, table: InternedTable) -> None:
    store = NoiseStore(tmp_path)
    noise = StoredNoise(np.eye(2, dtype=np.complex64), ["c0", "c1"], 5.0, 256)
    store.save("warm_up", noise)
    store.load("warm_up")
    measurement = f"meas_{uuid.uuid4().hex}"
    mark = table.slots_used()
    written = store.save(measurement, noise)
    assert store.load(measurement).coil_labels == ["c0", "c1"] and store.load(f"{measurement}_other") is None
    assert table.insertions_since(mark) == 0
    assert not _interned_elsewhere(os.path.basename(written))


def test_resource_lookups_intern_nothing_once_warm(tmp_path: Path, table: InternedTable,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What a scan looks up by name (its chain; the folders named in its errors and warnings),
    with operator folders set: after the first lookup, nothing (each folder's path is kept)."""
    for kind in (resources.CONFIG, resources.DICTIONARY, resources.NOISE):
        folder = os.path.join(tmp_path, f"site_{kind.noun}_{uuid.uuid4().hex}")
        os.mkdir(folder)
        monkeypatch.setenv(kind.environment, folder)
    with open(os.path.join(os.environ[resources.CONFIG.environment], "site_chain.xml"), "w") as stream:
        stream.write("<configuration/>")

    def lookups() -> None:
        assert resources.locate(resources.CONFIG, "site_chain").endswith("site_chain.xml")
        assert resources.locate(resources.CONFIG, "adacsc_frontend").endswith("adacsc_frontend.xml")
        with pytest.raises(resources.ResourceError):
            resources.locate(resources.CONFIG, f"none_{uuid.uuid4().hex}")
        text = resources.without_folders(f"in {os.environ[resources.DICTIONARY.environment]}")
        assert text == f"in ${resources.DICTIONARY.environment}"
        NoiseStore().load("absent")

    lookups()
    mark = table.slots_used()
    lookups()
    assert table.insertions_since(mark) == 0


def _scan_with_id(stream: bytes, old: bytes, index: int) -> bytes:
    """The session `stream` with its measurementID replaced by a new one of the same length (the
    header message's length stays right)."""
    new = f"m{index:0{len(old) - 1}d}".encode()
    assert len(new) == len(old) and stream.count(old) == 1
    return stream.replace(old, new)


def test_scans_through_the_server_intern_no_string(small_scan: Path, table: InternedTable) -> None:
    """Scans with new measurementIDs (as a scanner sends them) through the front-end chain, its
    noise covariance stored for each: no insertion at all once the first scans loaded the code.
    The client sends prepared bytes over a real socket, so what is counted is the server's. A
    window of 6 scans is counted up to 3 times (a rebuild of the table, or a thread of another
    test importing a module meanwhile, spoils a window); one source per scan fails every window."""
    measurement = f"small_{small_scan.stem}_0".encode()
    stream = scan_stream(small_scan, FRONTEND)
    counts: list[int | str] = []
    with threaded_server(collect_garbage=True) as running:
        try:
            def scans(first: int, count: int) -> None:
                for index in range(first, first + count):
                    replies = exchange(running.port, _scan_with_id(stream, measurement, index), timeout=60)
                    assert replies and replies[-1].mid == proto.CLOSE and not error_texts(replies), \
                        error_texts(replies)
                running.wait_until(lambda: not running.server.running_threads(), what="the connections ended")

            scans(0, 2)
            while len(counts) < 3 and 0 not in counts:
                mark = table.slots_used()
                scans(10 * (len(counts) + 1), 6)
                try:
                    counts.append(table.insertions_since(mark))
                except TableRebuilt:
                    counts.append("rebuilt")
        finally:
            gc.unfreeze()  # the server froze this test process's objects
    assert running.server.sessions_served == 2 + 6 * len(counts)
    assert 0 in counts, f"strings interned by 6 scans, per window: {counts}"
