"""mailsuite as an admin installs it: after ``pip install .`` into a fresh venv, and
after the editable install that scripts/test and scripts/demo make, ``twistd --help``
run from a folder outside the checkout lists the ``mailsuite`` plugin, and the code
it runs is the installed copy (respectively the checkout)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import TWISTD

REPO = Path(__file__).resolve().parent.parent
# What a copy of the project needs to build: not the venv, git, or build leftovers.
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "demo", "__pycache__",
                                    ".pytest_cache", ".hypothesis", "dropin.cache")


def clean_env() -> dict[str, str]:
    """The environment without anything that would put the checkout on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def lists_mailsuite(twistd: str, cwd: Path) -> bool:
    p = subprocess.run([twistd, "--help"], capture_output=True, text=True, cwd=cwd, env=clean_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    return any(line.split()[:1] == ["mailsuite"] for line in p.stdout.splitlines())


def module_file(python: str, module: str, cwd: Path) -> Path:
    p = subprocess.run([python, "-c", f"import {module} as m; print(m.__file__)"],
                       capture_output=True, text=True, cwd=cwd, env=clean_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    return Path(p.stdout.strip()).resolve()


def test_editable_install_is_found_from_outside_the_checkout(tmp_path: Path) -> None:
    assert lists_mailsuite(TWISTD, tmp_path)
    assert module_file(sys.executable, "mailsuite", tmp_path) == REPO / "mailsuite" / "__init__.py"
    plugin = module_file(sys.executable, "twisted.plugins.mailsuite_plugin", tmp_path)
    assert plugin == REPO / "twisted" / "plugins" / "mailsuite_plugin.py"


@pytest.mark.install
def test_pip_install_into_a_fresh_venv_is_found_from_anywhere(tmp_path: Path) -> None:
    """One full install (about 20-40 s with pip's cache); ``-m 'not install'`` skips it."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-input", str(src)],
                         capture_output=True, text=True, env=clean_env(), timeout=900)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    shutil.rmtree(src)  # nothing may still point into the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert lists_mailsuite(str(venv / "bin" / "twistd"), elsewhere)
    python = str(venv / "bin" / "python")
    site = module_file(python, "twisted", elsewhere).parent.parent
    assert module_file(python, "mailsuite", elsewhere).is_relative_to(site)
    assert module_file(python, "twisted.plugins.mailsuite_plugin", elsewhere).is_relative_to(site)
    cli = subprocess.run([str(venv / "bin" / "mailsuite"), "--help"], capture_output=True, text=True,
                         cwd=elsewhere, env=clean_env(), timeout=60)
    assert cli.returncode == 0 and "check-config" in cli.stdout
