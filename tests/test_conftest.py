"""The shared test helpers: `wait_until` returns what it waited for, or fails naming it."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "", "found"])
    assert wait_until(lambda: next(answers), timeout=10, interval=0) == "found"


def test_wait_until_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"timed out after 0\.01s waiting for the pid file"):
        wait_until(lambda: False, timeout=0.01, interval=0.001, what="the pid file")


def test_wait_until_passes_on_an_error_of_the_predicate_at_once() -> None:
    def dead() -> bool:
        raise AssertionError("the worker died")

    with pytest.raises(AssertionError, match="the worker died"):
        wait_until(dead, timeout=60)
