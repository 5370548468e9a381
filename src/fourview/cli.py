"""The `fourview` command line. Library code never parses argv; this module only wires settings.

Errors in what the user gave (a missing file, an unknown format, a bad setting) print one line
on stderr and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

import click

from fourview.errors import InputError

UP_AXES = ("y", "z", "x", "-y", "-z", "-x")


class _LazyGroup(click.Group):
    """A command group whose subcommands are built when first looked up.

    Commands take their options from config dataclasses whose modules import torch (seconds);
    building them on demand keeps ``fourview --help`` and the other commands free of it. The
    listing shows each command's one-line help given at registration, without building it.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._builders: dict = {}

    def lazy_command(self, name: str, short_help: str):
        """Register the decorated function as the builder of subcommand ``name`` (returns a click.Command)."""

        def register(build):
            self._builders[name] = (build, short_help)
            return build

        return register

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._builders})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self._builders:
            self.add_command(self._builders[cmd_name][0](), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(formatter.width)))
            else:
                rows.append((name, self._builders[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fourview")
@click.option("-v", "--verbose", count=True, help="More log lines (-v: the library's progress notes, -vv: debug).")
@click.option("-q", "--quiet", "quiet_logs", is_flag=True, help="Only errors on stderr.")
def cli(verbose: int, quiet_logs: bool) -> None:
    """fourview: text, a photo or four photos to a textured 3D mesh."""
    import logging

    level = logging.ERROR if quiet_logs else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logger = logging.getLogger("fourview")
    for old in [h for h in logger.handlers if getattr(h, "fourview_cli", False)]:
        logger.removeHandler(old)  # one handler, on this invocation's stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.fourview_cli = True
    handler.setFormatter(logging.Formatter("fourview: %(message)s" if verbose < 2 else "%(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    if click.get_current_context().invoked_subcommand not in _COLLECT_AFTER_LOADING:
        _startup_done()


_COLLECT_AFTER_LOADING = frozenset({"generate", "image", "reconstruct", "batch"})
"""Commands that call `_startup_done` themselves, once their models are loaded; the others call it on entry."""
_collector_paused = False


def _pause_collector() -> None:
    """Turn the cyclic garbage collector off for start-up (`main`, on the process's own command line).

    Start-up makes about a million objects that live as long as the process (the modules of torch,
    diffusers and transformers, then the models). With the collector on, each full collection scans
    all of them again as they pile up: a fifth of a cold `fourview generate`'s CPU time (docs/benchmarks.md).
    """
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def _startup_done() -> None:
    """Start-up is over: what it made is frozen out of the collector's scans, and the collector is on again."""
    global _collector_paused
    if _collector_paused:
        gc.freeze()
        gc.enable()
        _collector_paused = False


@cli.group(cls=_LazyGroup)
def data() -> None:
    """The data stage: synthetic world, dataset rendering, scoring and filtering."""


@data.lazy_command("synth", "Write procedural objects of the synthetic world as GLB + caption.txt + spec.json.")
def _data_synth_command() -> click.Command:
    @click.command("synth", context_settings={"max_content_width": 119})
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

    return data_synth


@data.lazy_command(
    "render", "Render objects (asset files, GSO folders, synthetic objects, example:NAME) for training."
)
def _data_render_command() -> click.Command:
    from fourview.data.dataset_renderer import RenderSettings
    from fourview.render.mesh_renderer import Lighting

    @click.command("render", context_settings={"max_content_width": 119})
    @click.argument("inputs", nargs=-1)
    @click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
    @click.option(
        "--objects", "objects_json", type=click.Path(dir_okay=False), help="JSON list of {name, mesh, up_axis}."
    )
    @click.option(
        "--up-axis", type=click.Choice(UP_AXES), default="y", show_default=True,
        help="Up axis of the inputs (z for Z-up scans); --objects records carry their own.",
    )  # fmt: skip
    @_dataclass_options(
        RenderSettings, "settings",
        only=("resolution", "elevation_deg", "num_random", "random_elevation_deg", "supersample", "write_depth",
              "write_normal", "seed"),
        flags={"resolution": "res", "elevation_deg": "elevation", "num_random": "random",
               "random_elevation_deg": "random-elevation", "write_depth": "depth", "write_normal": "normal"},
    )  # fmt: skip
    @_dataclass_options(Lighting, "lighting", flags={"direction": "light-dir"})
    @click.option("--workers", type=int, default=1, show_default=True, help="Local worker processes.")
    @click.option("--webdataset", "wds_pattern", help="Also write WebDataset shards, e.g. 'shards/obj-%06d.tar'.")
    @click.option(
        "--subset", type=click.Choice(["all", "train", "eval"]), default="all", show_default=True,
        help="Objects to render by the evaluation rule on their names (fourview.data.splits): train leaves the "
        "evaluation subset out.",
    )  # fmt: skip
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    def data_render(
        inputs, out_dir, objects_json, up_axis, workers, wds_pattern, subset, quiet, settings, lighting
    ) -> None:
        """Render objects (asset files, GSO folders, synthetic objects, example:NAME) for training.

        Writes DIR/NAME/{rig/*.png, grid.png, random/*.png, cameras.json}; finished objects are skipped.
        """
        from dataclasses import replace

        from fourview.atomic import check_writable
        from fourview.data.dataset_renderer import render_dataset, resolve_inputs, write_webdataset

        # Bounds of the sizes and counts (memory: the rasterizer holds (res x supersample)^2 pixels per image).
        limits = {
            "--workers": (workers, 1, 256),
            "--res": (settings.resolution, 1, 4096),
            "--supersample": (settings.supersample, 1, 8),
            "--random": (settings.num_random, 0, 10_000),
        }
        for flag, (value, low, high) in limits.items():
            if not low <= value <= high:
                raise InputError(f"{flag} must be in [{low}, {high}], got {value}")
        check_writable(out_dir)
        settings = replace(settings, lighting=lighting)
        sources = resolve_inputs(list(inputs), up_axis=up_axis, objects_json=objects_json)
        if subset != "all":
            from fourview.data.splits import is_evaluation_object

            sources = [s for s in sources if is_evaluation_object(s.name) == (subset == "eval")]
            if not sources:
                raise InputError(f"no objects of the {subset} subset among the inputs")
        done = render_dataset(sources, out_dir, settings, workers=workers, progress=not quiet)
        if wds_pattern:
            write_webdataset(done, wds_pattern)
        click.echo(f"rendered {len(done)} objects to {out_dir}")

    return data_render


@data.lazy_command("score", "Caption and score rendered objects (ROOT/NAME/rig/*.png) into a manifest.")
def _data_score_command() -> click.Command:
    # The model files are inputs, not settings: the options map one to one onto load_scorers' arguments.
    @click.command("score", context_settings={"max_content_width": 119})
    @click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option(
        "-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
        help="Manifest to write (JSONL).",
    )  # fmt: skip
    @click.option("--clip", "clip_weights", help="open_clip checkpoint file or downloaded hub folder.")
    @click.option("--clip-model", default="ViT-L-14", show_default=True, help="open_clip architecture of --clip.")
    @click.option("--aesthetic", "aesthetic_weights", help="LAION aesthetic head (.safetensors or .pth state dict).")
    @click.option("--svm", "svm_path", help="Quality SVM written by 'fourview data svm-train'.")
    @click.option(
        "--captioner", "captioner_dir", help="Local transformers captioning model for objects without captions."
    )
    @click.option("--device", default="cpu", show_default=True)
    def data_score(
        root, out_path, clip_weights, clip_model, aesthetic_weights, svm_path, captioner_dir, device
    ) -> None:
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

    return data_score


@dataclass(frozen=True)
class _FilterSettings:
    """The thresholds of 'fourview data filter' (`fourview.data.filter.drop_low_aesthetic`, then `curriculum_pass`)."""

    min_aesthetic: float = 3.5
    """Drop objects whose mean aesthetic score over the 4 rig views is below this."""
    pass_index: Literal[1, 2] = 1
    """Curriculum pass: 1 = all above --low-threshold, 2 = the best --top-fraction of those."""
    low_threshold: float | None = None
    """Pass-1 minimum of --key."""
    top_fraction: float = 0.3
    """Share of the pass-1 objects that pass 2 keeps, in (0, 1]."""
    key: Literal["aesthetic", "clip_score", "svm_score"] = "aesthetic"
    """The score to threshold and rank by (aesthetic: the mean over the 4 rig views)."""
    on_missing: Literal["raise", "keep", "drop"] = "raise"
    """Objects lacking a needed score: error out, keep them, or drop them."""


@data.lazy_command(
    "filter", "Apply the design's filters to a manifest: the aesthetic floor, then one curriculum pass."
)
def _data_filter_command() -> click.Command:
    @click.command("filter", context_settings={"max_content_width": 119})
    @click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
    @_dataclass_options(_FilterSettings, "thresholds", flags={"pass_index": "pass"})
    def data_filter(manifest, out_path, thresholds: _FilterSettings) -> None:
        """Apply the design's filters to a manifest: the aesthetic floor, then one curriculum pass."""
        from fourview.data.filter import curriculum_pass, drop_low_aesthetic
        from fourview.data.manifest import read_manifest, write_manifest

        t = thresholds
        records = read_manifest(manifest)
        kept = drop_low_aesthetic(records, t.min_aesthetic, t.on_missing)
        kept = curriculum_pass(kept, t.pass_index, t.low_threshold, t.top_fraction, t.key, t.on_missing)
        write_manifest(out_path, kept)
        click.echo(f"kept {len(kept)} of {len(records)} objects in {out_path}")

    return data_filter


@data.lazy_command("svm-train", "Train the quality SVM on CLIP features of hand-labelled good and bad objects.")
def _data_svm_train_command() -> click.Command:
    # --kernel and --C are fields of fourview.data.filter.SVMConfig, which documents them in its class docstring,
    # not as attribute docstrings, so they are declared here (the rest are inputs).
    @click.command("svm-train", context_settings={"max_content_width": 119})
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

    return data_svm_train


def _field_docs(cls) -> dict[str, str]:
    """Attribute docstrings of a dataclass and its bases (the string literal under each field), for --help."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not hasattr(klass, "__dataclass_fields__"):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _dataclass_options(
    cls,
    param: str | None = None,
    only: tuple[str, ...] | None = None,
    flags: dict[str, str] | None = None,
    required: tuple[str, ...] = (),
    defaults: dict[str, object] | None = None,
):
    """Click options for the fields of a frozen config dataclass: ``--field-name VALUE``.

    The one way this command line declares settings. Literal fields become choices (the config gets
    the Literal's own values: ``Literal[1, 2]`` gives ints), bools (and ``bool | None``) ``--x/--no-x``
    flags, ``tuple[X, ...]`` several values (repeat the option), fixed-length tuples such as
    ``tuple[float, float, float]`` one option taking that many values; defaults and help come from the
    dataclass itself (its attribute docstrings). The command receives the
    config ``cls(...)`` built from the parsed options: as its one argument when ``param`` is None,
    else as the keyword argument ``param`` (so several configs can share one command).

    Args:
        cls: the dataclass.
        param: the command's keyword for the config, or None.
        only: the fields to expose (the others keep their defaults); all when None.
        flags: option names other than the field's (``{"face_budget": "faces"}`` gives ``--faces``).
        required: fields that must be given.
        defaults: this command's defaults where they differ from the dataclass's.
    """
    import dataclasses
    import functools
    import types
    import typing

    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    fields = [f for f in dataclasses.fields(cls) if only is None or f.name in only]
    prefix = f"{param}__" if param else ""

    def decorate(command):
        @functools.wraps(command)
        def f(*args, **options):
            mine = {k[len(prefix) :]: options.pop(k) for k in list(options) if k.startswith(prefix) and (
                k[len(prefix) :] in {fld.name for fld in fields})}  # fmt: skip
            # several values (multiple=True) arrive as a list or tuple; the frozen config wants tuples
            config = cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in mine.items()})
            if param is None:
                return command(config, *args, **options)
            return command(*args, **options, **{param: config})

        for fld in reversed(fields):
            hint = hints[fld.name]
            name = (flags or {}).get(fld.name, fld.name.replace("_", "-"))
            dest = prefix + fld.name
            default = None if fld.default is dataclasses.MISSING else fld.default
            default = (defaults or {}).get(fld.name, default)
            kwargs: dict = {"help": docs.get(fld.name, ""), "required": fld.name in required}
            base = hint
            if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
                base = next(a for a in typing.get_args(hint) if a is not type(None))
            if typing.get_origin(base) is typing.Literal:
                values = {str(a): a for a in typing.get_args(base)}
                kwargs.update(type=click.Choice(list(values)), callback=lambda _c, _p, v, m=values: m.get(v, v))
                default = default if default is None else str(default)
            elif base is bool:  # bool | None: neither flag given keeps None ("leave as it is")
                f = click.option(f"--{name}/--no-{name}", dest, default=default, show_default=True,
                                 help=kwargs["help"])(f)  # fmt: skip
                continue
            elif typing.get_origin(base) is tuple and Ellipsis not in typing.get_args(base):
                kwargs["type"] = typing.get_args(base)  # --light-dir X Y Z
            elif typing.get_origin(base) is tuple:
                (inner,) = {a for a in typing.get_args(base) if a is not Ellipsis}
                literal = typing.get_origin(inner) is typing.Literal
                kwargs.update(multiple=True, type=click.Choice([str(a) for a in typing.get_args(inner)]) if literal
                              else str)  # fmt: skip
            else:
                kwargs["type"] = base if base in (int, float, str) else str
            if not kwargs["required"]:
                kwargs.update(default=default, show_default=default is not None and default != ())
            f = click.option(f"--{name}", dest, **kwargs)(f)
        return f

    return decorate


def _echo_asset(paths, out_dir, asset) -> None:
    t = asset.timings
    total = t.get("total_s", t.get("views_to_3d_s", 0.0))
    click.echo(
        f"wrote {', '.join(p.name for p in paths)} to {out_dir} in {total:.1f} s "
        f"({asset.num_faces} faces), peak memory {asset.peak_memory_mb:.0f} MB"
    )


def _cut_out_photos(posed):
    """Opaque photos of the four rig views (not renders on white) with their backgrounds removed, and their mattes.

    Views with alpha, and views whose borders are all near-white, are returned as they are, with no mattes.
    """
    from dataclasses import replace

    import numpy as np

    from fourview.matting import needs_background_removal, remove_background

    if len(posed.names) != 4 or not needs_background_removal(posed.images):
        return posed, []
    mattes = []
    for name, image in zip(posed.names, posed.images):
        try:
            mattes.append(remove_background(image[..., :3]))
        except InputError as e:
            raise InputError(f"view {name} is fully opaque and its background could not be removed: {e}") from None
    return replace(posed, images=np.stack([m.rgba for m in mattes])), mattes


def _record_mattes(asset, names, mattes) -> None:
    """The rig views' masks as DIR/mask.png, a 2x2 grid in the layout of views.png, and their methods in meta.json."""
    import numpy as np

    masks = [m.mask for m in mattes]
    asset.extra_images["mask.png"] = np.block([[masks[0], masks[1]], [masks[2], masks[3]]])
    asset.meta["matting"] = [{"view": n, "method": m.method, "note": m.note} for n, m in zip(names, mattes)]


def _reconstruct_command() -> click.Command:
    from fourview.asset import SaveSettings
    from fourview.pipeline import ExportSettings, FitSettings

    @click.command("reconstruct", context_settings={"max_content_width": 119})
    @click.argument("views", nargs=-1, required=True)
    @click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
    @click.option(  # default: fourview.cameras.DEFAULT_ELEVATION_DEG (tests/test_cli.py checks they agree)
        "--elevation", type=float, default=20.0, show_default=True, help="Elevation of the input rig, degrees."
    )
    @click.option(
        "--recon", default=None,
        help="Reconstructor: 'demo' (default), a folder or a hub id; with --optimize, refine its prediction.",
    )  # fmt: skip
    @click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:N or mps.")
    @click.option("--optimize", is_flag=True, help="Fit a field to the views per object (no trained weights needed).")
    @click.option(
        "--cameras", "cameras_json", type=click.Path(dir_okay=False, path_type=Path),
        help="With --optimize: cameras.json (dataset renderer format) describing VIEWS, any number of them.",
    )  # fmt: skip
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @_dataclass_options(FitSettings, "fit", flags={"resolution": "res"})
    @_dataclass_options(ExportSettings, "export", flags={"face_budget": "faces", "grid_resolution": "grid"})
    @_dataclass_options(SaveSettings, "save", flags={"formats": "format", "turntable_frames": "turntable"})
    def reconstruct(
        views, out_dir, elevation, recon, device, optimize, cameras_json, quiet, fit, export, save
    ) -> None:
        """Four views (az 0, 90, 180, 270) or one 2x2 grid image -> DIR/model.glb, views.png, meta.json.

        With --optimize, a triplane SDF + colour field is fitted to the views (or, with --recon, the
        reconstructor's prediction is refined on them); --cameras takes any number of posed views.
        For photos of real objects, --optimize --recon demo (the refinement) is the recommended path:
        about ten seconds more than the prediction alone, and closer to the object (docs/usage.md).
        """
        from dataclasses import asdict

        from fourview.atomic import check_output_folder
        from fourview.pipeline import FourViewPipeline, check_device
        from fourview.views import PosedViews

        if not optimize and (cameras_json is not None or fit != FitSettings()):
            raise InputError("--cameras, --steps, --res and --round-bottom need --optimize")
        if optimize and recon is not None and cameras_json is not None:
            raise InputError("--recon refines the prediction for the 4 rig views; it does not take --cameras")
        method = "feedforward" if not optimize else ("refine" if recon is not None else "optimize")
        fit_config = fit.refine_config() if method == "refine" else fit.optimize_config()
        check_output_folder(out_dir, save.overwrite)
        check_device(device)
        if cameras_json is not None:
            posed = PosedViews.from_cameras_json(list(views), cameras_json)
        else:
            posed = PosedViews.read(list(views), elevation)
        posed, mattes = _cut_out_photos(posed) if cameras_json is None else (posed, [])
        posed.check_objects()
        import time

        t0 = time.perf_counter()
        pipe = FourViewPipeline.from_pretrained(
            mvgen=None, recon=None if method == "optimize" else (recon or "demo"), device=device
        )
        load_s = time.perf_counter() - t0
        _startup_done()
        asset = pipe.views_to_3d(posed, method, export, fit_config, progress=not quiet,
                                 meta={"inputs": [str(v) for v in views]})  # fmt: skip
        if mattes:
            _record_mattes(asset, posed.names, mattes)
        asset.timings = {"load_models_s": load_s, **asset.timings, "total_s": asset.timings["views_to_3d_s"] + load_s}
        _echo_asset(asset.save(out_dir, **asdict(save), progress=not quiet), out_dir, asset)

    return reconstruct


def _generation_options(command):
    """The options of the commands that run the generator (generate, image): models, sampling, export, saving."""
    from fourview.asset import SaveSettings
    from fourview.pipeline import ExportSettings, ModelSettings, SamplingSettings

    options = [
        _dataclass_options(ModelSettings, "models"),
        _dataclass_options(
            SamplingSettings,
            "sampling",
            flags={"guidance_scale": "guidance", "negative_prompt": "negative", "elevation_deg": "elevation"},
        ),
        _dataclass_options(ExportSettings, "export", flags={"face_budget": "faces", "grid_resolution": "grid"}),
        _dataclass_options(
            SaveSettings,
            "save",
            flags={"formats": "format", "turntable_frames": "turntable"},
            defaults={"turntable_frames": 24, "preview_resolution": 192},
        ),
    ]
    for option in reversed(options):  # as if stacked as decorators, in this order
        command = option(command)
    return command


def _generate_command() -> click.Command:
    @click.command("generate", context_settings={"max_content_width": 119})
    @click.argument("prompt")
    @click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
    @click.option(
        "--image", type=click.Path(dir_okay=False, path_type=Path),
        help="Photo for the front view (RGBA, or RGB on a plain backdrop).",
    )  # fmt: skip
    @_generation_options
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    def generate(prompt, out_dir, image, quiet, models, sampling, export, save) -> None:
        """Text (or --image PHOTO) -> DIR/model.glb, views.png, turntable.gif, meta.json.

        The shipped demo generator knows a small synthetic world (20 object classes) and 217 real
        scanned objects (738 words); a prompt word outside them gets a one-line warning. For
        open-ended prompts pass real SDXL-architecture weights with --mvgen.
        """

        from fourview.atomic import check_output_folder
        from fourview.mvgen.prompt_check import precheck_prompt
        from fourview.pipeline import read_photo

        if not prompt.strip():
            raise InputError("prompt is empty; describe the object, e.g. 'a red mug'")
        if models.mvgen is None or models.recon is None:
            raise InputError("generate needs a generator (--mvgen) and a reconstructor (--recon)")
        precheck_prompt(prompt, models.mvgen)  # its length, from the tokenizers alone
        check_output_folder(out_dir, save.overwrite)
        photo = None if image is None else read_photo(image)

        def make(pipe):
            if photo is None:
                return pipe.text_to_3d(prompt, sampling, export)
            asset = pipe.image_to_3d(photo, prompt, sampling, export)
            asset.meta["image"] = str(image)
            return asset

        _load_make_save(models, make, out_dir, save, quiet)

    return generate


def _image_command() -> click.Command:
    from fourview.matting import MattingConfig
    from fourview.mvgen.image_prompt import PHOTO_PROMPT

    @click.command("image", context_settings={"max_content_width": 119})
    @click.argument("photo", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
    @click.option(
        "--prompt", default=PHOTO_PROMPT, show_default=True,
        help="What the photo shows (e.g. 'a red mug'): it steers the sides the photo does not show. The default is "
             "neutral: the photo alone says what the object is.",
    )  # fmt: skip
    @_dataclass_options(MattingConfig, "matting", only=("method",), flags={"method": "matting"})
    @_generation_options
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    def image(photo, out_dir, prompt, quiet, matting, models, sampling, export, save) -> None:
        """One photo -> DIR/model.glb, views.png, mask.png, photo_rgba.png, turntable.gif, meta.json.

        The background is removed first: the photo's own alpha when it has one, else a rembg model
        when one is installed with its model file on disk, else GrabCut seeded from the photo's border
        (a product shot on a plain or gradient backdrop); mask.png and photo_rgba.png show what was
        kept. The object is recentred in the front view and the generator draws the other three.
        The shipped demo generator knows only a small synthetic world and the real objects it was
        trained on (a warning says so): for real photos pass real SDXL-architecture weights with
        --mvgen.
        """

        from fourview.atomic import check_output_folder
        from fourview.images import MIN_PHOTO_SIDE, read_rgba
        from fourview.matting import remove_background
        from fourview.mvgen.prompt_check import precheck_prompt

        if not prompt.strip():
            raise InputError("--prompt is empty; describe the object, e.g. 'a red mug', or leave the option out")
        if models.mvgen is None or models.recon is None:
            raise InputError("image needs a generator (--mvgen) and a reconstructor (--recon)")
        precheck_prompt(prompt, models.mvgen)
        check_output_folder(out_dir, save.overwrite)
        matte = remove_background(read_rgba(photo, MIN_PHOTO_SIDE), matting)

        def make(pipe):
            asset = pipe.image_to_3d(matte, prompt, sampling, export)  # the matte made above, before loading
            asset.meta["image"] = str(photo)
            return asset

        _load_make_save(models, make, out_dir, save, quiet)

    return image


def _export_command() -> click.Command:
    from fourview.asset import SaveSettings
    from fourview.pipeline import ExportSettings

    @click.command("export", context_settings={"max_content_width": 119})
    @click.argument("reconstruction", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option(
        "-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
        help="Output file: .glb, .obj or .ply; a sidecar OUT.meta.json is written beside it.",
    )  # fmt: skip
    @click.option(
        "--preset", type=click.Choice(["demo", "full"]), default="demo", show_default=True,
        help="Base export settings; the options below override them.",
    )  # fmt: skip
    @click.option(
        "--turntable", type=click.Choice(["none", "gif", "mp4", "both"]), default="none", show_default=True,
        help="Also write a turntable and a contact sheet of the rig views beside the output.",
    )  # fmt: skip
    @_dataclass_options(ExportSettings, "export", flags={"face_budget": "faces", "grid_resolution": "grid"})
    @_dataclass_options(SaveSettings, "save", only=("formats",), flags={"formats": "format"})
    def export(reconstruction, out_path, preset, turntable, export, save) -> None:
        """Re-export a saved reconstruction (a 'fourview reconstruct' folder) without running the models."""
        import json
        import time
        from dataclasses import asdict, replace

        import torch

        from fourview.atomic import check_output_file, write_text_atomic
        from fourview.export.exporter import export_field
        from fourview.export.presets import export_preset, reexport_config
        from fourview.export.preview import write_previews
        from fourview.meshio import write_mesh_files
        from fourview.recon.saved_field import load_field, load_field_config, load_field_metadata, load_saved_views

        check_output_file(out_path)
        overrides = export.overrides()
        base = replace(export_preset(preset), **overrides)
        cfg = reexport_config(load_field_config(reconstruction), load_field_metadata(reconstruction), base, overrides)
        field_ = load_field(reconstruction)
        views = load_saved_views(reconstruction) if export.project_views else None  # what reconstruct projected
        paths = [out_path, *(out_path.with_suffix(f".{fmt}") for fmt in save.formats)]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            result = export_field(field_, cfg, views=views)
        t0 = time.perf_counter()
        written = write_mesh_files(result.mesh, paths)
        timings = {f"export_{k}": v for k, v in result.timings.items()}
        timings["export_write"] = time.perf_counter() - t0
        if turntable != "none":
            t0 = time.perf_counter()
            formats_ = ("gif", "mp4") if turntable == "both" else (turntable,)
            write_previews(result.mesh, out_path.parent, formats=formats_)
            timings["previews_s"] = time.perf_counter() - t0
        meta = {
            "source": str(reconstruction),
            "files": [str(p) for p in written],
            "export": asdict(cfg),
            "project_views": views is not None,
            "mesh": result.mesh.summary(),
            "timings_s": timings,
        }
        write_text_atomic(out_path.with_name(out_path.name + ".meta.json"), json.dumps(meta, indent=1) + "\n")
        click.echo(f"wrote {', '.join(map(str, written))}: {result.num_faces} faces, texture {result.texture_size}")

    return export


def _batch_command() -> click.Command:
    from fourview.asset import SaveSettings
    from fourview.pipeline import ExportSettings, ModelSettings, SamplingSettings

    @click.command("batch", context_settings={"max_content_width": 119})
    @click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
    @click.option(
        "-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
        help="Output folder: DIR/NAME/ per item and DIR/results.jsonl; a re-run resumes in it.",
    )  # fmt: skip
    @click.option("--retry-failed", is_flag=True, help="Run the items that failed in an earlier run again.")
    @click.option(
        "--merge", is_flag=True,
        help="Merge every shard's results into DIR/results.jsonl (without MANIFEST: only that).",
    )  # fmt: skip
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @_dataclass_options(ModelSettings, "models")
    @_dataclass_options(
        SamplingSettings,
        "sampling",
        flags={"guidance_scale": "guidance", "negative_prompt": "negative", "elevation_deg": "elevation"},
    )
    @_dataclass_options(ExportSettings, "export", flags={"face_budget": "faces", "grid_resolution": "grid"})
    @_dataclass_options(
        SaveSettings,
        "save",
        only=("formats", "turntable_frames", "preview_resolution"),
        flags={"formats": "format", "turntable_frames": "turntable"},
        defaults={"turntable_frames": 24, "preview_resolution": 192},
    )
    def batch(manifest, out_dir, retry_failed, merge, quiet, models, sampling, export, save) -> int:
        """Many items, models loaded once: MANIFEST -> DIR/NAME/ per item + DIR/results.jsonl.

        MANIFEST: JSON lines (.jsonl), CSV with a header (.csv) or text (one prompt per line). Keys:
        prompt, image (+ prompt), views (4 paths or a grid), name, and per-item seed, steps, guidance,
        negative, candidates, elevation, method, faces, texture_size. An item without a seed uses
        --seed plus its index. Before any model loads, every item left to run is checked (photos and
        views readable and within the limits, prompts within the text encoders' tokens): a bad one
        refuses the whole batch (exit status 2, nothing written). Finished items are skipped on a
        re-run; exit status 1 if any item failed. Sharded by RANK/WORLD_SIZE (torchrun, Accelerate)
        or SLURM_PROCID/SLURM_NTASKS: shard r takes items i % W == r into
        DIR/results.rankR-of-W.jsonl; rank 0 merges at its end.
        """
        from fourview.batch import merge_results, read_manifest, run_batch, shard_device
        from fourview.data.dataset_renderer import shard_from_env
        from fourview.pipeline import check_device

        if manifest is None:
            if not merge:
                raise InputError("give a MANIFEST (JSON lines, CSV or text), or --merge to merge DIR's shard results")
            click.echo(f"merged the results into {merge_results(out_dir)}")
            return 0
        items = read_manifest(manifest, sampling, export)
        rank, world_size = shard_from_env()
        check_device(shard_device(models.device, world_size))
        if any(item.kind != "views" for item in items):
            _quiet_library_progress_bars()
        _startup_done()  # the imports are done; the models load in run_batch, only if any item is left to run
        s = run_batch(items, out_dir, models, save, rank=rank, world_size=world_size, retry_failed=retry_failed,
                      progress=not quiet)  # fmt: skip
        merged = s.merged or (merge_results(out_dir) if merge else None)
        shard = "" if world_size == 1 else f"shard {rank}/{world_size}: "
        click.echo(
            f"{shard}{s.items} items: {s.done} made, {s.skipped} finished before, {s.failed} failed; "
            f"results in {merged or s.results}"
        )
        return 1 if s.failed else 0

    return batch


def _load_make_save(models, make, out_dir: Path, save, quiet: bool) -> None:
    """Load the models once, ``make(pipe)`` the asset, save it and say what was written, with the load time."""
    import time
    from dataclasses import asdict

    from fourview.pipeline import FourViewPipeline

    _quiet_library_progress_bars()
    t0 = time.perf_counter()
    pipe = FourViewPipeline.from_pretrained(**asdict(models), progress=not quiet)
    load_s = time.perf_counter() - t0
    _startup_done()
    asset = make(pipe)
    asset.timings = {"load_models_s": load_s, **asset.timings, "total_s": asset.timings["total_s"] + load_s}
    _echo_asset(asset.save(out_dir, **asdict(save), progress=not quiet), out_dir, asset)


def _quiet_library_progress_bars() -> None:
    """diffusers' and transformers' loading bars would interleave with ours (the sampling bar is ours, named)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


@cli.group(cls=_LazyGroup)
def train() -> None:
    """Training of the two stages (HF Accelerate: run under `accelerate launch` for several GPUs/nodes)."""


@train.lazy_command("recon", "Train the triplane reconstructor (stage A volume, stage B DMTet).")
def _train_recon_command() -> click.Command:
    from fourview.recon.train import TrainConfig

    @click.command("recon", context_settings={"max_content_width": 119})
    @_dataclass_options(TrainConfig, required=("data", "out"))
    def train_recon(config: TrainConfig) -> None:
        """Train the triplane reconstructor on the dataset renderer's output (stage A volume, stage B DMTet)."""
        from fourview.atomic import check_writable
        from fourview.recon.dataset import find_objects
        from fourview.recon.train import train as run

        check_writable(config.out)
        # the data before the run makes its output folder: a missing or empty --data leaves nothing behind
        for folder in (config.data, config.val_data):
            if folder is not None:
                find_objects(folder)
        result = run(config)
        val = "" if result.val is None else f"; validation {result.val}"
        click.echo(f"trained {result.steps} steps in {result.time_s:.0f} s into {result.out_dir}{val}")

    return train_recon


@train.lazy_command("mvgen", "Train the multi-view generator (SDXL 2x2 grids).")
def _train_mvgen_command() -> click.Command:
    from fourview.mvgen.train import MVGenTrainConfig

    @click.command("mvgen", context_settings={"max_content_width": 119})
    @_dataclass_options(MVGenTrainConfig, required=("data", "out"))
    def train_mvgen(config: MVGenTrainConfig) -> None:
        """Train the multi-view generator (SDXL 2x2 grids): LoRA or full fine-tune of --init, or --from-scratch."""
        from fourview.atomic import check_writable
        from fourview.mvgen.train import train as run

        check_writable(config.out)
        _check_grid_data(config.data, config.mix_2d)
        result = run(config)
        click.echo(
            f"trained {result.steps} steps in {result.time_s:.0f} s into {result.out_dir}; fixed-batch loss "
            f"{result.eval_loss_start:.4f} -> {result.eval_loss_end:.4f}; weights {result.weights}"
        )

    return train_mvgen


def _check_grid_data(data: str, mix_2d: str | None = None) -> None:
    """The generator's training data, before the run makes its output folder or loads a model.

    Raises:
        InputError: a missing folder, or one without an object folder of grid.png and caption.txt
            (``mix_2d``: without an image + .txt caption pair).
    """
    from fourview.mvgen.dataset import grid_dataset, pairs_2d

    grid_dataset(data, resolution=16)  # indexing only: the run's side is known once its models are built
    if mix_2d is not None:
        pairs_2d(mix_2d, resolution=16)


@train.lazy_command("mvgen-lcm", "Distil the generator into a few-step (LCM-LoRA) student.")
def _train_mvgen_lcm_command() -> click.Command:
    from fourview.mvgen.distill import LCMDistillConfig

    @click.command("mvgen-lcm", context_settings={"max_content_width": 119})
    @_dataclass_options(LCMDistillConfig, required=("teacher", "data", "out"))
    def train_mvgen_lcm(config: LCMDistillConfig) -> None:
        """Distil the generator into a few-step student (LCM-LoRA; sample it with LCMScheduler, ~4 steps,
        guidance 1)."""
        from fourview.mvgen.distill import distill_lcm

        _check_grid_data(config.data)
        result = distill_lcm(config)
        click.echo(
            f"distilled {result.steps} steps in {result.time_s:.0f} s into {result.out_dir}; fixed-batch loss "
            f"{result.eval_loss_start:.5f} -> {result.eval_loss_end:.5f}; student {result.weights}"
        )

    return train_mvgen_lcm


cli.lazy_command("generate", "Text (or --image PHOTO) -> DIR/model.glb, views.png, turntable.gif, meta.json.")(
    _generate_command
)
cli.lazy_command("image", "One photo -> background removed (DIR/mask.png) -> DIR/model.glb, views.png, meta.json.")(
    _image_command
)
cli.lazy_command("reconstruct", "Four views or one 2x2 grid image -> DIR/model.glb, views.png, meta.json.")(
    _reconstruct_command
)
cli.lazy_command("export", "Re-export a saved reconstruction without running the models.")(_export_command)
cli.lazy_command("batch", "A manifest of prompts, photos or views -> DIR/NAME/ per item, resumable.")(_batch_command)


def _serve_command() -> click.Command:
    from fourview.pipeline import ModelSettings

    try:
        from fourview.server import ServerConfig
    except ImportError as e:  # FastAPI and uvicorn come with the [server] extra
        raise InputError(f"fourview serve needs the server extra: pip install 'fourview[server]' ({e})") from None

    @click.command("serve", context_settings={"max_content_width": 119})
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; not loopback needs "
                  "--api-key (or --insecure).")  # fmt: skip
    @click.option(
        "--api-key", envvar="FOURVIEW_API_KEY", show_envvar=True,
        help="Key every API request must carry in the X-API-Key header (the environment keeps it out of ps).",
    )  # fmt: skip
    @click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without --api-key: anyone who "
                  "reaches the port can run jobs and read them.")  # fmt: skip
    @_dataclass_options(
        ServerConfig, "server", flags={"workers": "worker"},
        only=("data", "port", "workers", "max_upload_mb", "max_queued", "turntable_frames", "preview_resolution"),
    )  # fmt: skip
    @_dataclass_options(ModelSettings, "models")
    def serve(host, api_key, insecure, server, models) -> None:
        """A local web app and REST API: the page at http://HOST:PORT/, the API's document at /docs.

        Jobs (text, one photo or four photos) run one at a time per device with the models loaded
        once, and are kept in --data: after a restart finished jobs are listed again, queued ones run
        again, and those that were running are reported failed ('lost at server restart').
        """
        import os
        from dataclasses import replace

        import uvicorn

        from fourview.pipeline import check_device
        from fourview.pretrained import resolve_weights
        from fourview.server import create_app

        server = replace(server, host=host, api_key=api_key, insecure=insecure, models=models)
        for device in server.devices:
            check_device(device)
        for name, kind in ((models.mvgen, "mvgen"), (models.student, "student"), (models.recon, "recon")):
            if name is not None:
                resolve_weights(name, kind)
        try:
            server.data.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create the data folder {server.data}: {e.strerror or e}") from None
        if not os.access(server.data, os.W_OK | os.X_OK):
            raise InputError(f"cannot write the data folder {server.data}")
        _quiet_library_progress_bars()
        address = f"[{host}]" if ":" in host else host
        click.echo(f"fourview serve: http://{address}:{server.port}/ (API: /docs), jobs in {server.data}", err=True)
        uvicorn.run(create_app(server), host=host, port=server.port, log_level="info")

    return serve


cli.lazy_command("serve", "A local web app and REST API (FastAPI): jobs from text or photos, kept on disk.")(
    _serve_command
)


def _bench_command() -> click.Group:
    @click.group("bench", cls=_LazyGroup)
    def bench() -> None:
        """Benchmarks measured by one written protocol (docs/benchmark-protocol.md)."""

    @bench.lazy_command("gso", "Google Scanned Objects: renders in, the reconstruction scored against the scan.")
    def _gso_command() -> click.Command:
        from fourview.evaluation.gso_benchmark import GsoBenchConfig
        from fourview.pipeline import ExportSettings, FitSettings

        @click.command("gso", context_settings={"max_content_width": 119})
        @click.option(
            "--root", type=click.Path(file_okay=False, path_type=Path), required=True,
            help="Folder of GSO-layout objects (NAME/meshes/model.obj, texture in NAME/materials/textures/).",
        )  # fmt: skip
        @click.option(
            "-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
            help="Output folder; a rerun resumes in it (finished objects are skipped).",
        )  # fmt: skip
        @click.option("--quiet", is_flag=True, help="No progress bars.")
        @_dataclass_options(
            GsoBenchConfig, "config",
            only=("objects", "subset", "mode", "method", "input_resolution", "albedo", "recon", "mvgen", "device",
                  "max_objects", "seed", "hull_resolution"),
            flags={"input_resolution": "input-res", "hull_resolution": "hull-res"},
        )  # fmt: skip
        @_dataclass_options(FitSettings, "fit", flags={"resolution": "res"})
        @_dataclass_options(
            ExportSettings, "export", flags={"face_budget": "faces", "grid_resolution": "grid", "method": "extraction"}
        )
        def gso(root, out_dir, quiet, config, fit, export) -> None:
            """Reconstruct GSO scans from their renders (--mode, or --method hull) and score them against the scans:
            PSNR/SSIM/LPIPS over 24 novel views, Chamfer distance and F-score in the object frame and aligned, volume
            IoU -> OUT/results.jsonl, results.csv, results.md, summary.json."""
            import time

            from fourview.evaluation.gso_benchmark import run_gso_benchmark
            from fourview.pipeline import FourViewPipeline, SamplingSettings, check_device

            if config.mode not in ("optimize", "refine") and fit != FitSettings():
                raise InputError("--steps, --res and --round-bottom set the fits of --mode optimize and refine")
            fit_config = None
            if config.mode in ("optimize", "refine"):
                fit_config = fit.optimize_config() if config.mode == "optimize" else fit.refine_config()
            check_device(config.device)
            models = config.pipeline_models()
            t0 = time.perf_counter()
            pipe = None if models is None else FourViewPipeline.from_pretrained(**models, device=config.device)
            load_s = time.perf_counter() - t0
            sampling = SamplingSettings(seed=config.seed) if config.mode == "image" else None
            summary = run_gso_benchmark(config, root, out_dir, pipe, export, fit_config, sampling, progress=not quiet)
            means = summary.means
            headline = ("psnr_128", "psnr_512", "chamfer", "aligned_chamfer", "fscore@0.1", "volume_iou")
            shown = [f"{k} {means[k]:.4g}" for k in headline if means.get(k) is not None]
            click.echo(
                f"{summary.computed} scored now, {summary.skipped} finished before (models loaded in {load_s:.1f} s); "
                f"{len(summary.results)} of {summary.selected} in {out_dir}: {', '.join(shown)}"
            )
            click.echo(f"wrote {', '.join(p.name for p in summary.files)}")

        return gso

    @bench.lazy_command("text", "Text-to-3D: generate each prompt of a set, score CLIP, adherence, time, memory.")
    def _text_command() -> click.Command:
        from fourview.evaluation.text_benchmark import TextBenchConfig
        from fourview.pipeline import ExportSettings, ModelSettings, SamplingSettings

        @click.command("text", context_settings={"max_content_width": 119})
        @click.option(
            "-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
            help="Output folder: OUT/assets/NAME/ per prompt and the tables; a rerun resumes in it.",
        )  # fmt: skip
        @click.option("--quiet", is_flag=True, help="No progress bars.")
        @_dataclass_options(TextBenchConfig, "config", required=("prompts",), flags={"turntable_frames": "turntable"})
        @_dataclass_options(ModelSettings, "models")
        @_dataclass_options(
            SamplingSettings, "sampling",
            flags={"guidance_scale": "guidance", "negative_prompt": "negative", "elevation_deg": "elevation"},
        )  # fmt: skip
        @_dataclass_options(ExportSettings, "export", flags={"face_budget": "faces", "grid_resolution": "grid"})
        def text(out_dir, quiet, config, models, sampling, export) -> None:
            """Generate every prompt of a set (--prompts FILE or a shipped set) and score what was made: CLIP score
            and R-precision (with --clip weights; else reported unavailable), the synthetic world's colour/shape
            adherence, time and peak memory per asset -> OUT/results.jsonl, results.md, summary.json."""
            import time
            from dataclasses import asdict

            from fourview.evaluation.clip_metrics import load_clip
            from fourview.evaluation.text_benchmark import check_output, run_text_benchmark
            from fourview.pipeline import FourViewPipeline, check_device
            from fourview.pretrained import resolve_weights

            if models.mvgen is None or models.recon is None:
                raise InputError("bench text needs a generator (--mvgen) and a reconstructor (--recon)")
            check_device(models.device)
            for name, kind in ((models.mvgen, "mvgen"), (models.student, "student"), (models.recon, "recon")):
                if name is not None:
                    resolve_weights(name, kind)
            check_output(config, out_dir, asdict(models), sampling, export)
            _quiet_library_progress_bars()
            clip = None if config.clip is None else load_clip(config.clip, config.clip_model, models.device)
            t0 = time.perf_counter()
            pipe = FourViewPipeline.from_pretrained(**asdict(models))
            load_s = time.perf_counter() - t0
            s = run_text_benchmark(config, out_dir, pipe, clip, sampling, export, progress=not quiet)
            shown = [f"{k} {v:.4g}" for k, v in s.means.items() if v is not None]
            click.echo(
                f"{s.computed} generated now, {s.skipped} finished before (models loaded in {load_s:.1f} s); "
                f"{len(s.results)} of {s.selected} in {out_dir}: {', '.join(shown) or 'no scores'}; CLIP: {s.clip}"
            )
            click.echo(f"wrote {', '.join(p.name for p in s.files)}")

        return text

    return bench


cli.lazy_command(
    "bench", "Benchmarks: 'bench gso' scores reconstructions of scanned objects, 'bench text' text-to-3D."
)(_bench_command)


class _DefaultCommandGroup(click.Group):
    """A group whose arguments go to its ``default`` command when the first is not a command's name."""

    default = "build"

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default, *args]
        return super().resolve_command(ctx, args)


def _sbs_command() -> click.Group:
    # fourview.evaluation.sbs needs no torch; each command imports its module when it runs.
    @click.group("sbs", cls=_DefaultCommandGroup, context_settings={"max_content_width": 119})
    def sbs() -> None:
        """Side-by-side studies: people compare two systems' turntables of the same prompts.

        'fourview sbs A_DIR B_DIR -o STUDY' (the same as 'sbs build') writes the study's page;
        'sbs serve STUDY' serves it and keeps the votes posted to it; 'sbs report STUDY [VOTES...]'
        gives the win rates of A over B with 95% confidence intervals.
        """

    @sbs.command("build", context_settings={"max_content_width": 119})
    @click.argument("a_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.argument("b_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                  help="The study folder (index.html, media/, study.json).")  # fmt: skip
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the pairs' order and sides.")
    @click.option("--title", default="Which 3D object is better?", show_default=True, help="The page's title.")
    @click.option("--overwrite", is_flag=True, help="Replace a non-empty study folder that holds no votes.")
    def sbs_build(a_dir, b_dir, out_dir, seed, title, overwrite) -> None:
        """Pair the assets of A_DIR and B_DIR by name (bench text or batch outputs: meta.json with the prompt and a
        turntable) into a self-contained page: per pair, the two turntables in a seeded random left/right order
        and two questions. Open STUDY/index.html (votes are downloaded as JSON) or run 'fourview sbs serve'."""
        from fourview.evaluation.sbs import build_study

        study = build_study(a_dir, b_dir, out_dir, seed, title, overwrite)
        unpaired = f"; left out, without a partner: {len(study.only_a)} of A, {len(study.only_b)} of B" if (
            study.only_a or study.only_b) else ""  # fmt: skip
        click.echo(f"wrote a study of {study.trials} pairs to {out_dir}{unpaired}: open {out_dir / 'index.html'} or "
                   f"run 'fourview sbs serve {out_dir}'")  # fmt: skip

    @sbs.command("serve", context_settings={"max_content_width": 119})
    @click.argument("study_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free one).")
    def sbs_serve(study_dir, host, port) -> None:
        """Serve a study's page; the votes participants submit are kept in STUDY/votes/ (one file each)."""
        from fourview.evaluation.sbs import make_server

        server = make_server(study_dir, host, port)
        address = f"[{host}]" if ":" in host else host
        click.echo(f"fourview sbs serve: http://{address}:{server.server_address[1]}/ (votes in {study_dir / 'votes'}"
                   "; Ctrl-C stops)", err=True)  # fmt: skip
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

    @sbs.command("report", context_settings={"max_content_width": 119})
    @click.argument("study_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.argument("votes", nargs=-1, type=click.Path(exists=True, path_type=Path))
    @click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
                  help="Also write the report as JSON here.")  # fmt: skip
    def sbs_report(study_dir, votes, json_path) -> None:
        """Win rates of A over B per question with 95% Wilson intervals, from VOTES (downloaded vote files or
        folders of them) or, without, from STUDY/votes/. One answer per participant, pair and question counts."""
        import json
        from dataclasses import asdict

        from fourview.atomic import write_text_atomic
        from fourview.evaluation.sbs import report_markdown, study_report

        report = study_report(study_dir, list(votes))
        click.echo(report_markdown(report), nl=False)
        if json_path is not None:
            write_text_atomic(json_path, json.dumps(asdict(report), indent=1) + "\n")

    return sbs


cli.lazy_command("sbs", "Side-by-side studies: a page comparing two systems' turntables, and its win rates.")(
    _sbs_command
)


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
    """Entry point: run the command, turning user errors into one line on stderr and exit status 2.

    On the process's own command line (``argv`` None) the garbage collector is off during start-up
    (`_pause_collector`) and the process ends without tearing its modules down (`_exit_now`); a
    caller's process keeps its collector and its interpreter as they are.
    """
    if argv is not None:
        _run(argv)
    _pause_collector()
    try:
        _run(None)
    except SystemExit as e:
        _exit_now(e.code)


def _run(argv: list[str] | None) -> NoReturn:
    """Run the command; ends in `SystemExit` with the command's exit status."""
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
    finally:
        _startup_done()  # a command that stopped before its models loaded
    sys.exit(rv if isinstance(rv, int) else 0)


def _exit_now(code: int | str | None) -> NoReturn:
    """End this process with ``code`` (as `SystemExit` reads it) without tearing its modules down.

    The exit handlers run and the streams are flushed, as at a normal exit; what is skipped is
    freeing the modules and objects one by one, most of a second after a command that loaded torch
    and diffusers (docs/benchmarks.md). While threads of the command still run, the process ends as
    usual (after them).
    """
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging's flush, multiprocessing's clean-up, finalizers: what an exit runs
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: nothing left to flush
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
