"""bench/soak.py in small: the real web and worker processes, a flaky helpdesk, a worker SIGKILLed
mid-run. Every accepted ticket is written back exactly once."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import PROJECT


@pytest.mark.parametrize("platform", ["zendesk", "freshdesk"])
def test_a_small_soak_loses_nothing_and_writes_nothing_twice(platform: str) -> None:
    result = subprocess.run([sys.executable, str(PROJECT / "bench" / "soak.py"), "--platform", platform,
                             "--tickets", "120", "--kills", "1", "--fail-429", "0.1", "--fail-503", "0.1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert f"platform: {platform}," in result.stdout
    figures = {key.strip(): value for key, value in re.findall(r"([a-z ]+): (\d+)", result.stdout)}
    assert figures["accepted"] == "120" and figures["written back exactly once"] == "120"
    assert figures["lost"] == "0" and figures["duplicate writes"] == "0" and figures["duplicate notes"] == "0"
    assert "SIGKILLed the worker" in result.stderr
