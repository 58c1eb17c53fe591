"""What one stream asks for, built from its messages: the shape of python-ismrmrd-server's
`handle` (a config, a header, then the data go to the chain) as a state machine without sockets.

`RequestBuilder.accept(message)` takes the messages in order and says what the session does
next (nothing, start the chain, push the item, stop reading); a message that breaks the rules
raises `RequestRefused`, whose text the client is sent. Warnings for the client (a config name
that is unknown, JSON parameters that cannot be used) collect in `warnings`. Once the data
start, `request()` gives the chain request, the header and the property overrides.

Phases: WAITING (nothing received) -> OPENING (config, header, parameters) -> STREAMING (the
chain runs) -> CLOSED (CLOSE) or ENDED (the input ended without CLOSE); REFUSED from any phase.
"""

import enum
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from adacsc import resources
from adacsc.chain.config import ChainConfig
from adacsc.io.header import HeaderError, parse_header
from adacsc.limits import LimitError, ScanLimits, check_encoding
from adacsc.server import protocol as proto
from adacsc.server.parameters import (
    ChainRequest, ParameterError, apply_overrides, looks_like_json, parse_json_parameters, select_chain,
)

log = logging.getLogger(__name__)

DATA = (proto.ACQUISITION, proto.WAVEFORM, proto.IMAGE)


class Phase(enum.Enum):
    """Where a stream is (see the module docstring)."""

    WAITING = "waiting"
    OPENING = "opening"
    STREAMING = "streaming"
    CLOSED = "closed"
    ENDED = "ended"
    REFUSED = "refused"

    @property
    def reading(self) -> bool:
        """Whether more messages are expected."""
        return self in (Phase.WAITING, Phase.OPENING, Phase.STREAMING)


class Action(enum.Enum):
    """What the session does with a message it handed to `accept`."""

    NONE = "none"
    START = "start"
    """the first data message: start the chain (with `request()`), then push the item"""
    PUSH = "push"
    STOP = "stop"
    """stop reading (CLOSE)"""


class RequestRefused(RuntimeError):
    """The stream broke a rule: the text is what the client is told; nothing more is read."""


@dataclass(frozen=True)
class Request:
    """What the session needs to start the chain."""

    chain: ChainRequest
    header: bytes
    overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


