"""`adacsc serve` as a FIRE/OpenRecon host talks to it, over real sockets: a stock CONFIG name
replaced by the JSON `config`, every UI parameter a string, int16 series with their meta back, and
the geometry of an oblique, off-centre slice kept."""

import json

import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest

from adacsc.io.dataset import InputScan
from adacsc.io.header import parse_header
from adacsc.packaging import openrecon
from adacsc.server import protocol as proto
from adacsc.simulation.small_scan import write_small_scan
from support.server import error_texts, exchange, threaded_server

pytestmark = pytest.mark.timeout(120)

PROTOCOL = "t2_tse_tra_0p05T"
POSITION = (-12.5, 31.0, 47.5)
TABLE = (0.0, 0.0, -1150.0)


def oblique_directions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """read, phase, slice: rotated 20 degrees about z, then tilted 25 degrees about read."""
    a, b = np.deg2rad(20), np.deg2rad(25)
    read = np.array([np.cos(a), np.sin(a), 0.0])
    phase0 = np.array([-np.sin(a), np.cos(a), 0.0])
    normal = np.cross(read, phase0)
    phase = np.cos(b) * phase0 + np.sin(b) * normal
    return read, phase, np.cross(read, phase)


@pytest.fixture(scope="module")
def fire_stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[bytes]]:
    """(header with a protocol name, acquisitions of an oblique off-centre 2-slice scan)."""
    path = write_small_scan(tmp_path_factory.mktemp("fire") / "oblique.h5", coils=4, lines=16, slices=2)
    read, phase, slice_dir = oblique_directions()
    with InputScan(path) as scan:
        header = parse_header(scan.header_bytes())
        acquisitions = list(scan.acquisitions())
    header.measurementInformation.protocolName = PROTOCOL
    messages = []
    for acquisition in acquisitions:
        acquisition.read_dir[:], acquisition.phase_dir[:], acquisition.slice_dir[:] = read, phase, slice_dir
        acquisition.position[:] = np.array(POSITION) + 5.0 * acquisition.idx.slice * slice_dir
        acquisition.patient_table_position[:] = TABLE
        messages.append(proto.item_message(acquisition))
    return ismrmrd.xsd.ToXML(header).encode(), messages


@pytest.fixture(scope="module")
def server():
    with threaded_server(workers=2, io_timeout_s=30.0) as running:
        yield running


def ui_parameters(**changes: str) -> dict[str, str]:
    """What the scanner sends: every UI parameter of the label, as strings."""
    label = openrecon.build_label(openrecon.LabelSettings())
    return {**openrecon.ui_defaults(label), **changes}


def fire_exchange(port: int, header: bytes, acquisitions: list[bytes], parameters: dict[str, str] | None,
                  config: str = "invertcontrast") -> list[proto.Message]:
    """A python-ismrmrd-server client's stream: CONFIG_FILE, header, JSON TEXT, data, CLOSE."""
    stream = proto.config_file_message(config) + proto.header_message(header + b"\0")
    if parameters is not None:
        stream += proto.text_message(json.dumps({"version": "1.1.0", "parameters": parameters}, indent=2) + "\0")
    return exchange(port, stream + b"".join(acquisitions) + proto.close_message(), timeout=60)


