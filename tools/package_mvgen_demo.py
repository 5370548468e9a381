"""Package a from-scratch `fourview train mvgen` run as the shipped demo generator.

The run's ``final/`` folder (diffusers layout, float16) is copied; its ``vae/`` is replaced by the
run's ``vae_decoder/`` (the decoder fine-tuned with the encoder frozen, `--stage vae_decoder`,
saved here in float16) where the run has one (a fine-tune started with ``--init`` from a packaged
generator keeps the VAE it started from, decoder included); and both text encoders'
``config.json`` get ``"dtype": "float32"`` so that a plain
``StableDiffusionXLPipeline.from_pretrained(folder)`` loads every part in float32 (transformers
otherwise keeps the saved float16 and sampling fails on mixed dtypes).

    python tools/package_mvgen_demo.py runs/mvgen-demo src/fourview/weights/mvgen-demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "diffusion_pytorch_model.safetensors"


def package(run: Path, out: Path) -> None:
    final, decoder = run / "final", run / "vae_decoder"
    own_decoder = (decoder / WEIGHTS).is_file()
    if not (final / "model_index.json").is_file():
        raise SystemExit(f"missing {final / 'model_index.json'}")
    if own_decoder:
        enc = load_file(str(final / "vae" / WEIGHTS))
        dec = load_file(str(decoder / WEIGHTS))
        # The decoder run froze the encoder: its encoder weights must be the final VAE's.
        for name, t in enc.items():
            if name.startswith(("encoder.", "quant_conv.")) and not torch.equal(
                t.float(), dec[name].float().half().float()
            ):
                raise SystemExit(f"{decoder} has a different encoder ({name}); its latents would not match the UNet's")
    tmp = Path(tempfile.mkdtemp(prefix=".mvgen-demo.", dir=out.parent))
    try:
        shutil.copytree(final, tmp, dirs_exist_ok=True)
        cfg = json.loads(((decoder if own_decoder else final / "vae") / "config.json").read_text())
        if own_decoder:
            save_file({k: v.half().contiguous() for k, v in dec.items()}, str(tmp / "vae" / WEIGHTS))
            cfg["scaling_factor"] = json.loads((final / "vae" / "config.json").read_text())["scaling_factor"]
        cfg.pop("_name_or_path", None)
        (tmp / "vae" / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for te in ("text_encoder", "text_encoder_2"):
            path = tmp / te / "config.json"
            c = json.loads(path.read_text())
            c["dtype"] = "float32"
            c.pop("torch_dtype", None)
            path.write_text(json.dumps(c, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the training run's output folder")
    ap.add_argument("out", type=Path, help="the packaged folder (replaced)")
    args = ap.parse_args()
    package(args.run, args.out)


if __name__ == "__main__":
    main()
