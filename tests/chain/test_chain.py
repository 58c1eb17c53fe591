"""Chain XMLs and the in-process runner."""

import xml.etree.ElementTree as ET
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from adacsc import resources
from adacsc.chain.config import ChainError, load_chain, parse_chain
from adacsc.chain.runner import Chain, NodeFailure
from adacsc.gadgets.properties import PropertyError, raw_properties
from adacsc.gadgets.noise_adjust import GADGET as NOISE_ADJUST, Settings as NoiseSettings

HEADER = b"""<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
<experimentalConditions><H1resonanceFrequency_Hz>2341761</H1resonanceFrequency_Hz></experimentalConditions>
<encoding><encodedSpace><matrixSize><x>8</x><y>4</y><z>1</z></matrixSize>
<fieldOfView_mm><x>100</x><y>100</y><z>5</z></fieldOfView_mm></encodedSpace>
<reconSpace><matrixSize><x>8</x><y>4</y><z>1</z></matrixSize>
<fieldOfView_mm><x>100</x><y>100</y><z>5</z></fieldOfView_mm></reconSpace>
<encodingLimits/><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"""


def chain_xml(*nodes: tuple[str, str]) -> str:
    body = "".join(f'<external><execute name="{m}" target="{t}" type="python"/><configuration/></external>'
                   for m, t in nodes)
    return f"<configuration><version>2</version><stream>{body}</stream></configuration>"


def acquisitions(count: int) -> list[ismrmrd.Acquisition]:
    return [ismrmrd.Acquisition.from_array(np.full((2, 8), i + 1j, np.complex64)) for i in range(count)]


def run(chain_text: str, items: list[object], strict: bool = True) -> list[object]:
    outputs: list[object] = []
    chain = Chain(parse_chain(chain_text), HEADER, outputs.append, strict=strict).start()
    for item in items:
        chain.push(item)
    chain.close()
    return outputs


@pytest.mark.parametrize("strict", [True, False])
def test_items_flow_through_nodes_in_order(strict: bool) -> None:
    text = chain_xml(("support.chain_gadgets", "double_acquisitions"), ("support.chain_gadgets", "CountingGadget"),
                     ("support.chain_gadgets", "double_acquisitions"))
    out = run(text, acquisitions(5), strict)
    assert [a.data[0, 0] for a in out] == [4 * (i + 1j) for i in range(5)]


def test_filter_passes_other_items_on() -> None:
    image = ismrmrd.Image.from_array(np.ones((1, 1, 4, 4), np.float32), transpose=False)
    out = run(chain_xml(("support.chain_gadgets", "double_acquisitions")), [image] + acquisitions(1))
    assert isinstance(out[0], ismrmrd.Image) and isinstance(out[1], ismrmrd.Acquisition)


def test_failing_node_is_reported_by_name() -> None:
    with pytest.raises(NodeFailure, match="fail_on_third.*third item rejected"):
        run(chain_xml(("support.chain_gadgets", "fail_on_third")), acquisitions(5))


def test_strict_mode_rejects_items_that_cannot_cross_a_chain() -> None:
    text = chain_xml(("support.chain_gadgets", "send_unserialisable"), ("support.chain_gadgets", "CountingGadget"))
    with pytest.raises(NodeFailure, match="cannot cross a Gadgetron chain"):
        run(text, acquisitions(1))


def test_native_nodes_and_bad_xml_are_clear_errors() -> None:
    native = "<configuration><stream><gadget><name>Noise</name><dll>x</dll><classname>NoiseAdjustGadget</classname></gadget></stream></configuration>"
    with pytest.raises(ChainError, match="native Gadgetron node"):
        parse_chain(native)
    with pytest.raises(ChainError, match="not valid XML"):
        parse_chain("<configuration><stream>")
    with pytest.raises(ChainError, match="no nodes"):
        parse_chain("<configuration><stream/></configuration>")
    with pytest.raises(ChainError, match="cannot import"):
        Chain(parse_chain(chain_xml(("no_such_module_xyz", "f"))), HEADER, print)


def test_config_names_never_reach_outside_the_folders(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "mine.xml").write_text(chain_xml(("adacsc.gadgets.noise_adjust", "noise_adjust")))
    (tmp_path / "secret.xml").write_text("x")
    assert resources.resolve(resources.CONFIG, "mine", [folder]) == (folder / "mine.xml").resolve()
    for hostile in ["../secret", "/etc/passwd", "..", "sub/mine", ".hidden"]:
        with pytest.raises(resources.ResourceError):
            resources.resolve(resources.CONFIG, hostile, [folder])
    (folder / "link.xml").symlink_to(tmp_path / "secret.xml")
    with pytest.raises(resources.ResourceError):
        resources.resolve(resources.CONFIG, "link", [folder])
    with pytest.raises(ChainError, match="no config"):
        load_chain("absent", [folder])


def test_shipped_front_end_chain_loads_and_overrides_validate() -> None:
    chain = load_chain("adacsc_frontend")
    assert [n.target for n in chain.nodes] == ["noise_adjust", "readout_buffer", "coil_combination"]
    changed = chain.with_overrides({"coil_map_method": "walsh", "noise_adjust.perform_noise_adjust": "false"})
    assert changed.nodes[2].properties["coil_map_method"] == "walsh"
    assert changed.nodes[0].properties["perform_noise_adjust"] == "false"
    assert chain.nodes[2].properties["coil_map_method"] == "inati"
    with pytest.raises(ChainError, match="accepts property"):
        chain.with_overrides({"no_such_property": "1"})


def test_properties_in_both_xml_forms_and_typed_errors() -> None:
    config = ET.fromstring('<configuration><property name="perform_noise_adjust" value="false"/>'
                           '<property><name>perform_noise_adjust</name><value>true</value></property>'
                           '</configuration>')
    assert raw_properties(config) == {"perform_noise_adjust": "true"}
    config = ET.fromstring('<configuration><property><name>perform_noise_adjust</name><value>false</value>'
                           '</property></configuration>')

    assert NOISE_ADJUST.parse(raw_properties(config)) == NoiseSettings(perform_noise_adjust=False)
    config = ET.fromstring('<configuration><property name="perform_noise_adjust" value="maybe"/></configuration>')
    with pytest.raises(PropertyError, match="perform_noise_adjust.*not a boolean"):
        NOISE_ADJUST.parse(raw_properties(config))
    config = ET.fromstring('<configuration><property name="typo" value="1"/></configuration>')
    with pytest.raises(PropertyError, match="unknown property typo"):
        NOISE_ADJUST.parse(raw_properties(config))
