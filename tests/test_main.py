"""The entry point: missing or malformed settings end the process with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,  # no .env file here
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "DISCORD_TOKEN is missing"),
        ({"DISCORD_TOKEN": "abc.def.ghi"}, "EVOLINK_API_KEY is missing"),
        ({"DISCORD_TOKEN": "  ", "EVOLINK_API_KEY": "k"}, "DISCORD_TOKEN is invalid"),
        (
            {"DISCORD_TOKEN": "abc", "EVOLINK_API_KEY": "key", "DEFAULT_ALLOWANCE": "lots"},
            "DEFAULT_ALLOWANCE is invalid",
        ),
        (
            {"DISCORD_TOKEN": "abc", "EVOLINK_API_KEY": "key", "PUBLIC_BASE_URL": "ftp://x"},
            "PUBLIC_BASE_URL is invalid",
        ),
    ],
)
def test_bad_settings_exit_with_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = run_bot(tmp_path, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    for secret in ("abc.def.ghi", "key"):
        if secret in env.values():
            assert secret not in result.stderr


def test_settings_are_read_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-dotenv\nDEFAULT_ALLOWANCE=-5\n")
    result = run_bot(tmp_path, EVOLINK_API_KEY="key")
    assert result.returncode == 2
    assert "DEFAULT_ALLOWANCE is invalid" in result.stderr  # so DISCORD_TOKEN came from .env
