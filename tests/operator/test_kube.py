"""The operator's API client gives up on a server that stops answering, and says it may retry.

A call with no deadline would hold its thread, and the reconcile pass slot around it, for as
long as the connection stays open: enough of them and the operator stops reconciling at all.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from kubetune_operator.kube import Kube, Retryable

pytestmark = pytest.mark.operator

SILENT = b""
STALLED_BODY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n{"


@pytest.fixture
def stuck_server() -> Iterator[Callable[[bytes], str]]:
    """A server that reads each request, sends ``prefix`` (maybe nothing), then stalls."""
    listeners: list[socket.socket] = []
    held: list[socket.socket] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def serve(listener: socket.socket, prefix: bytes) -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            conn.recv(65536)
            conn.sendall(prefix)

    def start(prefix: bytes) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listeners.append(listener)
        thread = threading.Thread(target=serve, args=(listener, prefix), daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    stop.set()
    for thread in threads:
        thread.join()
    for sock in [*held, *listeners]:
        sock.close()


def _call_in_a_thread(call: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """Run ``call``'s coroutine on a loop of its own in a thread, so that a call with no deadline
    cannot hang the test; also count the ticks the loop made meanwhile (0: it was blocked)."""
    outcome: list[BaseException | None] = []
    ticks = [0]

    async def main() -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.02)
                ticks[0] += 1

        ticker = asyncio.create_task(tick())
        try:
            await call()
            outcome.append(None)
        except BaseException as error:  # the test looks at what it was
            outcome.append(error)
        finally:
            ticker.cancel()

    caller = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    caller.start()
    # urllib3 retries a read a few times before it gives up: a few deadlines, not 15 s.
    caller.join(timeout=15)
    assert not caller.is_alive(), "the call is still waiting for an answer"
    return outcome[0], ticks[0]


def _kube(host: str) -> Kube:
    config = client.Configuration()
    config.host = host
    return Kube(client.ApiClient(config), request_timeout=(1.0, 0.2))


def test_a_call_that_gets_no_answer_fails_as_retryable_within_its_deadline(
    stuck_server: Callable[[bytes], str],
) -> None:
    kube = _kube(stuck_server(SILENT))
    error, _ = _call_in_a_thread(lambda: kube.get(kind="TuningJob", namespace="ns", name="a"))
    assert isinstance(error, Retryable) and "no answer" in str(error)


def test_a_pod_list_whose_body_stalls_fails_as_retryable_without_blocking_the_loop(
    stuck_server: Callable[[bytes], str],
) -> None:
    kube = _kube(stuck_server(STALLED_BODY))
    error, ticks = _call_in_a_thread(lambda: kube.termination_message(namespace="ns", job="j"))
    assert isinstance(error, Retryable) and "no answer" in str(error)
    assert ticks > 0  # the body was read in the API thread, not on the event loop
