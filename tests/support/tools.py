"""Command-line tools the S3 client tests drive: ``aws`` from the venv, ``rclone`` from Debian (installed when missing).

CI runs as root on a clean clone, so a missing Debian tool is installed with apt-get, as
``bench/throughput.py`` does for nginx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def aws_cli() -> str:
    """The ``aws`` of this venv (the ``awscli`` test extra), else one on the PATH."""
    beside = Path(sys.executable).with_name("aws")
    found = str(beside) if beside.exists() else shutil.which("aws")
    if found is None:
        pytest.fail("aws-cli not found: `pip install -e '.[test]'` installs it")
    return found


def debian_tool(name: str, package: str | None = None) -> str:
    """The path of ``name``, installing its Debian package first when it is missing."""
    found = shutil.which(name)
    if found:
        return found
    package = package or name
    if not shutil.which("apt-get"):
        pytest.fail(f"{name} not found and no apt-get to install it: install the {package} package")
    sudo: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    apt_get = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    for argv in ([*apt_get, "update", "-q"], [*apt_get, "install", "-y", "-q", "--no-install-recommends", package]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} still not found after installing {package}")
    return found
