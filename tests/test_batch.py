"""Batch replay (`adacsc recon` over many files): a folder of small simulated scans with one corrupt
file, on the local process pool and on a real local Dask cluster; resumable; failures reported."""

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from adacsc import batch
from adacsc.chain.config import load_chain
from adacsc.cli import main
from adacsc.io.output_file import PARTIAL_MARK
from adacsc.simulation.scanner import SimulationConfig, simulate_scan
from support.scans import image_stack, read_images

CHAIN = ["-c", "adacsc_frontend"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scans/: three small simulated scans (one in a sub-folder) and a corrupt .h5."""
    folder = tmp_path_factory.mktemp("archive") / "scans"
    (folder / "site2").mkdir(parents=True)
    for seed, name in enumerate(("a.h5", "b.h5", "site2/c.h5"), start=1):
        simulate_scan(folder / name, SimulationConfig(matrix=32, coils=2, slices=1, noise=0.02, seed=seed))
    (folder / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))
    return folder


def outputs(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): image_stack(read_images(p)["image_1"])
            for p in sorted(folder.rglob("*.h5"))}


def test_plan_keeps_relative_paths_and_refuses_clashes(archive: Path, tmp_path: Path) -> None:
    jobs = batch.plan_jobs([archive, archive / "a.h5"], tmp_path / "out")
    assert [j.output.relative_to((tmp_path / "out").resolve()).as_posix() for j in jobs] == [
        "a.h5", "b.h5", "corrupt.h5", "site2/c.h5"]
    twin = tmp_path / "twin"
    twin.mkdir()
    shutil.copy(archive / "a.h5", twin / "a.h5")
    with pytest.raises(batch.BatchError, match="same output"):
        batch.plan_jobs([archive, twin / "a.h5"], tmp_path / "out")
    with pytest.raises(batch.BatchError, match="no such file"):
        batch.plan_jobs([tmp_path / "absent"], tmp_path / "out")


def test_local_pool_reports_the_corrupt_file_and_resumes(
        archive: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "recon"
    with caplog.at_level(logging.INFO):
        code = main(["recon", str(archive), "-o", str(out), *CHAIN, "--workers", "2",
                     "--report", str(tmp_path / "report.json")])
    assert code == 1
    assert sorted(outputs(out)) == ["a.h5", "b.h5", "site2/c.h5"]
    assert not list(out.rglob(f"*{PARTIAL_MARK}*")), "no temporary file left behind"
    assert "FAILED" in caplog.text and "corrupt.h5" in caplog.text
    assert "3 reconstructed, 0 skipped (already complete), 1 failed" in caplog.text
    report = json.loads((tmp_path / "report.json").read_text())
    assert {Path(f["source"]).name: f["status"] for f in report["files"]} == {
        "a.h5": "done", "b.h5": "done", "c.h5": "done", "corrupt.h5": "failed"}

    done = {p: p.stat().st_mtime_ns for p in out.rglob("*.h5")}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["recon", str(archive), "-o", str(out), *CHAIN, "--workers", "2"]) == 1
    assert "0 reconstructed, 3 skipped (already complete), 1 failed" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.h5")} == done

    (archive / "corrupt.h5").rename(archive / "corrupt.moved")  # the bad file is dealt with: all done
    try:
        assert main(["recon", str(archive), "-o", str(out), *CHAIN]) == 0
    finally:
        (archive / "corrupt.moved").rename(archive / "corrupt.h5")


def test_a_failed_replay_leaves_no_output(archive: Path, tmp_path: Path) -> None:
    chain = load_chain("adacsc_frontend")
    target = tmp_path / "x" / "corrupt.h5"
    outcome = batch.run_job(str(archive / "corrupt.h5"), str(target), batch.chain_to_xml(chain), chain.name)
    assert outcome.status == "failed" and outcome.error
    assert not target.exists() and not list(target.parent.iterdir())
    ok = batch.run_job(str(archive / "a.h5"), str(target.with_name("a.h5")), batch.chain_to_xml(chain), chain.name)
    assert ok.status == "done" and ok.images == {"image_1": 1}
    again = batch.run_job(str(archive / "a.h5"), str(target.with_name("a.h5")), batch.chain_to_xml(chain), chain.name)
    assert again.status == "skipped"


def test_a_single_file_still_replays_into_that_file(archive: Path, tmp_path: Path) -> None:
    assert main(["recon", str(archive / "a.h5"), "-o", str(tmp_path / "one.h5"), *CHAIN]) == 0
    assert list(read_images(tmp_path / "one.h5")) == ["image_1"]


def test_dask_cluster_gives_the_same_outputs(archive: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    distributed = pytest.importorskip("dask.distributed", reason="the cluster extra (dask[distributed]) is not installed")
    local, remote = tmp_path / "local", tmp_path / "dask"
    assert main(["recon", str(archive), "-o", str(local), *CHAIN, "--workers", "2", "--no-progress"]) == 1
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with caplog.at_level(logging.INFO):
            code = main(["recon", str(archive), "-o", str(remote), *CHAIN, "--scheduler", cluster.scheduler_address])
    assert code == 1
    assert "Dask scheduler" in caplog.text and "2 worker(s)" in caplog.text
    assert "FAILED" in caplog.text and "corrupt.h5" in caplog.text
    ours, theirs = outputs(local), outputs(remote)
    assert sorted(theirs) == sorted(ours) == ["a.h5", "b.h5", "site2/c.h5"]
    for name in ours:
        np.testing.assert_allclose(theirs[name], ours[name], rtol=1e-6, atol=1e-6 * np.abs(ours[name]).max())


def test_unreachable_scheduler_is_one_clear_error(archive: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "SCHEDULER_TIMEOUT_S", 2.0)
    pytest.importorskip("dask.distributed", reason="the cluster extra (dask[distributed]) is not installed")
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with caplog.at_level(logging.ERROR):
        code = main(["recon", str(archive / "a.h5"), str(archive / "b.h5"), "-o", str(tmp_path / "o"), *CHAIN,
                     "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert code == 2 and "cannot reach the Dask scheduler" in caplog.text
