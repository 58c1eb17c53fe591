"""The streaming server (`adacsc serve`): the ISMRMRD/Gadgetron stream protocol over TCP, one scan per
connection, running the same chain XMLs and gadgets as `adacsc recon`."""

from adacsc.server.protocol import Limits, ProtocolError
from adacsc.server.server import Server, ServerSettings
from adacsc.server.session_report import SessionReport
from adacsc.server.session_settings import SessionSettings

__all__ = ["Limits", "ProtocolError", "Server", "ServerSettings", "SessionReport", "SessionSettings"]