def test_fire_client_gets_int16_series_with_names_history_and_qa(fire_stream, server) -> None:
    header, acquisitions = fire_stream
    parameters = ui_parameters(mode="scalar", iterations="3", superResolution="2", output="int16")
    replies = fire_exchange(server.port, header, acquisitions, parameters)
    assert not error_texts(replies) and replies[-1].mid == proto.CLOSE
    images = [m.payload for m in replies if m.mid == proto.IMAGE]
    series = {}
    for image in images:
        series.setdefault(image.image_series_index, []).append(image)
    assert sorted(series) == [1, 2, 3] and all(len(v) == 2 for v in series.values())
    expected = {1: ("CSC", f"{PROTOCOL}_adacsc"), 2: ("ZeroFilled", f"{PROTOCOL}_adacsc_zerofilled"),
                3: ("SparsityMap", f"{PROTOCOL}_adacsc_maps")}
    for index, (role, description) in expected.items():
        for image in series[index]:
            meta = image.meta
            assert image.data.dtype == np.int16 and image.data_type == ismrmrd.DATATYPE_SHORT
            assert image.image_type == ismrmrd.IMTYPE_MAGNITUDE and 0 <= image.data.min() <= image.data.max() <= 4095
            assert meta["DataRole"] == role and meta["SeriesDescription"] == description
            assert meta["SeriesDescriptionAdditional"] == description.removeprefix(f"{PROTOCOL}_")
            assert meta["ImageProcessingHistory"][:2] == ["PYTHON", "ADACSC"]
            assert float(meta["RescaleSlope"]) > 0 and float(meta["WindowWidth"]) >= 1
            assert meta["Iterations"] == "3" and meta["Mode"] == "scalar" and meta["Dictionary"]
            # scalar mode: the map is one value, whose float32 mean may print a digit below it
            assert float(meta["ReconTimeMs"]) > 0 and float(meta["MapMin"]) <= float(meta["MapMean"]) * (1 + 1e-5)
        assert sorted(image.image_index for image in series[index]) == [1, 2]


def test_geometry_of_an_oblique_off_centre_slice_survives(fire_stream, server) -> None:
    header, acquisitions = fire_stream
    replies = fire_exchange(server.port, header, acquisitions,
                            ui_parameters(mode="scalar", iterations="2", superResolution="2", sendMaps="false"))
    images = [m.payload for m in replies if m.mid == proto.IMAGE]
    assert {image.image_series_index for image in images} == {1, 2} and len(images) == 4
    read, phase, slice_dir = oblique_directions()
    for image in images:
        assert np.allclose(list(image.read_dir), read, atol=1e-6)
        assert np.allclose(list(image.phase_dir), phase, atol=1e-6)
        assert np.allclose(list(image.slice_dir), slice_dir, atol=1e-6)
        assert np.allclose(list(image.position), np.array(POSITION) + 5.0 * image.slice * slice_dir, atol=1e-4)
        assert np.allclose(list(image.patient_table_position), TABLE)
        # the reconstruction grid: 16 x 16 after oversampling removal, twice that with super-resolution;
        # the field of view stays the header's reconstruction field of view
        # the header's (x, y, z): ismrmrd 1.14's Image.matrix_size is the data's (z, y, x)
        assert list(image.getHead().matrix_size) == [32, 32, 1]
        assert np.allclose(list(image.field_of_view)[:2], [200.0, 200.0])
        assert np.allclose([float(v) for v in image.meta["ImageRowDir"]], read, atol=1e-6)


def test_stock_config_without_json_config_lists_the_chains(fire_stream, server) -> None:
    header, acquisitions = fire_stream
    replies = fire_exchange(server.port, header, acquisitions[:20], None, config="simplefft")
    errors = error_texts(replies)
    assert errors and "python-ismrmrd-server example" in errors[0]
    assert "adacsc_lowfield" in errors[0] and "'config'" in errors[0]
    assert replies[-1].mid == proto.CLOSE


def test_complex_output_for_a_complex_image_injector(fire_stream, server) -> None:
    header, acquisitions = fire_stream
    replies = fire_exchange(server.port, header, acquisitions,
                            ui_parameters(config="adacsc_lowfield", mode="scalar", iterations="2", output="complex",
                                          sendZeroFilled="false", sendMaps="false"))
    images = [m.payload for m in replies if m.mid == proto.IMAGE]
    assert len(images) == 2 and all(image.data_type == ismrmrd.DATATYPE_CXFLOAT for image in images)
    assert all(image.image_type == ismrmrd.IMTYPE_COMPLEX for image in images)
