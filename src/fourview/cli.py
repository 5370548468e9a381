"""The `fourview` command line. Library code never parses argv; this module only wires settings.

Errors in what the user gave (a missing file, an unknown format, a bad setting) print one line
on stderr and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fourview.errors import InputError

UP_AXES = ("y", "z", "x", "-y", "-z", "-x")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fourview")
def cli() -> None:
    """fourview: text, a photo or four photos to a textured 3D mesh."""


@cli.group()
def data() -> None:
    """The data stage: synthetic world, dataset rendering, scoring and filtering."""


@data.command("synth")
@click.option("--count", type=int, required=True, help="Number of objects.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the first object (object i uses seed+i)."
)
@click.option("--split", type=click.Choice(["train", "heldout"]), default="train", show_default=True)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_synth(count: int, seed: int, split: str, out_dir: Path, quiet: bool) -> None:
    """Write procedural objects of the synthetic world as GLB + caption.txt + spec.json."""
    from fourview.data.synthetic import write_synthetic

    if count < 1:
        raise InputError(f"--count must be >= 1, got {count}")
    paths = write_synthetic(out_dir, count=count, seed=seed, split=split, progress=not quiet)
    click.echo(f"wrote {len(paths)} objects to {out_dir}")


@data.command("render")
@click.argument("inputs", nargs=-1)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--objects", "objects_json", type=click.Path(dir_okay=False), help="JSON list of {name, mesh, up_axis}.")
@click.option("--res", type=int, default=512, show_default=True, help="Image side, pixels.")
@click.option("--elevation", type=float, default=20.0, show_default=True, help="Rig elevation, degrees.")
@click.option("--random", "num_random", type=int, default=100, show_default=True, help="Random views per object.")
@click.option(
    "--random-elevation",
    type=(float, float),
    default=(-90.0, 90.0),
    show_default=True,
    help="Elevation band of the random views, degrees.",
)
@click.option(
    "--up-axis",
    type=click.Choice(UP_AXES),
    default="y",
    show_default=True,
    help="Up axis of the inputs (z for Z-up scans); --objects records carry their own.",
)
@click.option("--albedo", is_flag=True, help="Unlit: write the surface albedo (base colour) only.")
@click.option("--ambient", type=float, default=0.35, show_default=True)
@click.option("--directional", type=float, default=0.75, show_default=True)
@click.option(
    "--light-dir",
    type=(float, float, float),
    default=(0.4, 1.0, 0.7),
    show_default=True,
    help="Object-frame direction towards the directional light.",
)
@click.option("--environment", type=float, default=0.0, show_default=True, help="Sky/ground hemisphere light.")
@click.option("--specular", type=float, default=0.25, show_default=True)
@click.option(
    "--supersample",
    type=int,
    default=3,
    show_default=True,
    help="Anti-aliasing samples per axis (odd keeps alpha >= 0.5 equal to the pixel-centre coverage).",
)
@click.option("--no-depth", is_flag=True)
@click.option("--no-normal", is_flag=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random cameras.")
@click.option("--workers", type=int, default=1, show_default=True, help="Local worker processes.")
@click.option("--webdataset", "wds_pattern", help="Also write WebDataset shards, e.g. 'shards/obj-%06d.tar'.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_render(inputs, out_dir, objects_json, res, elevation, num_random, random_elevation, up_axis, albedo,
                ambient, directional, light_dir, environment, specular, supersample, no_depth, no_normal, seed,
                workers, wds_pattern, quiet) -> None:  # fmt: skip
    """Render objects (asset files, GSO folders, synthetic objects, example:NAME) for training.

    Writes DIR/NAME/{rig/*.png, grid.png, random/*.png, cameras.json}; finished objects are skipped.
    """
    from fourview.data.dataset_renderer import RenderSettings, render_dataset, resolve_inputs, write_webdataset
    from fourview.render.mesh_renderer import Lighting

    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    try:
        lighting = Lighting(albedo, ambient, directional, light_dir, environment, specular)
    except ValueError as e:
        raise InputError(str(e)) from None
    settings = RenderSettings(
        resolution=res, elevation_deg=elevation, num_random=num_random, random_elevation_deg=random_elevation,
        lighting=lighting, supersample=supersample, write_depth=not no_depth, write_normal=not no_normal, seed=seed,
    )  # fmt: skip
    sources = resolve_inputs(list(inputs), up_axis=up_axis, objects_json=objects_json)
    done = render_dataset(sources, out_dir, settings, workers=workers, progress=not quiet)
    if wds_pattern:
        write_webdataset(done, wds_pattern)
    click.echo(f"rendered {len(done)} objects to {out_dir}")


@data.command("score")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Manifest to write (JSONL).",
)
@click.option("--clip", "clip_weights", help="open_clip checkpoint file or downloaded hub folder.")
@click.option("--clip-model", default="ViT-L-14", show_default=True, help="open_clip architecture of --clip.")
@click.option("--aesthetic", "aesthetic_weights", help="LAION aesthetic head (.safetensors or .pth state dict).")
@click.option("--svm", "svm_path", help="Quality SVM written by 'fourview data svm-train'.")
@click.option("--captioner", "captioner_dir", help="Local transformers captioning model for objects without captions.")
@click.option("--device", default="cpu", show_default=True)
def data_score(root, out_path, clip_weights, clip_model, aesthetic_weights, svm_path, captioner_dir, device) -> None:
    """Caption and score rendered objects (ROOT/NAME/rig/*.png) into a manifest.

    Scores whose weights are not given are recorded as unavailable, with the reason.
    """
    from fourview.data.captions import HFCaptioner
    from fourview.data.filter import build_manifest, load_scorers
    from fourview.data.manifest import write_manifest

    scorers = load_scorers(clip_weights, clip_model, aesthetic_weights, svm_path, device)
    for key in ("clip_score", "aesthetic", "svm_score"):
        status = scorers.availability(key)
        if not status.available:
            click.echo(f"{key}: unavailable ({status.reason})", err=True)
    captioner = HFCaptioner.from_pretrained(captioner_dir, device) if captioner_dir else None
    records = build_manifest(root, scorers, captioner, progress=True)
    write_manifest(out_path, records)
    click.echo(f"scored {len(records)} objects into {out_path}")


@data.command("filter")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--min-aesthetic",
    type=float,
    default=3.5,
    show_default=True,
    help="Drop objects whose mean aesthetic score over the 4 rig views is below this.",
)
@click.option(
    "--pass",
    "pass_index",
    type=click.Choice(["1", "2"]),
    default="1",
    show_default=True,
    help="Curriculum pass: 1 = all above --low-threshold, 2 = the best --top-fraction of those.",
)
@click.option("--low-threshold", type=float, default=None, help="Pass-1 minimum of --key.")
@click.option("--top-fraction", type=float, default=0.3, show_default=True)
@click.option(
    "--key", type=click.Choice(["aesthetic", "clip_score", "svm_score"]), default="aesthetic", show_default=True
)
@click.option(
    "--on-missing",
    type=click.Choice(["raise", "keep", "drop"]),
    default="raise",
    show_default=True,
    help="Objects lacking a needed score: error out, keep them, or drop them.",
)
def data_filter(manifest, out_path, min_aesthetic, pass_index, low_threshold, top_fraction, key, on_missing) -> None:
    """Apply the design's filters to a manifest: the aesthetic floor, then one curriculum pass."""
    from fourview.data.filter import curriculum_pass, drop_low_aesthetic
    from fourview.data.manifest import read_manifest, write_manifest

    records = read_manifest(manifest)
    kept = drop_low_aesthetic(records, min_aesthetic, on_missing)
    kept = curriculum_pass(kept, int(pass_index), low_threshold, top_fraction, key, on_missing)
    write_manifest(out_path, kept)
    click.echo(f"kept {len(kept)} of {len(records)} objects in {out_path}")


@data.command("svm-train")
@click.option("--good", "good", multiple=True, required=True, help="Object folder or a text file listing them.")
@click.option("--bad", "bad", multiple=True, required=True, help="Object folder or a text file listing them.")
@click.option("--clip", "clip_weights", required=True, help="open_clip checkpoint file or downloaded hub folder.")
@click.option("--clip-model", default="ViT-L-14", show_default=True)
@click.option("--kernel", type=click.Choice(["linear", "rbf"]), default="linear", show_default=True)
@click.option("--C", "c", type=float, default=1.0, show_default=True, help="SVM regularisation.")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
def data_svm_train(good, bad, clip_weights, clip_model, kernel, c, out_path) -> None:
    """Train the quality SVM on CLIP features of hand-labelled good and bad objects (saved as JSON)."""
    from fourview.data.filter import ClipScorer, SVMConfig, train_quality_svm

    clip = ClipScorer.from_pretrained(clip_weights, clip_model)
    svm = train_quality_svm(_object_list(good), _object_list(bad), clip, SVMConfig(kernel=kernel, C=c))
    svm.save(out_path)
    click.echo(f"wrote {out_path}")


def _object_list(items: tuple[str, ...]) -> list[Path]:
    """Object folders given directly or listed one per line in text files."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_file():
            out += [Path(line.strip()) for line in p.read_text().splitlines() if line.strip()]
        elif p.is_dir():
            out.append(p)
        else:
            raise InputError(f"not an object folder or list file: {item}")
    for p in out:
        if not p.is_dir():
            raise InputError(f"object folder not found: {p}")
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command, turning user errors into one line on stderr and exit status 2."""
    try:
        rv = cli.main(args=argv, prog_name="fourview", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:  # usage errors: unknown option, bad value
        click.echo(f"fourview: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("fourview: aborted", err=True)
        sys.exit(130)
    except (InputError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError) as e:
        msg = " ".join(str(e).split())  # one line, whatever the message held
        click.echo(f"fourview: error: {msg}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
