"""Shared fixtures: small representation sets built in the test, never downloaded."""

from __future__ import annotations

import pytest

from repsets import random_set


@pytest.fixture
def small_set():
    return random_set()
