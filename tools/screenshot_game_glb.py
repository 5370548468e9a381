"""Screenshot a game-ready GLB in a real glTF viewer (three.js in headless Chromium) for docs/usage.md.

Runs ``fourview generate PROMPT --target game --lods 3 --height 0.3`` (the shipped demo models
unless the usual model options say otherwise) into a temporary folder, or takes ``--glb``, opens
the level-of-detail chain (``model_lods.glb``: three.js shows its finest level) in the tests'
viewer, tests/export/gltf_viewer (GLTFLoader's MeshStandardMaterial, a directional and a hemisphere
light), and writes the render over a light grey background. It prints what three.js measured: the
bounding box, the triangles, the maps, and how much switching the normal map off changes the lit
pixels. Needs Debian's chromium and chromium-driver, selenium (the dev extra) and
``npm ci --prefix tests/export/gltf_viewer``.

    python tools/screenshot_game_glb.py                      # -> docs/images/game_viewer.png
    python tools/screenshot_game_glb.py --glb out/cup/model_lods.glb --out /tmp/cup.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the viewer and the browser live in the tests package (run from anywhere)

from fourview.cli import main as fourview  # noqa: E402
from tests.browser import CHROMIUM_MISSING, HAVE_CHROMIUM, start_chromium  # noqa: E402
from tests.export.gltf_viewer import HAVE_THREE, THREE_MISSING, messages, open_model, render, serve_viewer  # noqa: E402

BACKGROUND = (242, 242, 242, 255)


def generate(prompt: str, height: float, out: Path) -> Path:
    """``fourview generate`` with the game target and three levels of detail; returns the chain GLB."""
    argv = ["generate", prompt, "-o", str(out), "--target", "game", "--lods", "3", "--height", str(height), "--quiet"]
    print("fourview", " ".join(argv[:1] + [repr(prompt)] + argv[2:]))
    try:
        fourview(argv)
    except SystemExit as e:  # the CLI always ends in SystemExit
        if e.code:
            raise
    return out / "model_lods.glb"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red mug")
    ap.add_argument("--height", type=float, default=0.3, help="--height of fourview generate, metres")
    ap.add_argument("--glb", type=Path, help="screenshot this GLB instead of generating one")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "game_viewer.png")
    ap.add_argument("--size", type=int, default=420, help="square image side, pixels")
    ap.add_argument("--azimuth", type=float, default=30.0, help="degrees from the front (+Z) towards +X")
    ap.add_argument("--elevation", type=float, default=20.0, help="degrees")
    args = ap.parse_args()
    for ok, why in ((HAVE_CHROMIUM, CHROMIUM_MISSING), (HAVE_THREE, THREE_MISSING)):
        if not ok:
            raise SystemExit(why)
    with tempfile.TemporaryDirectory() as tmp:
        glb = args.glb or generate(args.prompt, args.height, Path(tmp) / "generated")
        driver = start_chromium(Path(tmp) / "profile", Path(tmp) / "downloads")
        try:
            with serve_viewer({glb.name: glb}) as url:
                info = open_model(
                    driver, url, glb.name, size=args.size, azimuth=args.azimuth, elevation=args.elevation
                )
                shot, flat = render(driver), render(driver, normal_map=False)
                problems = messages(driver)
        finally:
            driver.quit()
    lo, hi = np.round(info["min"], 4), np.round(info["max"], 4)
    print(f"three.js: bounding box {lo.tolist()} .. {hi.tolist()} (height {hi[1] - lo[1]:.4f} m)")
    for mesh in info["meshes"]:
        maps = [k for k in ("map", "normalMap", "roughnessMap", "metalnessMap", "aoMap") if mesh["material"][k]]
        print(f"three.js: {mesh['triangles']:.0f} triangles, {mesh['material']['type']} with {', '.join(maps)}")
    inside = (shot[..., 3] == 255) & (flat[..., 3] == 255)
    diff = np.abs(shot[inside][:, :3].astype(int) - flat[inside][:, :3].astype(int))
    print(f"normal map off: mean |difference| {diff.mean():.2f} levels over {inside.sum()} object pixels")
    if problems:
        print("three.js said:", *problems, sep="\n  ")
    image = Image.alpha_composite(Image.new("RGBA", shot.shape[1::-1], BACKGROUND), Image.fromarray(shot))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
