"""The layout holds: one import package, `edgefleet`, built from the repository's folders
through pyproject's package-dir mapping; a wheel that works from any folder; imports that
keep the dependency rule (docs/architecture.md); modules of a readable size.

The wheel is built once per session with the oldest setuptools pyproject allows (the
lower bound in build-system.requires), in a fresh virtual environment, from a copy of the
checkout (so that no stale build/ folder leaks into it and nothing is written here).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # edgefleet[device] brings tomli there
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]  # name -> folder
FOLDERS = sorted(PACKAGE_DIRS.values())
SKIP_DIRS = {".git", ".venv", ".venvs", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}
BARE = ("agent", "converter", "devices", "fleet", "protocol")  # installed only beneath edgefleet
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
MAX_MODULE_LINES = 400


def _files(folder: Path, pattern: str) -> Iterator[Path]:
    for path in sorted(folder.rglob(pattern)):
        parts = path.relative_to(ROOT).parts
        if not any(p in SKIP_DIRS or p.endswith(".egg-info") for p in parts):
            yield path


def _installed_name(path: Path) -> str:
    """Where a file of the checkout lands in the wheel: src/edgefleet/x.py -> edgefleet/x.py."""
    rel = path.relative_to(ROOT).as_posix()
    for name, folder in sorted(PACKAGE_DIRS.items(), key=lambda item: -len(item[1])):
        if rel.startswith(f"{folder}/"):
            return name.replace(".", "/") + rel[len(folder):]
    raise AssertionError(f"{rel} is not under a package folder {FOLDERS}")


def _module_name(path: Path) -> str:
    """The dotted name a file of the checkout imports as, '' when it is not in the package."""
    try:
        installed = _installed_name(path)
    except AssertionError:
        return ""
    return installed.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _package_files() -> list[Path]:
    return [p for folder in FOLDERS for p in _files(ROOT / folder, "*") if p.is_file()
            and p.suffix != ".pyc"]


# --- the wheel -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Built:
    wheel: Path
    builder: Path  # the build venv's python (its pip also installs into other venvs)


def _lowest_setuptools() -> str:
    spec = next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    match = re.fullmatch(r"setuptools\s*>=\s*(\d+)(?:\.\d+)*", spec)
    assert match, f"build-system.requires has {spec!r}; this test expects 'setuptools>=N'"
    return f"setuptools=={match.group(1)}.*"


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SKIP_DIRS, "*.egg-info"))
    venv = base / "build-venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", _lowest_setuptools())
    _run(python, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", base / "dist", source)
    wheels = sorted((base / "dist").glob("edgefleet-*.whl"))
    assert len(wheels) == 1, wheels
    return Built(wheels[0], python)


@pytest.fixture(scope="session")
def wheel_names(built: Built) -> list[str]:
    with zipfile.ZipFile(built.wheel) as whl:
        return whl.namelist()


@pytest.mark.slow
def test_wheel_holds_one_top_level_package(wheel_names):
    top = {name.split("/")[0] for name in wheel_names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and next(iter(dist_info)).startswith("edgefleet-"), top
    assert top - dist_info == {"edgefleet"}, top


@pytest.mark.slow
def test_wheel_holds_every_module_and_data_file_at_its_mapped_path(wheel_names):
    wanted = [p for p in _package_files()
              if p.suffix == ".py" or p.name == "py.typed"
              or (p.suffix == ".toml" and p.parent == ROOT / "devices" / "board-profiles")]
    assert any(p.suffix == ".toml" for p in wanted) and any(p.name == "py.typed" for p in wanted)
    missing = sorted(_installed_name(p) for p in wanted if _installed_name(p) not in set(wheel_names))
    assert not missing, f"not in the wheel (a folder missing from [tool.setuptools] packages?): {missing}"


@pytest.fixture(scope="session")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel (not editable) and click, nothing else of ours."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)  # the build venv's pip installs here
    _run(built.builder, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps",
         built.wheel, "click")
    return venv


@pytest.mark.slow
@pytest.mark.parametrize("where", ["repository root", "another folder"])
def test_installed_wheel_runs_from_any_folder(installed, where, tmp_path):
    cwd = ROOT if where == "repository root" else tmp_path
    helped = _run(installed / "bin" / "edgefleet", "--help", cwd=cwd)
    assert "Usage:" in helped.stdout
    probe = ("import edgefleet, edgefleet.agent, sysconfig; print(edgefleet.__file__); "
             "print(sysconfig.get_paths()['purelib'])")
    where_from, site = _run(installed / "bin" / "python", "-c", probe, cwd=cwd).stdout.split()
    assert Path(where_from).resolve().is_relative_to(Path(site).resolve()), (where_from, site)
    assert Path(site).resolve().is_relative_to(installed.resolve()), site


# --- the package list ------------------------------------------------------------------------

def test_every_package_folder_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = {_module_name(init) for folder in FOLDERS for init in _files(ROOT / folder, "__init__.py")}
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - folders == set(), "listed in pyproject.toml but no folder with an __init__.py"


# --- imports ---------------------------------------------------------------------------------

def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in PATH, relative ones resolved; `from a import b`
    yields both a and a.b (b may be a module)."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level and not package:
                continue  # a relative import outside the package (tests): never a bare name
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _offences(paths: list[Path], banned: tuple[str, ...]) -> list[str]:
    found: dict[str, str] = {}  # one entry per import line: `from a import b` yields a and a.b
    for path in paths:
        for line, module in _imports(path):
            if any(module == b or module.startswith(f"{b}.") for b in banned):
                found.setdefault(f"{path.relative_to(ROOT)}:{line}", module)
    return [f"{where}: {module}" for where, module in found.items()]


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in _files(ROOT / folder, "*.py")]


def test_no_bare_imports_of_the_repository_folders():
    # bare names would load a second copy from the checkout, or another distribution's package
    offences = _offences(_python_files("."), BARE)
    assert not offences, "import these as edgefleet.<name>:\n" + "\n".join(offences)


def test_fleet_and_converter_never_import_the_agent():
    offences = _offences(_python_files("fleet", "converter"), ("edgefleet.agent",))
    assert not offences, "the daemon's internals are the agent's own:\n" + "\n".join(offences)


def test_device_code_never_imports_tensorflow_or_the_converter():
    offences = _offences(_python_files("agent", "devices", "src/edgefleet/protocol"),
                         (*HEAVY, "edgefleet.converter"))
    assert not offences, "a board has no TensorFlow (edgefleet[device] only):\n" + "\n".join(offences)


def test_no_module_is_over_400_lines():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in _package_files() if p.suffix == ".py"}
    over = {name: lines for name, lines in sorted(sizes.items()) if lines > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines; split them by job: {over}"
