"""Setting up: the Makefile's venv stamps and ``scripts/debian-packages``, the one list of
Debian packages that ``make test``, ``.ci/run`` and the README share.

The package script is run with fake ``dpkg-query``/``sudo``/``id`` first on PATH, so no
test installs anything; ``tools/fresh-debian-check`` (outside the repository) does it
for real on a fresh Debian 12.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "debian-packages"


def packages() -> list[str]:
    out = subprocess.run([SCRIPT, "list"], capture_output=True, text=True, check=True).stdout
    return out.split()


def fake_bin(tmp_path: Path, **tools: str) -> Path:
    """A directory of shell scripts named after ``tools`` (their bodies given)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for name, body in tools.items():
        (d / name).write_text(f"#!/bin/sh\n{body}\n")
        (d / name).chmod(0o755)
    return d


def run_script(
    bindir: Path, *args: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=path if path is not None else f"{bindir}:{os.environ['PATH']}")
    return subprocess.run(["/bin/bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def test_the_readme_shows_the_scripts_list() -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"sudo apt-get install -y --no-install-recommends(.*?)```", readme, re.S)
    assert block is not None, "README: no apt-get install block"
    assert block.group(1).replace("\\", " ").split() == packages()


def test_ci_installs_through_the_same_script() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/debian-packages install" in ci
    assert "apt-get install" not in ci  # no second list to drift from the first


def test_missing_packages_without_root_or_sudo_print_the_command(tmp_path: Path) -> None:
    bindir = fake_bin(tmp_path, **{"dpkg-query": "exit 1", "id": "echo 1000", "sudo": "exit 1"})
    r = run_script(bindir, "install")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    command = "sudo apt-get install -y --no-install-recommends " + " ".join(packages())
    assert lines[0].endswith(command), lines[0]


def test_missing_packages_with_passwordless_sudo_are_installed_through_it(tmp_path: Path) -> None:
    log = tmp_path / "sudo.log"
    bindir = fake_bin(tmp_path, **{"dpkg-query": "exit 1", "id": "echo 1000",
                                   "sudo": f'cat >/dev/null; echo "$*" >> {log}'})  # fmt: skip
    r = run_script(bindir, "install")
    calls = log.read_text().splitlines()
    assert "-n apt-get update -qq" in calls
    install = [c for c in calls if "apt-get install" in c]
    assert install and install[0].endswith(" ".join(packages())), calls
    assert r.returncode == 1 and "still missing" in r.stderr  # the fake installed nothing


def test_nothing_is_done_when_everything_is_installed(tmp_path: Path) -> None:
    bindir = fake_bin(
        tmp_path, **{"dpkg-query": "printf installed", "apt-get": "exit 9", "sudo": "exit 9"}
    )
    r = run_script(bindir, "install")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_not_debian_is_one_line_and_a_failure(tmp_path: Path) -> None:
    r = run_script(tmp_path, "install", path=str(tmp_path / "nothing-here"))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "not a Debian system" in r.stderr
    assert "DEPS=skip" in r.stderr


def make_dry_run(tree: Path, *args: str) -> str:
    return subprocess.run(["make", "-n", "-C", str(tree), *args], capture_output=True,
                          text=True, check=True, timeout=60).stdout  # fmt: skip


def test_serve_and_test_stamps_do_not_reinstall_after_each_other(tmp_path: Path) -> None:
    """`make serve` installs Ferry alone; `make test` the test extras, which count for
    serving too; neither installs again after the other."""
    if shutil.which("make") is None:
        raise AssertionError("make is missing (Debian package make)")
    tree = tmp_path / "tree"
    (tree / ".venv" / "bin").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tree / name)
    (tree / ".venv" / "bin" / "python").write_text("")
    (tree / ".venv" / "bin" / "python").chmod(0o755)
    serve = make_dry_run(tree, "serve")
    assert "pip install --quiet -e .\n" in serve and "[test" not in serve
    (tree / ".venv" / ".serve-stamp").touch()
    assert "pip install" not in make_dry_run(tree, "serve")
    test = make_dry_run(tree, "test", "DEPS=skip")
    assert "pip install --quiet -e '.[test,s3]'" in test
    (tree / ".venv" / ".test-stamp").touch()
    assert "pip install" not in make_dry_run(tree, "test", "DEPS=skip")
    assert "pip install" not in make_dry_run(tree, "serve")
    assert "scripts/debian-packages install" in make_dry_run(tree, "test")
