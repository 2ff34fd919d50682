"""The layout of docs/architecture.md, checked on the source: the layers from the imports of every module,
no sys.path edits, the installable package (pyproject.toml) and scripts that run from any folder.

Layers, one direction: util/ at the ground; models/ and datasets/ side by side above it, never importing each
other; the entry points (main, engine, inference_*, hubconf) and scripts/ on top, where nothing below them
imports them (scripts/ only by scripts/ and tests/). The product (everything outside tests/) imports neither
`main` nor anything of tests/, and names no path outside the repository.
"""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUND = "util"
SIDE_BY_SIDE = ("models", "datasets")
ENTRY_POINTS = ("main", "engine", "inference_rvos", "inference_a2d", "inference_jhmdb", "hubconf")
SCRIPTS = "scripts"
TESTS = "tests"
# Not the repository's source: what `make`, the demo and a lent GPU machine put beside it (all but shared/ are
# in .gitignore), and hidden folders (.git, .venv).
NOT_SOURCE = ("build", "data", "output", "shared", "__pycache__")
SYS_PATH_METHODS = ("insert", "append", "extend")
TRAINING_ENTRY_POINT = "main"
# Calls that run or import a Python file given by its path.
PATH_LOADERS = ("spec_from_file_location", "run_path", "SourceFileLoader", "SourcelessFileLoader", "load_source")
# The text files of the repository that a reader of the product sees (Makefile has no suffix).
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".ini", ".cfg", ".sh")
TEXT_NAMES = ("Makefile",)
# Paths outside the repository: the folder beside it, an absolute working folder, a specification kept elsewhere.
OUTSIDE_PATHS = re.compile(r"\.\./shared|/work/|shared/reference|\bSPEC\b")
SCRIPT_TIMEOUT_S = 120  # `--help` imports torch and the model code; slow on two shared cores


def source_files() -> List[Path]:
    """Every Python file of the repository."""
    return sorted(path for path in ROOT.rglob("*.py")
                  if not any(part.startswith(".") or part in NOT_SOURCE for part in path.relative_to(ROOT).parts))


def module_parts(path: Path) -> Tuple[str, ...]:
    """`models/dcn/ops.py` -> ('models', 'dcn', 'ops')."""
    return path.relative_to(ROOT).with_suffix("").parts


def imported_roots(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, top-level name) of every import of `path`, at the top or inside functions; relative imports are
    resolved against the file's package."""
    package = module_parts(path)[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.lineno, node.module.split(".")[0]
            else:
                base = package[:len(package) - (node.level - 1)]
                names = (*base, *(node.module.split(".") if node.module else ()))
                if names:
                    yield node.lineno, names[0]


def layer_violations(forbidden: Dict[str, Tuple[str, ...]]) -> List[str]:
    """`file:line imports X` for every module under a key of `forbidden` that imports one of its names."""
    found = []
    for path in source_files():
        owner = module_parts(path)[0]
        for line, name in imported_roots(path):
            if name in forbidden.get(owner, ()):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


def test_util_imports_no_upper_layer():
    violations = layer_violations({GROUND: (*SIDE_BY_SIDE, *ENTRY_POINTS, SCRIPTS)})
    assert not violations, "\n".join(violations)


def test_models_and_datasets_do_not_import_each_other_or_upper_layers():
    models, datasets = SIDE_BY_SIDE
    upper = (*ENTRY_POINTS, SCRIPTS)
    violations = layer_violations({models: (datasets, *upper), datasets: (models, *upper)})
    assert not violations, "\n".join(violations)


def test_only_scripts_and_tests_import_scripts():
    owners = {module_parts(path)[0] for path in source_files()} - {SCRIPTS, TESTS}
    violations = layer_violations({owner: (SCRIPTS,) for owner in owners})
    assert not violations, "\n".join(violations)


def product_files() -> List[Path]:
    """The Python files outside tests/: what a user of the code runs."""
    return [path for path in source_files() if module_parts(path)[0] != TESTS]


def test_no_product_module_imports_main():
    # main.py is the training entry point; its parser and helpers belong to the parts they configure.
    violations = [f"{path.relative_to(ROOT)}:{line}" for path in product_files()
                  for line, name in imported_roots(path) if name == TRAINING_ENTRY_POINT]
    assert not violations, "imports main: " + ", ".join(violations)


def modules_of_tests() -> Tuple[str, ...]:
    """The importable modules of tests/ (what pytest puts on sys.path), e.g. data_factory, audio_helpers."""
    return tuple(sorted(path.stem for path in (ROOT / TESTS).glob("*.py")))


def uses_of_tests(path: Path, helpers: Tuple[str, ...]) -> Iterator[int]:
    """Lines of `path` that use code of tests/: an import of `tests` or of one of its modules by name, or a
    call that loads a file by path (importlib's spec_from_file_location, runpy.run_path, ...) whose arguments
    mention tests/ or one of its modules."""
    text = path.read_text()
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if node.level == 0 else [])
            if any(name.split(".")[0] in (TESTS, *helpers) for name in names):
                yield node.lineno
        elif isinstance(node, ast.Call):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            arguments = " ".join(ast.get_source_segment(text, arg) or "" for arg in node.args)
            if function in PATH_LOADERS and re.search(rf"\b({TESTS}|{'|'.join(helpers)})\b", arguments):
                yield node.lineno


