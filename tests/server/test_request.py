"""adacsc.server.request without sockets: the phases of a stream, what each message asks the
session to do, the refusals (with the text the client is told) and the warnings."""

import json

import numpy as np
import pytest

from adacsc import resources
from adacsc.io.header_builder import build_header, cartesian_readout, header_to_xml
from adacsc.limits import ScanLimits
from adacsc.server import protocol as proto
from adacsc.server.request import (
    Action, Phase, RequestBuilder, RequestRefused, config_name_warning, resolve_chain,
)


def header_xml(matrix: int = 16, coils: int = 2) -> bytes:
    header = build_header(field_T=0.055, coil_names=[f"c{c}" for c in range(coils)],
                          encoded_matrix=(2 * matrix, matrix, 1), encoded_fov_mm=(400, 200, 5),
                          recon_matrix=(matrix, matrix, 1), recon_fov_mm=(200, 200, 5), n_lines=matrix,
                          n_slices=1, measurement_id="request_test")
    return header_to_xml(header).encode()


def message(mid: int, payload: object = None) -> proto.Message:
    return proto.Message(mid, payload, 2)


def readout() -> proto.Message:
    return message(proto.ACQUISITION, cartesian_readout(np.zeros((2, 32), np.complex64), sample_time_us=10.0))


CONFIG = message(proto.CONFIG_FILE, "adacsc_frontend")
HEADER = message(proto.HEADER, header_xml())


def builder(**kwargs: object) -> RequestBuilder:
    return RequestBuilder(ScanLimits(), **kwargs)


def test_config_header_data_close_walk_the_phases() -> None:
    request = builder()
    assert request.phase is Phase.WAITING and request.missing() == ["config", "header"]
    assert request.accept(CONFIG) is Action.NONE and request.phase is Phase.OPENING
    assert request.accept(HEADER) is Action.NONE and not request.missing()
    assert request.accept(readout()) is Action.START and request.phase is Phase.STREAMING
    assert request.accept(readout()) is Action.PUSH
    assert request.accept(message(proto.WAVEFORM)) is Action.PUSH
    assert request.accept(message(proto.CLOSE)) is Action.STOP and request.phase is Phase.CLOSED
    assert not request.phase.reading and request.warnings == []
    built = request.request()
    assert built.chain.config_name == "adacsc_frontend" and built.header == HEADER.payload
    with pytest.raises(RuntimeError, match="no message is expected"):
        request.accept(readout())


def test_the_header_may_come_first_and_the_input_may_end_without_close() -> None:
    request = builder()
    request.accept(HEADER)
    request.accept(message(proto.CONFIG_TEXT, "<configuration/>"))
    assert request.accept(readout()) is Action.START
    request.end()
    assert request.phase is Phase.ENDED
    assert request.request().chain.config_text == "<configuration/>"


def test_close_before_any_data_leaves_a_request_to_validate() -> None:
    request = builder()
    for item in (CONFIG, HEADER):
        request.accept(item)
    assert request.accept(message(proto.CLOSE)) is Action.STOP
    assert request.phase is Phase.CLOSED and not request.missing()


@pytest.mark.parametrize("messages, refusal", [
    ([readout()], "data arrived before the config"),
    ([CONFIG, readout()], "data arrived before the ISMRMRD header"),
    ([CONFIG, CONFIG], "a second config (CONFIG_FILE)"),
    ([CONFIG, HEADER, readout(), message(proto.CONFIG_TEXT, "<c/>")], "a second config (CONFIG_TEXT)"),
    ([CONFIG, HEADER, HEADER], "a second ISMRMRD header"),
    ([CONFIG, HEADER, readout(), HEADER], "a second ISMRMRD header"),
    ([message(proto.CONFIG_FILE, "")], "CONFIG_FILE with an empty name"),
    ([message(proto.HEADER, b"<not xml")], "header does not parse"),
    ([message(proto.HEADER, header_xml(matrix=4096))], "the scan is refused"),
])
def test_broken_rules_refuse_the_stream(messages: list[proto.Message], refusal: str) -> None:
    request = builder()
    *before, last = messages
    for item in before:
        request.accept(item)
    with pytest.raises(RequestRefused) as raised:
        request.accept(last)
    assert refusal in str(raised.value)
    assert request.phase is Phase.REFUSED and not request.phase.reading


def test_a_failure_while_reading_refuses_too() -> None:
    request = builder()
    request.accept(CONFIG)
    assert str(request.refuse("protocol error: unknown message id 7")) == "protocol error: unknown message id 7"
    assert request.phase is Phase.REFUSED
    request.end()
    assert request.phase is Phase.REFUSED


def test_json_parameters_choose_the_config_and_set_overrides() -> None:
    request = builder()
    parameters = {"config": "adacsc_lowfield", "parameters": {"iterations": 3, "list": [1]}}
    for item in (CONFIG, message(proto.TEXT, json.dumps(parameters)), HEADER):
        request.accept(item)
    built = request.request()
    assert built.chain.json_config == "adacsc_lowfield" and dict(built.overrides) == {"iterations": "3"}
    assert request.warnings == ["1 parameter ('list') ignored: only strings, numbers and booleans are used"]


def test_json_alone_names_a_config_and_late_json_is_only_a_warning() -> None:
    request = builder()
    request.accept(message(proto.TEXT, '{"config": "adacsc_frontend"}'))
    request.accept(HEADER)
    assert request.accept(readout()) is Action.START
    request.accept(message(proto.TEXT, '{"parameters": {"iterations": "3"}}'))
    request.accept(message(proto.TEXT, "{broken"))
    request.accept(message(proto.TEXT, "just a note"))
    assert request.warnings[0] == "JSON parameters after the data started are ignored"
    assert len(request.warnings) == 2 and dict(request.request().overrides) == {}


def test_an_unknown_config_name_warns_once_unless_already_answered() -> None:
    unknown = message(proto.CONFIG_FILE, "no_such_chain")

    def check(name: str) -> str | None:
        return config_name_warning(name, tuple(resources.folders(resources.CONFIG)))

    request = builder(check_config_name=check)
    request.accept(unknown)
    assert len(request.warnings) == 1 and "no_such_chain" in request.warnings[0]
    answered = builder(check_config_name=check, answered=[unknown])
    answered.accept(unknown)
    assert answered.warnings == []
    assert check("adacsc_frontend") is None


def test_resolve_chain_names_the_overrides_no_node_accepts() -> None:
    request = builder()
    for item in (CONFIG, message(proto.TEXT, '{"parameters": {"coil_map_method": "walsh", "nonsense": "1"}}'),
                 HEADER):
        request.accept(item)
    chain, warnings = resolve_chain(request.request(), tuple(resources.folders(resources.CONFIG)),
                                    lambda module: module.startswith("adacsc.gadgets."))
    assert chain.name == "adacsc_frontend"
    assert warnings == ["1 parameter ('nonsense') ignored: no node of chain 'adacsc_frontend' accepts them"]
