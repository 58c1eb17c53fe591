"""adacsc.server.parameters without sockets: JSON parameters of a TEXT message, the chain a client
asks for and the overrides some node of it accepts."""

import pytest

from adacsc import resources
from adacsc.chain.config import ChainError
from adacsc.server.parameters import (
    ChainRequest, ParameterError, apply_overrides, looks_like_json, parse_json_parameters, select_chain,
)

CLIENT_CHAIN = """<configuration><version>2</version><stream>
  <external><execute name="{module}" target="csc" type="python"/><configuration/></external>
</stream></configuration>"""


def _adacsc_only(module: str) -> bool:
    return module.startswith("adacsc.gadgets.")


def test_only_text_starting_with_a_brace_is_json() -> None:
    assert looks_like_json('  {"parameters": {}}\n')
    assert not looks_like_json("hello {}")


def test_values_become_text_and_unusable_ones_are_named() -> None:
    parsed = parse_json_parameters(
        '{"parameters": {"mode": "scalar", "iterations": 3, "lambda": 0.05, "sendMaps": false, '
        '"list": [1], "nested": {"a": 1}}}')
    assert parsed.properties == {"mode": "scalar", "iterations": "3", "lambda": "0.05", "sendMaps": "false"}
    assert parsed.unusable == ("list", "nested")
    assert parsed.config is None


def test_customconfig_inside_parameters_wins() -> None:
    parsed = parse_json_parameters('{"config": "a", "customconfig": "b", '
                                   '"parameters": {"config": "c", "customconfig": " d ", "x": "1"}}')
    assert parsed.config == "d"
    assert parsed.properties == {"x": "1"}
    assert parse_json_parameters('{"config": "a", "parameters": {"customconfig": "  "}}').config == "a"


@pytest.mark.parametrize("text, message", [
    ("{not json", "does not parse"),
    ("[1, 2]", "JSON parameters must be an object"),
    ('{"parameters": [1]}', "'parameters' must be an object"),
])
def test_malformed_parameters_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        parse_json_parameters(text)


def test_an_empty_object_sets_nothing() -> None:
    assert parse_json_parameters("{}") == parse_json_parameters('{"parameters": null}')
    assert parse_json_parameters("{}").properties == {}


def test_the_json_config_wins_over_the_config_message() -> None:
    request = ChainRequest(config_name="adacsc_hybrid", json_config="adacsc_lowfield")
    assert select_chain(request, resources.folders(resources.CONFIG), _adacsc_only).name == "adacsc_lowfield"
    assert select_chain(ChainRequest(config_name="adacsc_lowfield"), resources.folders(resources.CONFIG), _adacsc_only).name == \
        "adacsc_lowfield"


def test_unknown_and_stock_config_names_list_the_available_chains() -> None:
    with pytest.raises(ChainError, match="available chains: .*adacsc_lowfield"):
        select_chain(ChainRequest(config_name="nonesuch"), resources.folders(resources.CONFIG), _adacsc_only)
    with pytest.raises(ChainError, match="python-ismrmrd-server example"):
        select_chain(ChainRequest(json_config="invertcontrast"), resources.folders(resources.CONFIG), _adacsc_only)


def test_a_client_chain_runs_only_trusted_modules() -> None:
    trusted = CLIENT_CHAIN.format(module="adacsc.gadgets.csc")
    chain = select_chain(ChainRequest(config_text=trusted), [], _adacsc_only)
    assert chain.name == "client-config" and [n.module for n in chain.nodes] == ["adacsc.gadgets.csc"]
    with pytest.raises(ChainError, match="runs module.*evil.*does not allow"):
        select_chain(ChainRequest(config_text=CLIENT_CHAIN.format(module="evil")), [], _adacsc_only)


def test_no_config_is_an_error() -> None:
    with pytest.raises(ChainError, match="before the config"):
        select_chain(ChainRequest(), resources.folders(resources.CONFIG), _adacsc_only)


def test_overrides_apply_where_a_node_accepts_them() -> None:
    chain = select_chain(ChainRequest(config_name="adacsc_lowfield"), resources.folders(resources.CONFIG), _adacsc_only)
    changed, ignored = apply_overrides(chain, {"superResolution": "2", "iterations": "3", "nonesuch": "1"})
    assert ignored == ["nonesuch"]
    csc = next(n for n in changed.nodes if n.target == "csc")
    assert csc.properties["super_resolution"] == "2" and csc.properties["iterations"] == "3"
    assert apply_overrides(chain, {}) == (chain, [])
