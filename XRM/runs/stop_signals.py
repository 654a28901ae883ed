"""SIGINT and SIGTERM during training, held until the step under way has ended.

A stack stopped in the middle of a step would save a state that no step produced; the loop
asks ``requested`` after each step instead, saves its checkpoints, and raises Interrupted.
"""
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """A context in which SIGINT and SIGTERM only set ``signum`` (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