def test_no_product_file_uses_code_of_tests():
    helpers = modules_of_tests()
    violations = [f"{path.relative_to(ROOT)}:{line}" for path in product_files()
                  for line in uses_of_tests(path, helpers)]
    assert not violations, "uses code of tests/: " + ", ".join(violations)


def test_the_layout_check_sees_a_use_of_tests(tmp_path):
    """The check itself: imports and loading by path are found, running the tests as a command is not."""
    sample = tmp_path / "sample.py"
    sample.write_text("import tests.data_factory\nfrom tests import audio_helpers\nimport data_factory\n"
                      "spec = importlib.util.spec_from_file_location('f', ROOT / 'tests' / 'data_factory.py')\n"
                      "runpy.run_path(str(ROOT / 'tests/model_helpers.py'))\n"
                      "subprocess.run(['pytest', 'tests/test_cuda.py'])\nimport testsuite\n")
    assert sorted(uses_of_tests(sample, ("audio_helpers", "data_factory", "model_helpers"))) == [1, 2, 3, 4, 5]


def text_files() -> List[Path]:
    """Every text file of the repository a reader sees (this test aside: it names the patterns it looks for).
    The folders that are not source (data/, output/, .venv, ...) are not entered: they may hold many files."""
    found = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and name not in NOT_SOURCE]
        found += [Path(folder) / name for name in names if Path(name).suffix in TEXT_SUFFIXES or name in TEXT_NAMES]
    return sorted(path for path in found if path != Path(__file__).resolve())


def test_no_file_names_a_path_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}" for path in text_files()
             for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if OUTSIDE_PATHS.search(line)]
    assert not found, "\n".join(found)


def test_the_layout_check_sees_a_path_outside_the_repository():
    for line in ("see ../shared/reference", "open('/work/data')", "(SPEC section 4)", "SPEC §5", "shared/reference"):
        assert OUTSIDE_PATHS.search(line), line
    for line in ("docs/protocol.md §4", "importlib.util.spec_from_file_location", "tests/fixtures", "SPECTRUM"):
        assert not OUTSIDE_PATHS.search(line), line


def sys_path_edits(path: Path) -> Iterator[int]:
    """Lines of `path` that change sys.path: a call of sys.path.insert/append/extend, an assignment to
    sys.path (or a slice of it), or `from sys import path`."""
    def is_sys_path(node: ast.AST) -> bool:
        if isinstance(node, ast.Subscript):
            node = node.value
        return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys")

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SYS_PATH_METHODS and is_sys_path(node.func.value)):
            yield node.lineno
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(is_sys_path(target) for target in targets):
                yield node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            yield node.lineno


def test_no_file_edits_sys_path():
    edits = [f"{path.relative_to(ROOT)}:{line}" for path in source_files() for line in sys_path_edits(path)]
    assert not edits, "sys.path changed at " + ", ".join(edits)


def test_the_layout_check_sees_a_sys_path_edit(tmp_path):
    """The check itself: each form of edit is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\nsys.path.insert(0, 'a')\nsys.path.append('b')\nsys.path[:] = []\n"
                      "sys.path += ['c']\nfrom sys import path\n")
    assert sorted(sys_path_edits(sample)) == [2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------- the installable package
def test_pyproject_lists_every_module_and_package():
    """`pip install -e .` installs every top-level module and package: each top-level .py file is a py-module of
    pyproject.toml, each folder of Python files (tests/ aside) a package, with its subpackages."""
    tomllib = pytest.importorskip("tomllib", reason="pyproject.toml is read with tomllib (Python 3.11+)")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    files = [module_parts(path) for path in source_files() if module_parts(path)[0] != TESTS]
    modules = sorted(parts[0] for parts in files if len(parts) == 1)
    packages = sorted({".".join(parts[:-1]) for parts in files if len(parts) > 1})
    assert sorted(setuptools["py-modules"]) == modules
    assert sorted(setuptools["packages"]) == packages
    for package in packages:
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file(), f"{package} has no __init__.py"


def test_a_script_runs_from_another_folder(tmp_path):
    """The scripts import the repository's packages as installed, whatever the working directory."""
    done = subprocess.run([sys.executable, str(ROOT / SCRIPTS / "evaluate_rvos.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "results" in done.stdout


@pytest.mark.slow  # imports torch, librosa and the model code for fourteen scripts
def test_every_script_imports_from_another_folder(tmp_path):
    """Each script's module code (its imports) runs from a folder outside the repository."""
    paths = [str(path) for path in sorted((ROOT / SCRIPTS).glob("*.py")) if path.name != "__init__.py"]
    code = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path, run_name='imported')\n"
    done = subprocess.run([sys.executable, "-c", code, *paths], cwd=tmp_path, capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]


# DETR's main.py is 248 lines and its engine.py 151: ours stay near, one idea per module.
MAX_ENTRY_POINT_LINES = 300


@pytest.mark.parametrize("path", [ROOT / "main.py", *sorted((ROOT / "engine").glob("*.py"))], ids=lambda p: p.name)
def test_main_and_each_engine_module_stay_small(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_ENTRY_POINT_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by what it does"
