"""The interpreter handed over often while a long computation runs beside a server
(zonewall/handover.py): quick inside, the interval found restored when the last
computation leaves, whatever happens inside."""

from __future__ import annotations

import sys
import threading

import pytest

from zonewall.handover import QUICK_INTERVAL, handing_over_often


@pytest.fixture(autouse=True)
def _default_interval() -> object:
    found = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(found)


def test_the_interval_is_quick_inside_and_restored_after() -> None:
    assert sys.getswitchinterval() == pytest.approx(0.005)
    with handing_over_often():
        assert sys.getswitchinterval() == pytest.approx(QUICK_INTERVAL)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_an_error_inside_restores_the_interval() -> None:
    with pytest.raises(RuntimeError), handing_over_often():
        raise RuntimeError("the diff failed")
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_the_interval_stays_quick_until_the_last_computation_leaves() -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[float] = []

    def other() -> None:
        with handing_over_often():
            entered.set()
            release.wait(5)
        seen.append(sys.getswitchinterval())

    thread = threading.Thread(target=other)
    with handing_over_often():
        thread.start()
        assert entered.wait(5)
    # this one left, the other thread's computation still runs: still quick
    assert sys.getswitchinterval() == pytest.approx(QUICK_INTERVAL)
    release.set()
    thread.join(5)
    assert sys.getswitchinterval() == pytest.approx(0.005)  # the last one out restored it
    assert seen == [pytest.approx(0.005)]
