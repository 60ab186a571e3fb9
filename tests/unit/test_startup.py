"""Start-up imports run with the cyclic collector off, and give it back as they found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kubetune.startup import collector_paused

pytestmark = pytest.mark.unit


@pytest.fixture
def collector() -> Iterator[None]:
    # Whatever a test does to the collector, the next test gets it on and unfrozen.
    yield
    gc.unfreeze()
    gc.enable()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_off_inside_and_as_it_was_after(collector: None, enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled() is enabled
    assert gc.get_freeze_count() == 0


def test_it_is_given_back_when_the_block_raises(collector: None) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a bad spec")
    assert gc.isenabled()


def test_freeze_leaves_what_was_made_out_of_later_collections(collector: None) -> None:
    gc.enable()
    with collector_paused(freeze=True):
        made = [[] for _ in range(1000)]  # container objects, tracked by the collector
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)


def test_a_warm_worker_imports_the_fitting_code_frozen_with_the_collector_on(
    collector: None,
) -> None:
    from kubetune import pool

    gc.enable()
    pool.import_fitting_code()  # what each worker runs first, here in this process
    assert gc.isenabled()
    assert gc.get_freeze_count() > 10_000  # scikit-learn and the rest, out of the collector
