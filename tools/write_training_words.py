"""Write a generator's ``training_words.txt`` from the rendered data it was trained on.

`fourview train mvgen` writes the file itself into a whole pipeline's ``final/``; this tool writes it
for weights trained before it did (the shipped demo generator: trained on ``data/render_train``).

    python tools/write_training_words.py src/fourview/weights/mvgen-demo data/render_train
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fourview.data.captions import caption_object
from fourview.mvgen.prompt_check import write_training_words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="the generator's folder (model_index.json)")
    parser.add_argument("data", type=Path, nargs="+", help="folders of rendered objects (caption.txt / spec.json)")
    args = parser.parse_args()
    captions = []
    for root in args.data:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            found = caption_object(folder)
            if found is not None:
                captions.append(found.caption)
    path = write_training_words(args.weights, captions)
    print(f"wrote {path}: {len(path.read_text().split())} words from {len(captions)} captions")


if __name__ == "__main__":
    main()
