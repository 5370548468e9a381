"""Write the EMA weights of a `fourview train recon` checkpoint as a model folder (config.json + model.safetensors).

A training run writes ``OUT/final`` only when its schedule ends; this exports any checkpoint's EMA
(``custom_checkpoint_1.pkl``, the trainer's own file) the same way, so a run stopped early can be
evaluated or shipped. ``--density-iso`` sets the level the exported mesh is extracted at (a
stage-A density model; `tools/calibrate_density_iso.py` picks it).

    python tools/export_checkpoint.py runs/recon-gso-a 2000 runs/gso-a-step2000 --density-iso 6
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from fourview.recon.config import ReconConfig
from fourview.recon.model import Reconstructor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the training run's folder (OUT of fourview train recon)")
    ap.add_argument("step", type=int, help="the checkpoint's step")
    ap.add_argument("out", type=Path, help="the model folder to write")
    ap.add_argument("--density-iso", type=float, help="extraction level of a density model")
    args = ap.parse_args()
    folder = args.run / "checkpoints" / f"step_{args.step:08d}"
    config = ReconConfig.from_json((args.run / "recon_config.json").read_text(encoding="utf-8"))
    if args.density_iso is not None:
        config = replace(config, decoder=replace(config.decoder, density_iso=args.density_iso))
    model = Reconstructor(config)
    # Our own trainer's file (the EMA registered for checkpointing), not a user's: a pickle is read.
    shadow = torch.load(folder / "custom_checkpoint_1.pkl", map_location="cpu", weights_only=False)["shadow"]
    state = model.state_dict()
    missing = sorted(set(state) - set(shadow))
    if missing:
        raise SystemExit(f"the checkpoint's EMA lacks {len(missing)} parameters, e.g. {missing[0]}")
    model.load_state_dict({k: shadow[k].to(v.dtype) for k, v in state.items()})
    model.save_pretrained(args.out)
    print(f"wrote {args.out} from {folder} (EMA, {len(shadow)} tensors)")


if __name__ == "__main__":
    main()
