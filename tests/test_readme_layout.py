"""The README's Layout section maps the repository as it is: every package, subpackage and module of
sparsecse/, callbacks/ and hydra_plugins/ is named under its folder's entry, and every name there
exists; the subpackages are listed in the order of the import-linter layers contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("sparsecse", "callbacks", "hydra_plugins")


def layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout\n\n```\n", 1)[1].split("```", 1)[0]
    return block.splitlines()


def entries() -> dict[str, str]:
    """Each entry's path (`sparsecse/pruning/`, `callbacks/`) -> its text, continuation lines included."""
    found: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    current = None
    for line in layout_block():
        match = re.match(r"^( *)(\S+/)\s", line + " ")
        if match and len(match.group(1)) % 2 == 0 and len(match.group(1)) // 2 <= len(parents):
            depth = len(match.group(1)) // 2
            parents = parents[:depth]
            current = "".join(name for _, name in parents) + match.group(2)
            parents.append((depth, match.group(2)))
            found[current] = line
        elif current is not None:
            found[current] += " " + line.strip()
    return found


def named_modules(text: str) -> set[str]:
    return set(re.findall(r"\b(\w+)\.py\b", text))


def packages(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (p / "__init__.py").is_file())


def modules_of(folder: Path) -> set[str]:
    """The modules of a folder, and of its subpackages where it is not a package itself (hydra_plugins)."""
    found = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    if not (folder / "__init__.py").is_file():
        found |= {m for sub in packages(folder) for m in modules_of(sub)}
    return found


def test_every_folder_is_an_entry_and_every_entry_a_folder():
    listed = entries()
    for folder in FOLDERS:
        subpackages = {
            f"{p.relative_to(ROOT)}/" for p in (ROOT / folder).iterdir() if (p / "__init__.py").is_file()
        }
        assert f"{folder}/" in listed, folder
        if folder == "sparsecse":
            assert subpackages <= set(listed), sorted(subpackages - set(listed))
    for path in listed:
        assert (ROOT / path).exists(), f"the Layout names {path}, which does not exist"


@pytest.mark.parametrize(
    "folder", [f"sparsecse/{p.name}" for p in packages(ROOT / "sparsecse")] + ["callbacks", "hydra_plugins"]
)
def test_each_entry_names_exactly_its_folders_modules(folder):
    listed = entries()
    key = f"{folder}/" if f"{folder}/" in listed else f"{folder.split('/')[0]}/"
    text = listed[key]
    modules = modules_of(ROOT / folder)
    named = named_modules(text)
    assert modules <= named, f"{key} does not name {sorted(modules - named)}"
    assert named <= modules, f"{key} names {sorted(named - modules)}, not in {folder}"


def test_the_subpackages_are_listed_in_the_layers_contracts_order():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c.get("type") == "layers")
    order = [name.removeprefix("sparsecse.") for layer in layers for name in layer.split(" | ")]
    listed = [
        path.split("/")[1] for path in entries() if path.startswith("sparsecse/") and path.count("/") == 2
    ]
    assert [name for name in listed if name in order] == order
    top = {p.stem for p in (ROOT / "sparsecse").glob("*.py")}
    assert top == {"__init__"}, f"modules at sparsecse/'s top level: {sorted(top - {'__init__'})}"
