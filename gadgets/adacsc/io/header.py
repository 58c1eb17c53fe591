"""Parsing and reading the ISMRMRD XML header with clear errors (files from other tools may lack
optional fields)."""

from dataclasses import dataclass

import ismrmrd
import ismrmrd.xsd
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig

_CONTEXT = XmlContext()
"""one xsdata context for every parse (what ismrmrd.xsd.CreateFromDocument does, but it builds a
new context per call: 6x slower, and its class metadata is never freed: the server's RSS grew by
about 190 bytes per header parsed)"""


class HeaderError(ValueError):
    """The ISMRMRD header is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Encoding:
    """What the buffering and image gadgets need from the first encoding."""

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    e1_limits: tuple[int, int, int]
    """(minimum, centre, maximum) of kspace_encode_step_1."""
    e2_limits: tuple[int, int, int] = (0, 0, 0)
    """(minimum, centre, maximum) of kspace_encode_step_2 (3-D partitions)."""
    averages: int = 1
    """How many averages the scan declares (encodingLimits.average maximum + 1)."""
    contrasts: int = 1
    """How many contrasts the scan declares (encodingLimits.contrast maximum + 1)."""


def parse_header(xml: bytes | str) -> ismrmrd.xsd.ismrmrdHeader:
    """Parse header XML, raising HeaderError naming the problem."""
    if isinstance(xml, bytes):
        xml = xml.rstrip(b"\0").decode("utf-8", errors="replace")
    if not xml.strip():
        raise HeaderError("the ISMRMRD header is empty")
    try:
        parser = XmlParser(config=ParserConfig(fail_on_unknown_properties=True), context=_CONTEXT)
        return parser.from_string(xml, ismrmrd.xsd.ismrmrdHeader)
    except Exception as err:  # the xsd parser raises many unrelated types
        raise HeaderError(f"the ISMRMRD header does not parse: {err}") from err


def encoding(header: ismrmrd.xsd.ismrmrdHeader) -> Encoding:
    """The first encoding's matrices, fields of view and phase-encode limits."""
    if not header.encoding:
        raise HeaderError("the ISMRMRD header has no <encoding>")
    enc = header.encoding[0]
    if enc.encodedSpace is None or enc.reconSpace is None:
        raise HeaderError("the ISMRMRD header's encoding lacks encodedSpace or reconSpace")
    em, rm = enc.encodedSpace.matrixSize, enc.reconSpace.matrixSize
    ef, rf = enc.encodedSpace.fieldOfView_mm, enc.reconSpace.fieldOfView_mm
    if min(em.x, em.y, rm.x, rm.y) <= 0:
        raise HeaderError(f"the ISMRMRD header has a non-positive matrix size ({em.x}x{em.y}, {rm.x}x{rm.y})")
    all_limits = enc.encodingLimits
    limits = all_limits.kspace_encoding_step_1 if all_limits else None
    e1 = (limits.minimum, limits.center, limits.maximum) if limits else (0, em.y // 2, em.y - 1)
    partitions = max(em.z, 1)
    limits = all_limits.kspace_encoding_step_2 if all_limits else None
    e2 = (limits.minimum, limits.center, limits.maximum) if limits else (0, partitions // 2, partitions - 1)
    return Encoding(
        encoded_matrix=(em.x, em.y, max(em.z, 1)),
        recon_matrix=(rm.x, rm.y, max(rm.z, 1)),
        encoded_fov_mm=(ef.x, ef.y, ef.z),
        recon_fov_mm=(rf.x, rf.y, rf.z),
        e1_limits=e1,
        e2_limits=e2,
        averages=_count(all_limits, "average"),
        contrasts=_count(all_limits, "contrast"),
    )


def _count(limits: object, name: str) -> int:
    """maximum + 1 of an encoding limit, or 1 when the header lacks it."""
    limit = getattr(limits, name, None) if limits is not None else None
    return max(int(limit.maximum) + 1, 1) if limit is not None and limit.maximum is not None else 1


def coil_labels(header: ismrmrd.xsd.ismrmrdHeader, channels: int) -> list[str]:
    """Coil names in channel order; 'channel N' where the header has none."""
    system = header.acquisitionSystemInformation
    labels = {c.coilNumber: c.coilName for c in (system.coilLabel if system else [])}
    return [str(labels.get(i, f"channel {i}")) for i in range(channels)]


def receiver_channels(header: ismrmrd.xsd.ismrmrdHeader) -> int | None:
    """Declared number of receiver channels, or None."""
    system = header.acquisitionSystemInformation
    return system.receiverChannels if system and system.receiverChannels else None


def relative_noise_bandwidth(header: ismrmrd.xsd.ismrmrdHeader) -> float | None:
    """acquisitionSystemInformation.relativeReceiverNoiseBandwidth, or None."""
    system = header.acquisitionSystemInformation
    return system.relativeReceiverNoiseBandwidth if system else None


def measurement_id(header: ismrmrd.xsd.ismrmrdHeader) -> str | None:
    """measurementInformation.measurementID, or None."""
    info = header.measurementInformation
    return info.measurementID if info and info.measurementID else None


def noise_dependency(header: ismrmrd.xsd.ismrmrdHeader) -> str | None:
    """The measurementID this scan declares as its noise dependency, or None."""
    info = header.measurementInformation
    for dependency in (info.measurementDependency if info else []):
        if (dependency.dependencyType or "").lower() == "noise":
            return dependency.measurementID
    return None


def scanner_identity(header: ismrmrd.xsd.ismrmrdHeader) -> str | None:
    """The scanner a scan was taken on: deviceSerialNumber, else stationName, else systemModel."""
    system = header.acquisitionSystemInformation
    for value in ((system.deviceSerialNumber, system.stationName, system.systemModel) if system else ()):
        if value and str(value).strip():
            return str(value).strip()
    return None
