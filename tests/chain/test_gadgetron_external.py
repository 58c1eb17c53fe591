"""The gadgets under the real gadgetron-python package: each node runs as Gadgetron starts it
(`python -m gadgetron <port> <module> <target>`), one process per `<external>`, with this test
playing Gadgetron's side of the socket; the result must equal the in-process replay."""

from pathlib import Path

import ismrmrd
import numpy as np
from gadgetron.types import ImageArray, ReconData

from adacsc.chain.config import load_chain
from adacsc.io.dataset import InputScan
from adacsc.io.scan_qa import is_scan_qa, read_scan_qa
from adacsc.replay import replay
from support.scans import image_stack, read_images, simulated
from support.gadgetron_host import run_external_node


def test_front_end_chain_across_processes_equals_in_process_replay(sim_scan: Path, tmp_path: Path) -> None:
    chain = load_chain("adacsc_frontend").with_overrides({"coil_combination.output": "image_array"})
    with InputScan(sim_scan) as scan:
        header = scan.header_bytes()
        items: list[object] = list(scan.acquisitions())
    kinds = []
    for node in chain.nodes:
        received, log = run_external_node(node.module, node.target, node.configuration, header, items)
        assert "Traceback" not in log, log
        items = [item for _, item in received]
        kinds.append({type(item).__name__ for item in items})
    # the scan QA waveform (the noise report) crosses every process boundary untouched
    assert kinds == [{"Acquisition", "Waveform"}, {"ReconData", "Waveform"}, {"ImageArray", "Waveform"}]
    assert "NoiseRMS" in read_scan_qa(next(item for item in items if is_scan_qa(item)))
    items = [item for item in items if not is_scan_qa(item)]
    assert all(isinstance(a, ImageArray) for a in items) and len(items) == 2

    replay(sim_scan, tmp_path / "local.h5", load_chain("adacsc_frontend"))
    local = image_stack(read_images(tmp_path / "local.h5")["image_1"])
    remote = np.stack([np.asarray(a.data)[:, :, 0, 0, 0, 0, 0].T for a in
                       sorted(items, key=lambda a: np.asarray(a.headers).flat[0].slice)])
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-5 * np.abs(local).max())


def test_noise_node_consumes_noise_and_images_node_sends_images(sim_scan: Path) -> None:
    chain = load_chain("adacsc_frontend")
    with InputScan(sim_scan) as scan:
        header = scan.header_bytes()
        acquisitions = list(scan.acquisitions())
    noise = sum(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acquisitions)
    received, _ = run_external_node(chain.nodes[0].module, chain.nodes[0].target,
                                    chain.nodes[0].configuration, header, acquisitions)
    received = [(mid, a) for mid, a in received if not is_scan_qa(a)]  # the noise report
    assert noise > 0 and len(received) == len(acquisitions) - noise
    buffered, _ = run_external_node(chain.nodes[1].module, chain.nodes[1].target,
                                    chain.nodes[1].configuration, header, [a for _, a in received])
    assert all(isinstance(b, ReconData) for _, b in buffered)
    images, _ = run_external_node(chain.nodes[2].module, chain.nodes[2].target,
                                  chain.nodes[2].configuration, header, [b for _, b in buffered])
    assert [mid for mid, _ in images] == [1022, 1022]
    assert all(isinstance(im, ismrmrd.Image) and im.meta["DataRole"] == "CoilCombined" for _, im in images)


def test_scanner_protocol_across_processes_equals_in_process_replay(sim_dir: Path, tmp_path: Path) -> None:
    """Navigators, calibration-only lines, reversed readouts, two averages and a 3-D slab: each node
    in its own gadgetron-python process, ReconData with averages along N, E2 partitions and a
    reference buffer on the wire."""
    scan = simulated(sim_dir, "external_protocol", matrix=32, coils=4, slices=1, partitions=4, averages=2,
                     navigators=2, calibration_lines=8, reverse=True, seed=9, object="phantom")
    chain = load_chain("adacsc_frontend")
    with InputScan(scan) as source:
        header = source.header_bytes()
        items: list[object] = list(source.acquisitions())
    for node in chain.nodes:
        received, log = run_external_node(node.module, node.target, node.configuration, header, items)
        assert "Traceback" not in log, log
        items = [item for _, item in received]
    items = [item for item in items if not is_scan_qa(item)]  # the noise report crossed too
    assert len(items) == 4 and all(isinstance(im, ismrmrd.Image) for im in items)
    replay(scan, tmp_path / "local.h5", load_chain("adacsc_frontend"))
    local = image_stack(read_images(tmp_path / "local.h5")["image_1"])
    remote = np.stack([im.data[0, 0] for im in sorted(items, key=lambda im: im.slice)])
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-5 * np.abs(local).max())
    assert {im.meta["Averages"] for im in items} == {"2"}
