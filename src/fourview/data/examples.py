"""Example objects shipped inside the package, so a fresh install has something to render.

They are objects of the synthetic world (`fourview.data.synthetic`), written by
`write_examples()`; `fourview data render example:NAME` renders one.
"""

from __future__ import annotations

import json
from pathlib import Path

from fourview.data.glb import export_glb
from fourview.data.synthetic import SyntheticSpec, build_asset, caption
from fourview.errors import InputError

EXAMPLES_DIR = Path(__file__).resolve().parent / "example_assets"
EXAMPLES: dict[str, tuple[str, str, str, str]] = {
    # name: (shape, colour, pattern, finish)
    "red_mug": ("mug", "red", "striped", "glossy"),
    "green_tree": ("tree", "green", "plain", "matte"),
    "blue_car": ("car", "blue", "plain", "metallic"),
}


def example_path(name: str) -> Path:
    """Path of the shipped example ``name`` (its ``model.glb``)."""
    path = EXAMPLES_DIR / name / "model.glb"
    if name not in EXAMPLES or not path.is_file():
        raise InputError(f"unknown example {name!r}; examples: {', '.join(sorted(EXAMPLES))}")
    return path


def write_examples(out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """(Re)write the example objects into ``out_dir/NAME/{model.glb, caption.txt, spec.json}``."""
    paths = []
    for i, (name, (shape, colour, pattern, finish)) in enumerate(EXAMPLES.items()):
        spec = SyntheticSpec(shape=shape, colour=colour, pattern=pattern, finish=finish, seed=i)
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        export_glb(build_asset(spec), folder / "model.glb")
        (folder / "caption.txt").write_text(caption(spec) + "\n")
        (folder / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1) + "\n")
        paths.append(folder / "model.glb")
    return paths
