"""A stop signal recorded for the process (adacsc.core.cancel): loops stop at their next
iteration even where the signal's exception never reached them (another thread, or lost in a
finalizer), and the record can be cleared for the next command."""

import signal
import threading

import pytest

from adacsc.core import cancel


@pytest.fixture(autouse=True)
def no_recorded_stop():
    cancel.clear_stop_signal()
    yield
    cancel.clear_stop_signal()


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, cancel.Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_recorded_stop_ends_loops_on_every_thread_and_is_raised_again(signum, raised):
    step = cancel.between_iterations("FISTA")
    step(0, 10)
    with pytest.raises(raised):
        cancel.stop_by_signal(signum)
    assert cancel.stop_signal() == signum
    errors = []

    def solve() -> None:  # a slice job: its own thread and context, nothing bound
        try:
            cancel.between_iterations("FISTA")(3, 10)
        except cancel.Cancelled as err:
            errors.append(str(err))

    worker = threading.Thread(target=solve)
    worker.start()
    worker.join()
    assert errors == [f"FISTA stopped by {signal.Signals(signum).name} after 3 of 10 iterations"]
    with pytest.raises(cancel.Cancelled):
        step(1, 10)
    with pytest.raises(raised):
        cancel.raise_if_stopped()
    cancel.clear_stop_signal()
    step(2, 10)
    cancel.raise_if_stopped()
