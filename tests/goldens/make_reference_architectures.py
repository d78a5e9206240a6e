"""Write ``hfstream/data/reference_architectures.json``: the architecture names llama.cpp's reference
converter registers, so that hfstream's refusal of an architecture can say whether the reference
converts it.

    python -m tests.goldens.make_reference_architectures [--llama-cpp-dir DIR]

Reads ``conversion/*.py`` of the reference as text (never imports it): every string argument of a
``@ModelBase.register(...)`` decorator, split by whether the decorated class is a vision/audio
projector (``MmprojModel`` or a subclass of one) or a text model.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.goldens.generate import HOW_TO_GET, find_llama_cpp_dir, reference_sha256  # noqa: E402

OUT = REPO_ROOT / "hfstream" / "data" / "reference_architectures.json"


def registered(conversion_dir: Path) -> tuple[set[str], set[str]]:
    """(text names, projector names) registered in every module of ``conversion_dir``."""
    classes: dict[str, tuple[list[str], list[str]]] = {}  # class -> (base names, registered names)
    for path in sorted(conversion_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
                     for b in node.bases]
            names: list[str] = []
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "register"):
                    names += [a.value for a in dec.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            old = classes.get(node.name, ([], []))
            classes[node.name] = (old[0] + bases, old[1] + names)

    def is_projector(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "MmprojModel":
            return True
        if name in seen or name not in classes:
            return False
        return any(is_projector(b, seen | {name}) for b in classes[name][0])

    text, mmproj = set(), set()
    for name, (_, names) in classes.items():
        (mmproj if is_projector(name) else text).update(names)
    return text, mmproj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp-dir")
    args = parser.parse_args(argv)
    llama_cpp_dir = find_llama_cpp_dir(args.llama_cpp_dir)
    if llama_cpp_dir is None:
        print(f"the reference converter is not there; {HOW_TO_GET}", file=sys.stderr)
        return 2
    text, mmproj = registered(llama_cpp_dir / "conversion")
    data = {"_about": "architecture names llama.cpp's convert_hf_to_gguf.py registers "
                      "(tests/goldens/make_reference_architectures.py)",
            "reference_sha256": reference_sha256(llama_cpp_dir),
            "text": sorted(text), "mmproj": sorted(mmproj)}
    OUT.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(text)} text, {len(mmproj)} projector architectures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
