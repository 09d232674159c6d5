"""Imports run one way: utils -> data -> models -> losses / metrics -> training / photos -> entry points -> tools
(userstudy) -> scripts and the benchmarks package (one layer: a script may import benchmarks, benchmarks never a
script).

Every import of a project module in the tree is read from the source (ast, nothing is imported) and its layer
compared with the importing module's: a module may import its own layer and the layers below, never above.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("train", "test", "evaluate", "infer")
LAYERS = {"utils": 0, "data": 1, "models": 2, "losses": 3, "metrics": 3, "training": 4, "photos": 4,
          **dict.fromkeys(ENTRY_POINTS, 5), "userstudy": 6, "scripts": 7, "benchmarks": 7}


def layer_of(module: str) -> int | None:
    return LAYERS.get(module.split(".")[0])


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file that names a project package or entry point."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from scripts import x` imports the script x: count the submodule, not the package
            names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module in LAYERS else [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if layer_of(name) is not None]
    return found


def source_files() -> list[Path]:
    files = [ROOT / f"{name}.py" for name in ENTRY_POINTS]
    for package in ("utils", "data", "models", "losses", "metrics", "training", "photos", "userstudy", "scripts",
                    "benchmarks"):
        files += sorted((ROOT / package).glob("*.py"))
    return files


def test_no_module_imports_from_a_layer_above_it():
    wrong = []
    for path in source_files():
        own = layer_of(path.stem if path.parent == ROOT else path.parent.name)
        for line, name in project_imports(path):
            if layer_of(name) > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_script_imports_another_script():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in sorted([*(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])
             for line, name in project_imports(path) if name.split(".")[0] == "scripts"]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import train\nfrom scripts import report\nfrom models.build import build_spatn\n")
    assert [name for _, name in project_imports(bad)] == ["train", "scripts.report", "models.build"]


def test_nothing_outside_the_tests_edits_the_import_path():
    """The project is installed (`pip install -e .`, make venv): a script finds the packages without help."""
    wrong = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in source_files() for number, line in enumerate(path.read_text().splitlines(), 1)
             if "sys.path." in line or "noqa: E402" in line]
    assert not wrong, "\n".join(wrong)


def main_block(path: Path) -> str | None:
    """The source of a file's `if __name__ == "__main__":` body, or None when it has none."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ('__name__ == "__main__"', "__name__ == '__main__'"):
            return "\n".join(ast.unparse(statement) for statement in node.body)
    return None


def test_every_command_line_exits_through_run_main():
    """One exit path: bad input is one `error:` line and exit code 2 (utils.cli.run_main), everywhere."""
    blocks = {path: main_block(path) for path in source_files()}
    wrong = [f"{path.relative_to(ROOT)}: {block!r}" for path, block in blocks.items()
             if block is not None and block != "run_main(main)"]
    assert not wrong, "\n".join(wrong)
    assert sum(block is not None for block in blocks.values()) >= 18  # the entry points and the scripts
