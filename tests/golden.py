"""Golden renders: tests/golden/<template>/{defaults,example}.nix.

Regenerate after an intended change with `python -m tests.golden [NAME ...]` and review the diff.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from xnodectl import catalog
from xnodectl.render import render

GOLDEN = Path(__file__).parent / "golden"
VARIANTS = ("defaults", "example")


def example_params(template: catalog.Template) -> dict[str, Any]:
    return dict(template.meta.example)


def defaults_params(template: catalog.Template) -> dict[str, Any]:
    """The defaults render: every default, plus example values for required parameters."""
    return {
        name: template.meta.example[name]
        for name, spec in template.params.items()
        if spec.required and not spec.secret and name in template.meta.example
    }


def rendered(template: catalog.Template, variant: str) -> str:
    params = defaults_params(template) if variant == "defaults" else example_params(template)
    return render(template, params).source


def path(name: str, variant: str) -> Path:
    return GOLDEN / name / f"{variant}.nix"


def main(names: list[str]) -> None:
    for template in catalog.all_templates():
        if names and template.name not in names:
            continue
        for variant in VARIANTS:
            target = path(template.name, variant)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rendered(template, variant))
            sys.stderr.write(f"wrote {target}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
