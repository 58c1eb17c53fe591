"""What one session did: its report, and the lines it logs about it when it ends."""

import logging
from collections import Counter
from dataclasses import dataclass, field

from adacsc.chain.runner import Chain


@dataclass
class SessionReport:
    """What one session did (also logged)."""

    session_id: int
    peer: str
    config: str | None = None
    acquisitions: int = 0
    noise_readouts: int = 0
    waveforms: int = 0
    images_in: int = 0
    pushed: int = 0
    images_sent: Counter = field(default_factory=Counter)
    outputs_not_sent: Counter = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    closed_by_client: bool = False
    errors: list[str] = field(default_factory=list)
    dropped: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Finished without errors and without being dropped."""
        return not self.errors and self.dropped is None


def log_accounting(report: SessionReport, chain: Chain | None, logger: logging.LoggerAdapter) -> None:
    """Log what was received and what became of it (an accounting mismatch is an error)."""
    if chain is not None:
        logger.info("received %d acquisitions (%d noise), %d waveforms, %d images; %d items went into "
                    "chain %s, which produced %d outputs (the gadgets account for dropped readouts)",
                    report.acquisitions, report.noise_readouts, report.waveforms, report.images_in, chain.items_in,
                    report.config, chain.items_out)
        if chain.items_in != report.pushed:
            logger.error("accounting mismatch: %d items received, %d in the chain", report.pushed, chain.items_in)
    elif report.acquisitions or report.waveforms or report.images_in:
        logger.warning("received %d acquisitions that never reached a chain", report.acquisitions)
    if report.outputs_not_sent:
        logger.warning("outputs not sent: %s",
                       ", ".join(f"{name} x{count}" for name, count in sorted(report.outputs_not_sent.items())))


def log_summary(report: SessionReport, logger: logging.LoggerAdapter) -> None:
    """The session's last line: how long, what was sent, how it ended."""
    sent = report.images_sent
    logger.info("finished in %.2f s, sent %s: %s", report.seconds,
                ", ".join(f"{name} x{count}" for name, count in sorted(sent.items())) or "no images",
                "ok" if report.ok else (report.dropped or "; ".join(report.errors)))
