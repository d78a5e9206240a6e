"""The conversion cases the goldens cover: one per golden file ``{repo}[@rev].{outtype}.json``.

Tests parametrize over these, so adding a fixture repo and generating its goldens is all it takes
for the end-to-end and llama.cpp tests to cover it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS_DIR = HERE.parents[1] / "fixtures" / "models"
GOLDENS_DIR = HERE / "models"
GOOD_TOKEN = "hf_fixture_good"


@dataclass(frozen=True)
class Case:
    golden_name: str
    repo_id: str
    revision: str
    outtype: str
    gated: bool

    @property
    def id(self) -> str:
        return self.golden_name

    def golden(self) -> dict:
        return json.loads((GOLDENS_DIR / f"{self.golden_name}.json").read_text())


def cases() -> list[Case]:
    specs = {p.stem: json.loads(p.read_text()) for p in MODELS_DIR.glob("*.json")}
    out = []
    for path in sorted(GOLDENS_DIR.glob("*.json")):
        stem = path.stem  # e.g. two-commits@v1.f16
        base, _, outtype = stem.rpartition(".")
        name, _, rev = base.partition("@")
        spec = specs.get(name)
        if spec is None:
            continue
        out.append(Case(golden_name=stem, repo_id=spec["repo"], revision=rev or "main", outtype=outtype,
                        gated=bool(spec.get("access", {}).get("gated"))))
    return out
