"""Blocking calls release the GIL: another Python thread keeps running meanwhile."""

import threading
import time

import pytest

import conductor


class Counter(threading.Thread):
    """Counts as fast as pure Python can, which needs the GIL for every step."""

    def __init__(self):
        super().__init__(daemon=True)
        self.count = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.count += 1


def count_during(call):
    counter = Counter()
    counter.start()
    time.sleep(0.05)
    before = counter.count
    began = time.monotonic()
    try:
        call()
    finally:
        during = counter.count - before
        elapsed = time.monotonic() - began
        counter.done.set()
        counter.join()
    return during, elapsed


def test_waiting_for_a_model_lets_other_threads_run(start_server):
    server = start_server()
    during, elapsed = count_during(lambda: server.next_stored_model(1.0))
    assert elapsed >= 0.9
    # Holding the GIL for the second would leave the counter at the few ten thousand steps
    # it makes before the call takes the GIL; running free, it makes millions.
    assert during > 1_000_000


def test_waiting_for_a_controller_reply_lets_other_threads_run():
    controller = conductor.Controller("127.0.0.1:9", timeout=0.8)  # nobody answers there

    def call():
        with pytest.raises(conductor.TransportError):
            controller.call("status")

    during, elapsed = count_during(call)
    assert elapsed >= 0.7
    assert during > 1_000_000
