"""No module imports from a layer above its own: the layers are the README's Layout table."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_layers() -> dict[str, int]:
    """{unit: layer} from the README rows `| n | `jaxalign/x`, `jaxalign/y.py` | ... |`."""
    text = (ROOT / "README.md").read_text()
    layers = {}
    for layer, paths in re.findall(r"^\| (\d+) \| ([^|]+) \|", text, flags=re.M):
        for path in re.findall(r"`jaxalign/([a-z_]+)(?:\.py)?`", paths):
            layers[path] = int(layer)
    return layers


def unit_of(module: str) -> str:
    """`jaxalign.rl.trainer` -> "rl"; `jaxalign.config` -> "config"."""
    return module.split(".")[1]


def imports() -> list[tuple[str, str, int, str]]:
    """(importing unit, imported unit, line, file) for every jaxalign import, function-level ones included."""
    out = []
    for path in sorted((ROOT / "jaxalign").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1:] == ("__init__.py",):
            continue
        src = rel.parts[1].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(rel))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxalign":
                targets = ([f"jaxalign.{a.name}" for a in node.names] if node.module == "jaxalign"
                           else [node.module])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "jaxalign"]
            else:
                continue
            out += [(src, unit_of(t), node.lineno, str(rel)) for t in targets if unit_of(t) != src]
    return out


def upward(found: list[tuple[str, str, int, str]], layers: dict[str, int]) -> list[str]:
    """The imports of `found` that go up the layers, one line each."""
    return [f"{file}:{line}: {src} (layer {layers[src]}) imports {dst} (layer {layers[dst]})"
            for src, dst, line, file in found if layers[dst] > layers[src]]


def test_every_unit_has_a_layer():
    layers = readme_layers()
    units = {p.name.removesuffix(".py") for p in (ROOT / "jaxalign").iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - set(layers) == set(), "README Layout table: these packages have no layer"
    assert set(layers) - units == set(), "README Layout table names packages that do not exist"


def test_no_module_imports_from_a_layer_above():
    layers = readme_layers()
    found = imports()
    assert len(found) > 50  # the walk sees the package's imports
    assert upward(found, layers) == []


def test_the_check_catches_an_upward_import():
    layers = readme_layers()
    # the kit importing a trainer, rewards importing GRPO: refused; the other way round: allowed
    made_up = [("train", "sft", 1, "jaxalign/train/x.py"), ("rewards", "rl", 2, "jaxalign/rewards/y.py"),
               ("rl", "rewards", 3, "jaxalign/rl/z.py"), ("sft", "train", 4, "jaxalign/sft/w.py")]
    assert [line.split(":")[1] for line in upward(made_up, layers)] == ["1", "2"]
    assert layers["cli"] == max(layers.values()) and layers["errors"] == layers["config"] == 0
