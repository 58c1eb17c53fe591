"""Scanner-ready series (adacsc.io.series): pixel formats, recorded int16 scaling, window, names,
history, geometry and QA meta, also after gadgetron-python's own serialisers."""

import ismrmrd
import numpy as np
import pytest

from adacsc.chain import wire
from adacsc.io.series import (INT16_STORED_MAX, OUTPUT_FORMATS, Series, display_window, protocol_name,
                              scanner_image, to_int16)

SERIES = Series(index=4, role="CSC", suffix="", units="SNR", step="CSC")


def rotated_template() -> ismrmrd.ImageHeader:
    """An oblique, off-centre slice: directions rotated 30 degrees about z, then tilted."""
    header = ismrmrd.ImageHeader()
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    header.read_dir[:] = (c, s, 0.0)
    header.phase_dir[:] = (-s * 0.8, c * 0.8, 0.6)
    header.slice_dir[:] = (s * 0.6, -c * 0.6, 0.8)
    header.position[:] = (12.5, -30.0, 41.0)
    header.patient_table_position[:] = (0.0, 0.0, -1200.0)
    header.field_of_view[:] = (220.0, 200.0, 5.0)
    header.slice = 3
    return header


def image(output: str, values: np.ndarray | None = None, **kwargs: object) -> ismrmrd.Image:
    if values is None:
        values = np.linspace(0, 37.5, 64 * 48, dtype=np.float32).reshape(64, 48)
    return scanner_image(values, rotated_template(), SERIES, output, image_index=kwargs.pop("image_index", 2),
                         protocol="t1_tse", **kwargs)


def test_int16_scaling_puts_the_maximum_at_4095_and_records_it() -> None:
    values = np.array([[0.0, 1.0], [2.5, 10.0]])
    stored, scale = to_int16(values)
    assert stored.dtype == np.int16 and stored.max() == INT16_STORED_MAX and stored.min() == 0
    assert np.allclose(stored / scale, values, atol=0.5 / scale)
    assert to_int16(np.zeros((3, 3)))[0].max() == 0  # an empty image stays empty, no division by zero


def test_int16_image_carries_scaling_window_names_history_and_index() -> None:
    values = np.linspace(0, 37.5, 64 * 48).reshape(64, 48)
    result = image("int16", values)
    assert result.data.dtype == np.int16 and result.data_type == ismrmrd.DATATYPE_SHORT
    assert result.image_type == ismrmrd.IMTYPE_MAGNITUDE and result.data.shape == (1, 1, 64, 48)
    meta = result.meta
    slope = float(meta["RescaleSlope"])
    assert np.allclose(result.data[0, 0] * slope + float(meta["RescaleIntercept"]), values, atol=slope)
    assert meta["RescaleType"] == "SNR" and meta["Units"] == "SNR"
    center, width = float(meta["WindowCenter"]), float(meta["WindowWidth"])
    assert 0 < center - width / 2 < center + width / 2 <= INT16_STORED_MAX
    assert meta["SeriesDescription"] == "t1_tse_adacsc" and meta["SeriesDescriptionAdditional"] == "adacsc"
    assert meta["SequenceDescriptionAdditional"] == "adacsc"
    assert meta["ImageProcessingHistory"] == ["PYTHON", "ADACSC", "CSC"]
    assert meta["DataRole"] == "CSC" and meta["Keep_image_geometry"] == "1"
    assert result.image_series_index == 4 and result.image_index == 2


@pytest.mark.parametrize("output", OUTPUT_FORMATS)
def test_geometry_is_the_template_s_on_the_image_s_own_matrix(output: str) -> None:
    template = rotated_template()
    result = image(output)
    for name in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position", "field_of_view"):
        assert np.allclose(list(getattr(result, name)), list(getattr(template, name)), atol=1e-6), name
    assert list(result.getHead().matrix_size) == [48, 64, 1] and result.slice == 3
    assert np.allclose([float(v) for v in result.meta["ImageRowDir"]], list(template.read_dir), atol=1e-6)
    assert np.allclose([float(v) for v in result.meta["ImageColumnDir"]], list(template.phase_dir), atol=1e-6)


def test_float32_and_complex_formats() -> None:
    magnitude = image("float32")
    assert magnitude.data_type == ismrmrd.DATATYPE_FLOAT and magnitude.image_type == ismrmrd.IMTYPE_MAGNITUDE
    assert "WindowCenter" in magnitude.meta and "RescaleSlope" not in magnitude.meta
    values = np.exp(1j * np.linspace(0, 3, 16)).reshape(4, 4) * 2
    complex_image = image("complex", values)
    assert complex_image.data_type == ismrmrd.DATATYPE_CXFLOAT and complex_image.image_type == ismrmrd.IMTYPE_COMPLEX
    assert np.allclose(complex_image.data[0, 0], values, atol=1e-6)
    assert "WindowCenter" not in complex_image.meta
    real = image("complex", np.ones((4, 4), np.float32))
    assert real.data.dtype == np.complex64 and np.allclose(real.data.imag, 0)


def test_qa_entries_are_added_as_given() -> None:
    qa = {"ReconTimeMs": "12.5", "NoiseLevel": "0.021", "NoiseSource": "noise scan", "Iterations": "64"}
    assert {key: image("int16", qa=qa).meta[key] for key in qa} == qa


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="output format 'uint8' is not one of float32, int16, complex"):
        image("uint8")


def test_window_of_a_flat_image_has_a_positive_width() -> None:
    assert display_window(np.full((4, 4), 7, np.int16)) == (7.5, 1.0)


def test_protocol_name_falls_back_when_the_header_names_none() -> None:
    class Info:
        protocolName = " fl3d "

    class Header:
        measurementInformation = Info()

    assert protocol_name(Header()) == "fl3d"
    assert protocol_name(object()) == "adacsc"


@pytest.mark.parametrize("output", OUTPUT_FORMATS)
def test_series_survive_gadgetron_python_serialisers(output: str) -> None:
    original = image(output)
    _, copy = wire.round_trip(original)
    assert copy.data_type == original.data_type and np.array_equal(copy.data, original.data)
    assert ismrmrd.Meta.deserialize(copy.attribute_string) == original.meta
    assert np.allclose(list(copy.position), list(original.position))
