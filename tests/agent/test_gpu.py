"""GPU health comes only from nvidia-smi; without it the agent reports nothing rather than guessing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent import gpu


def test_without_nvidia_smi_there_are_no_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    assert gpu.detect() == []


def test_with_nvidia_smi_each_card_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A stand-in for the real binary at the outgoing seam: it prints what nvidia-smi prints for that query.
    script = tmp_path / "nvidia-smi"
    script.write_text('#!/bin/sh\nprintf "NVIDIA GeForce RTX 4090, 24564\\nNVIDIA A100-SXM4-80GB, [N/A]\\n"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))

    assert gpu.detect() == [
        {"name": "NVIDIA GeForce RTX 4090", "memory_mb": 24564},
        {"name": "NVIDIA A100-SXM4-80GB", "memory_mb": None},
    ]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_this_machine_reports_no_gpus() -> None:
    assert gpu.detect() == []
