"""Daily use of the command line: outputs written whole or not at all, never over an existing
file or the input, typos refused the same way by recon and send, each error logged once with
what to do, and progress for a single-file recon."""

import io
import logging
import shutil
from pathlib import Path

import h5py
import pytest

from adacsc.chain.config import load_chain
from adacsc.cli import main
from adacsc.replay import replay
from adacsc.simulation.small_scan import write_small_scan


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    return write_small_scan(tmp_path / "scan.h5", lines=16, slices=2)


def recon(scan: Path, out: Path, *extra: str) -> int:
    return main(["recon", str(scan), "-o", str(out), "-c", "adacsc_frontend", "-G", "g", "--no-progress", *extra])


def test_an_existing_output_is_refused_unless_overwrite(scan, tmp_path, caplog):
    out = tmp_path / "out.h5"
    assert recon(scan, out) == 0
    assert recon(scan, out) == 2 and "exists: pass --overwrite to replace it" in caplog.text
    assert recon(scan, out, "--overwrite") == 0
    with h5py.File(out, "r") as f:
        assert list(f) == ["g"] and len(f["g"]["image_1"]["header"]) == 2  # replaced, not appended


def test_a_failed_recon_leaves_no_file(scan, tmp_path, caplog):
    out = tmp_path / "out.h5"
    assert recon(scan, out, "--set", "coil_map_method=nope") == 2
    assert not out.exists() and not list(tmp_path.glob("*out*"))


def test_output_equal_to_input_is_named(scan, caplog):
    assert recon(scan, scan) == 2
    assert "that is the input file" in caplog.text and "h5py" not in caplog.text


def test_each_error_is_logged_once(scan, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        assert main(["recon", str(scan), "-o", str(tmp_path / "o.h5"), "--no-progress",
                     "--set", "dictionary=no_such_dictionary"]) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no_such_dictionary" in errors[0].getMessage()


def test_a_config_typo_lists_the_available_configs(scan, tmp_path, caplog):
    assert main(["recon", str(scan), "-o", str(tmp_path / "o.h5"), "-c", "adacsc_lowfeild"]) == 2
    assert "available: " in caplog.text and "adacsc_lowfield" in caplog.text


def test_send_refuses_a_property_typo_like_recon(scan, tmp_path, caplog):
    assert main(["send", str(scan), "-o", str(tmp_path / "o.h5"), "-c", "adacsc_frontend", "--port", "1",
                 "--set", "dictonary=x"]) == 2
    assert "no node of chain 'adacsc_frontend' accepts property 'dictonary'" in caplog.text


def test_connection_refused_names_host_and_port(scan, tmp_path, caplog):
    assert main(["send", str(scan), "-o", str(tmp_path / "o.h5"), "--port", "1"]) == 2
    assert "cannot connect to 127.0.0.1:1" in caplog.text and not (tmp_path / "o.h5").exists()


def test_evaluate_without_bart_suggests_no_bart(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    monkeypatch.delenv("BART_TOOLBOX_PATH", raising=False)
    assert main(["evaluate", "-o", str(tmp_path), "--no-blackbox"]) == 2
    assert "pass --no-bart" in caplog.text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_single_file_recon_shows_per_slice_progress(scan, tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    replay(scan, tmp_path / "o.h5", load_chain("adacsc_frontend"), "g", progress=True)
    assert "2/2" in terminal.getvalue() and "slice/s" in terminal.getvalue()


def test_send_logs_a_server_error_once(scan, tmp_path, caplog):
    from support.server import threaded_server

    with threaded_server(workers=1) as running:
        assert main(["send", str(scan), "-o", str(tmp_path / "o.h5"), "-c", "adacsc_frontend", "--port",
                     str(running.port), "--set", "coil_map_method=nope"]) == 1
    client_errors = [r.getMessage() for r in caplog.records
                     if r.levelno >= logging.ERROR and r.name.startswith(("adacsc.client", "adacsc.commands"))]
    assert sum("coil_map_method" in text for text in client_errors) == 1, client_errors
    assert not (tmp_path / "o.h5").exists()
