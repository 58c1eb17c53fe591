"""`adacsc serve`: its limit options become every session's scan limits (adacsc.scan_context), which
the gadgets enforce, with nothing written to the process environment."""

import os
from pathlib import Path

import pytest

from adacsc.cli import build_parser
from adacsc.client import send_scan
from adacsc.commands import serve
from adacsc.limits import GiB, ScanLimits
from adacsc.simulation.small_scan import write_small_scan
from support.server import chain_text, threaded_server

LIMIT_VARIABLES = ("ADACSC_MAX_MATRIX", "ADACSC_MAX_CHANNELS", "ADACSC_MAX_ITERATIONS", "ADACSC_MAX_SCAN_GB")
CSC_CHAIN = chain_text(("adacsc.gadgets.noise_adjust", "noise_adjust"),
                       ("adacsc.gadgets.readout_buffer", "readout_buffer"),
                       ("adacsc.gadgets.coil_combination", "coil_combination"),
                       ("adacsc.gadgets.csc", "csc"))


@pytest.fixture
def no_limits_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_limit_options_are_the_sessions_scan_limits(no_limits_in_the_environment):
    args = build_parser("serve").parse_args(["serve", "--max-iterations", "5", "--max-matrix", "64",
                                             "--max-channels", "8", "--max-scan-gb", "2"])
    settings = serve.settings_from_args(args)
    assert settings.session.scan_limits == ScanLimits(max_matrix=64, max_channels=8, max_iterations=5,
                                                      max_scan_bytes=2 * GiB)
    assert settings.session.max_scan_bytes == 2 * GiB
    assert not set(LIMIT_VARIABLES) & set(os.environ)


def test_a_servers_iteration_limit_reaches_the_csc_gadget_without_the_environment(tmp_path: Path,
                                                                                  no_limits_in_the_environment):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=4)
    with threaded_server(workers=1, scan_limits=ScanLimits(max_iterations=5)) as running:
        refused = send_scan(scan, tmp_path / "refused.h5", port=running.port, config_text=CSC_CHAIN,
                            overrides={"iterations": "6"}, timeout=60)
        allowed = send_scan(scan, tmp_path / "allowed.h5", port=running.port, config_text=CSC_CHAIN,
                            overrides={"iterations": "5"}, timeout=60)
    assert allowed.ok and allowed.images.get("image_1") == 1, (allowed.errors, allowed.images)
    assert not refused.ok and "iterations='6': exceeds the operator limit of 5" in refused.errors[0]
