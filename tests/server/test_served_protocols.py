"""Scanner protocols through `adacsc serve` + `adacsc send` on real sockets: the images equal the
replay's, bit for bit, and the readouts left out are reported to the client by name."""

import shutil
import subprocess
from pathlib import Path

import pytest

from adacsc.chain.config import load_chain
from adacsc.client import send_scan
from adacsc.replay import replay
from support.scans import read_images, simulated
from support.server import FRONTEND, assert_same_images, threaded_server

pytestmark = pytest.mark.timeout(180)

BASE = {"matrix": 32, "coils": 4, "noise": 0.02, "seed": 5, "object": "phantom"}
PROTOCOLS = {
    "every_extra_nex2_outer_two_contrasts": dict(
        slices=2, averages=2, average_loop="outer", contrasts=2, navigators=2, phase_correction=2,
        dummy_scans=3, feedback=2, calibration_lines=8, reverse=True),
    "slab_of_8_partitions_nex2_inner": dict(slices=1, partitions=8, averages=2),
}


@pytest.fixture(scope="module")
def server():
    with threaded_server(workers=2, io_timeout_s=20.0) as running:
        yield running


def served_and_replayed(scan: Path, server, tmp_path: Path) -> tuple[dict, dict, list[str]]:
    result = send_scan(scan, tmp_path / "sent.h5", port=server.port, config_name=FRONTEND, group="g")
    assert not result.errors, result.errors
    replay(scan, tmp_path / "replayed.h5", load_chain(FRONTEND), strict=False)  # as the server runs it
    return read_images(tmp_path / "sent.h5", "g"), read_images(tmp_path / "replayed.h5"), result.texts


@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_over_the_server_equals_replay(name: str, server, sim_dir: Path, tmp_path: Path) -> None:
    options = PROTOCOLS[name]
    scan = simulated(sim_dir, f"served_{name}", **BASE, **options)
    sent, replayed, texts = served_and_replayed(scan, server, tmp_path)
    assert_same_images(sent, replayed)
    images = sent["image_1"]
    expected = options["slices"] * options.get("partitions", 1) * options.get("contrasts", 1)
    assert len(images) == expected and len({im.image_index for im in images}) == expected
    assert {im.meta["Averages"] for im in images} == {"2"}
    if options.get("navigators"):
        warning = next(t for t in texts if "readouts:" in t)
        for named in ("navigator: left out", "phase correction: left out", "dummy scan: left out",
                      "RT feedback: left out", "HP feedback: left out", "calibration-only: used for calibration"):
            assert named in warning, warning


SHEPP_LOGAN = shutil.which("ismrmrd_generate_cartesian_shepp_logan")


@pytest.mark.skipif(SHEPP_LOGAN is None, reason="needs ismrmrd_generate_cartesian_shepp_logan "
                                                "(Debian package ismrmrd-tools)")
@pytest.mark.parametrize("options, images", [(["-a", "2"], 2), (["-r", "3"], 3), (["-a", "4", "-w", "16"], 4)])
def test_ismrmrd_tools_shepp_logan_over_the_server_equals_replay(options: list[str], images: int, server,
                                                                 tmp_path: Path) -> None:
    scan = tmp_path / "shepp.h5"
    subprocess.run([SHEPP_LOGAN, "-m", "32", "-c", "4", *options, "-o", str(scan)], check=True,
                   capture_output=True, timeout=60)
    sent, replayed, _ = served_and_replayed(scan, server, tmp_path)
    assert_same_images(sent, replayed)
    assert sorted(im.repetition for im in sent["image_1"]) == list(range(images))