class RequestBuilder:
    """Messages in; the phase, the request and the warnings for the client out (see the module)."""

    def __init__(self, limits: ScanLimits, check_config_name: Callable[[str], str | None] = lambda name: None,
                 answered: Collection[proto.Message] = (), logger: logging.Logger | logging.LoggerAdapter = log
                 ) -> None:
        """`limits`: what the header is checked against; `check_config_name`: the warning an
        unknown CONFIG_FILE name gets (None: known); `answered`: messages already answered
        (the server warned about them while reading the opening)."""
        self.phase = Phase.WAITING
        self.warnings: list[str] = []
        """warnings for the client, in order (the session takes them after each message)"""
        self._limits = limits
        self._check_config_name = check_config_name
        self._answered = answered
        self._log = logger
        self._config_name: str | None = None
        self._config_text: str | None = None
        self._json_config: str | None = None
        self._header: bytes | None = None
        self._overrides: dict[str, str] = {}

    @property
    def configured(self) -> bool:
        """Whether a chain has been named (CONFIG_FILE, CONFIG_TEXT or JSON parameters)."""
        return self._config_name is not None or self._config_text is not None or self._json_config is not None

    def missing(self) -> list[str]:
        """What the chain still needs before it can start ("config", "header")."""
        return [what for what, present in (("config", self.configured), ("header", self._header is not None))
                if not present]

    def accept(self, message: proto.Message) -> Action:
        """Take the next message: what to do with it. RequestRefused when it breaks a rule."""
        if not self.phase.reading:
            raise RuntimeError(f"no message is expected in phase {self.phase.value}")
        mid = message.mid
        if mid in DATA:
            if self.phase is Phase.STREAMING:
                return Action.PUSH
            if not self.configured:
                raise self.refuse("data arrived before the config: send CONFIG (id 1 or 2) first")
            if self._header is None:
                raise self.refuse("data arrived before the ISMRMRD header (id 3)")
            self.phase = Phase.STREAMING
            return Action.START
        if self.phase is Phase.WAITING:
            self.phase = Phase.OPENING
        if mid == proto.CLOSE:
            self.phase = Phase.CLOSED
            return Action.STOP
        if mid in (proto.CONFIG_FILE, proto.CONFIG_TEXT):
            self._config(message)
        elif mid == proto.HEADER:
            self._header_message(message.payload)
        elif mid == proto.TEXT:
            self._text(message.payload)
        elif mid == proto.ERROR:
            self._log.warning("the client reported an error: %s", message.payload[:500])
        return Action.NONE

    def refuse(self, reason: str) -> RequestRefused:
        """End the stream on `reason` (a rule broken, or a failure reading it): the error to raise."""
        self.phase = Phase.REFUSED
        return RequestRefused(reason)

    def end(self) -> None:
        """The input ended without CLOSE (or reading stopped)."""
        if self.phase.reading:
            self.phase = Phase.ENDED

    def request(self) -> Request:
        """The chain request, header and overrides; RequestRefused when config or header is missing."""
        if not self.configured:
            raise RequestRefused("data arrived before the config: send CONFIG (id 1 or 2) first")
        if self._header is None:
            raise RequestRefused("data arrived before the ISMRMRD header (id 3)")
        if self._json_config is not None and (self._config_name or self._config_text):
            self._log.info("JSON parameters choose config %r over the CONFIG message", self._json_config)
        return Request(ChainRequest(self._config_name, self._config_text, self._json_config), self._header,
                       MappingProxyType(dict(self._overrides)))

    def _config(self, message: proto.Message) -> None:
        if self.phase is Phase.STREAMING or self._config_name is not None or self._config_text is not None:
            raise self.refuse(f"a second config ({message.name}) in one stream")
        if message.mid == proto.CONFIG_TEXT:
            self._config_text = message.payload
            return
        if not message.payload:
            raise self.refuse("CONFIG_FILE with an empty name")
        warning = self._check_config_name(message.payload)
        if warning is not None and message not in self._answered:
            self.warnings.append(warning)
        self._config_name = message.payload

    def _header_message(self, xml: bytes) -> None:
        if self.phase is Phase.STREAMING or self._header is not None:
            raise self.refuse("a second ISMRMRD header in one stream")
        try:
            check_encoding(parse_header(xml), self._limits)
        except HeaderError as err:
            raise self.refuse(str(err)) from err
        except LimitError as err:
            raise self.refuse(f"the scan is refused: {err}") from err
        self._header = xml

    def _text(self, text: str) -> None:
        """TEXT: JSON parameters (python-ismrmrd-server style) before the data, else logged."""
        if not looks_like_json(text):
            self._log.info("client text: %s", text.strip()[:500])
            return
        if self.phase is Phase.STREAMING:
            self.warnings.append("JSON parameters after the data started are ignored")
            return
        try:
            parameters = parse_json_parameters(text)
        except ParameterError as err:
            self.warnings.append(f"{err}: ignored")
            return
        if parameters.config is not None:
            self._json_config = parameters.config
        self._overrides.update(parameters.properties)
        if parameters.unusable:
            self.warnings.append(f"{listing(list(parameters.unusable), 'parameter')} ignored: only strings, "
                                 "numbers and booleans are used")
        self._log.info("JSON parameters: config %s, %d propert%s", self._json_config or "(unchanged)",
                       len(self._overrides), "y" if len(self._overrides) == 1 else "ies")


def resolve_chain(request: Request, config_dirs: tuple[Path, ...], trusts: Callable[[str], bool]
                  ) -> tuple[ChainConfig, list[str]]:
    """The requested chain with the overrides some node accepts (adacsc.server.parameters), and
    the warning for the overrides no node accepts (if any)."""
    chain = select_chain(request.chain, list(config_dirs), trusts)
    chain, ignored = apply_overrides(chain, dict(request.overrides))
    warnings = [f"{listing(ignored, 'parameter')} ignored: no node of chain {chain.name!r} accepts them"
                ] if ignored else []
    return chain, warnings


def config_name_warning(name: str, config_dirs: tuple[Path, ...]) -> str | None:
    """The warning a CONFIG_FILE naming no known config gets at once (JSON parameters may still
    name the config, as FIRE clients do), or None."""
    try:
        resources.locate(resources.CONFIG, name, config_dirs)
    except resources.ResourceError as err:
        return f"{err}; unless JSON parameters name a config, the scan fails at its first data"
    return None


def listing(names: list[str], noun: str, shown: int = 10) -> str:
    """'3 parameters (a, b, c)', at most `shown` names and a count of the rest."""
    head = ", ".join(repr(n) for n in names[:shown])
    rest = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} {noun}{'s' if len(names) != 1 else ''} ({head}{rest})"
