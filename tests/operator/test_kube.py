"""The operator's API client gives up on a server that never answers, and says it may retry.

A call with no deadline would hold its thread, and the reconcile pass slot around it, for as
long as the connection stays open: enough of them and the operator stops reconciling at all.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from kubernetes import client

from kubetune_operator.kube import Kube, Retryable

pytestmark = pytest.mark.operator


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections, reads the requests, and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_call_that_gets_no_answer_fails_as_retryable_within_its_deadline(
    silent_server: str,
) -> None:
    config = client.Configuration()
    config.host = silent_server
    kube = Kube(client.ApiClient(config), request_timeout=(1.0, 0.2))
    outcome: list[BaseException | None] = []

    def call() -> None:  # in a thread of its own, so that a call with no deadline cannot hang us
        try:
            asyncio.run(kube.get(kind="TuningJob", namespace="ns", name="a"))
            outcome.append(None)
        except BaseException as error:  # the test looks at what it was
            outcome.append(error)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    # urllib3 retries a read a few times before it gives up: a few deadlines, not 15 s.
    caller.join(timeout=15)
    assert not caller.is_alive(), "the call is still waiting for an answer"
    assert isinstance(outcome[0], Retryable) and "no answer" in str(outcome[0])
