"""Run every speed and quality benchmark, then rewrite the generated tables of docs/benchmarks.md.

Each benchmark of `BENCHMARKS` runs as its own process (the scripts of this folder, and the
protocols of `fourview bench gso` / `fourview bench text`), with ``--threads`` threads
(``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``NUMBA_NUM_THREADS``, and the script's own
``--threads`` where it has one). Its numbers are read from the JSON it writes (or prints), and
its table in docs/benchmarks.md, the text between

    <!-- run_all:NAME begin -->
    <!-- run_all:NAME end -->

is replaced by a line saying when, on which machine (``uptime``'s load average before and after,
CPU count, threads, torch) and with which command, and a table of the numbers. A benchmark whose
markers are missing gets a section appended at the end of the page; text outside the markers is
never touched. A benchmark that fails, or whose prerequisite is missing (CUDA, ``../shared/data``),
leaves its table as it was and is reported; the script then exits with status 1.

``--quick`` appends each benchmark's small settings to its command (minutes for everything
instead of hours; the tables say ``--quick``). Held-out synthetic objects rendered by the dataset
renderer, which `bench_recon.py`, `bench_recon_adherence.py` and `bench_vae_colours.py` read, are
made once in the work folder (`PREPARE`). The `fourview bench` protocols resume in the work
folder: ``--fresh`` starts them over.

    python benchmarks/run_all.py --list
    python benchmarks/run_all.py --quick                      # everything, small (minutes)
    python benchmarks/run_all.py --only export raster          # two, full size
    python benchmarks/run_all.py --quick --no-docs --json out/run_all.json
    python benchmarks/run_all.py --only gso_hull gso_views gso_optimize gso_refine --threads 1 --shards 2

Not collected by pytest (tests/evaluation/test_run_all.py runs it on fake benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from fourview.atomic import write_text_atomic

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "benchmarks.md"
SHARED = REPO.parent / "shared" / "data"
WEIGHTS = REPO / "src" / "fourview" / "weights"
SECTION_HEADING = "## Generated tables (`benchmarks/run_all.py`)"
"""The heading above the sections `rewrite_section` appends."""

Table = tuple[list[str], list[list[str]]]
"""A Markdown table: the header's cells, then the rows' cells."""


@dataclass(frozen=True)
class Benchmark:
    """One benchmark as `run_all` runs it.

    Attributes:
        name: the name of its markers and of ``--only``.
        kind: ``speed`` or ``quality``.
        what: one line for ``--list`` and an appended section's heading.
        command: the full run; ``{python}``, ``{bench}`` (this folder), ``{json}`` (the file its numbers go to),
            ``{out}`` (its own folder in the work folder), ``{work}``, ``{shared}``, ``{weights}`` and ``{threads}``
            are filled in.
        quick: arguments appended with ``--quick`` (the last of a repeated option wins in argparse and click).
        result: where the numbers are: ``json`` (the ``{json}`` file), ``stdout`` (the last JSON object printed),
            ``summary`` (``{out}/summary.json``, the `fourview bench` protocols).
        needs: prerequisites: ``cuda``, ``shared:NAME`` (a folder of ``../shared/data``), ``rendered`` (`PREPARE`).
        table: the numbers -> the table.
        shardable: it splits its objects between processes by ``RANK``/``WORLD_SIZE`` (the `fourview bench gso`
            protocol), so ``--shards N`` runs it as N processes of ``--threads`` threads each.
    """

    name: str
    kind: str
    what: str
    command: tuple[str, ...]
    table: Callable[[dict], Table]
    quick: tuple[str, ...] = ()
    result: str = "json"
    needs: tuple[str, ...] = ()
    shardable: bool = False


@dataclass
class Outcome:
    """What one benchmark's run gave."""

    name: str
    status: str  # ok, failed, skipped
    reason: str = ""
    command: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load_before: str = ""
    load_after: str = ""
    result: dict | None = None
    shards: int = 1


def get(data: dict, path: str):
    """``data["a"]["b"]`` for the path ``a.b`` (None where a key is missing)."""
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def cell(value, fmt: str = "{:.4g}") -> str:
    """A table cell: numbers formatted, booleans as yes/no, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return fmt.format(value)
    return str(value).replace("|", "\\|")


def fields(*specs: tuple[str, str] | tuple[str, str, str]) -> Callable[[dict], Table]:
    """A two-column table (metric, value) of ``(label, path[, format])`` specs."""

    def table(data: dict) -> Table:
        return ["metric", "value"], [[label, cell(get(data, path), *fmt)] for label, path, *fmt in specs]

    return table


def per_key(path: str, label: str, columns: tuple[tuple[str, str, str], ...]) -> Callable[[dict], Table]:
    """One row per key of the dict at ``path`` (a method, a group, a sampler), one column per ``(label, key, fmt)``."""

    def table(data: dict) -> Table:
        groups = get(data, path) or {}
        rows = [[cell(name), *(cell(get(values, key), fmt) for _, key, fmt in columns)] for name, values in
                groups.items()]  # fmt: skip
        return [label, *(c[0] for c in columns)], rows

    return table


def protocol_table(keys: tuple[tuple[str, str, str], ...], count: str) -> Callable[[dict], Table]:
    """The means of a `fourview bench` summary.json, with how many objects or prompts they are over."""

    def table(data: dict) -> Table:
        rows = [[label, cell(get(data, f"means.{key}"), fmt)] for label, key, fmt in keys]
        rows.append([count, f"{cell(get(data, count + '.finished'))} of {cell(get(data, count + '.selected'))}"])
        return ["metric", "mean"], rows

    return table


GSO_KEYS = (("PSNR 128", "psnr_128", "{:.2f}"), ("SSIM 128", "ssim_128", "{:.4f}"),
            ("LPIPS 128", "lpips_128", "{:.4f}"), ("PSNR 512", "psnr_512", "{:.2f}"),
            ("SSIM 512", "ssim_512", "{:.4f}"), ("Chamfer", "chamfer", "{:.4f}"),
            ("F@0.1", "fscore@0.1", "{:.3f}"), ("Chamfer aligned", "aligned_chamfer", "{:.4f}"),
            ("F@0.1 aligned", "aligned_fscore@0.1", "{:.3f}"), ("volume IoU", "volume_iou", "{:.3f}"))  # fmt: skip
GSO = ("{python}", "-m", "fourview.cli", "bench", "gso", "--root", "{shared}/gso", "--objects", "shared_gso_eval",
       "--albedo", "--input-res", "128", "-o", "{out}", "--quiet")  # fmt: skip
"""The protocol as the issue on real scans measures it: all 67 evaluation scans, unlit 128-px input views."""
GSO_QUICK = ("--max-objects", "1")
RECON_GROUPS = (("objects", "objects", "{:d}"), ("volume PSNR", "volume_psnr", "{:.2f}"),
                ("volume SSIM", "volume_ssim", "{:.3f}"), ("mesh PSNR", "mesh_psnr", "{:.2f}"),
                ("mesh SSIM", "mesh_ssim", "{:.3f}"))  # fmt: skip
FIT_COLUMNS = (("PSNR 128", "psnr128", "{:.2f}"), ("SSIM 128", "ssim128", "{:.3f}"),
               ("PSNR 512", "psnr512", "{:.2f}"), ("Chamfer", "chamfer", "{:.4f}"), ("F@0.1", "fscore", "{:.3f}"),
               ("time s", "time_s", "{:.0f}"))  # fmt: skip
TWO_PROMPTS = ("--prompts", "a red mug", "a blue car", "--steps", "2", "--turntable", "2")

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("raster", "speed", "Rasteriser vs embree ray casting (bench_raster.py)",
              ("{python}", "{bench}/bench_raster.py", "--threads", "{threads}", "--json", "{json}"),
              fields(("faces", "summary.faces", "{:d}"), ("ours, median ms", "summary.median_ours_ms", "{:.1f}"),
                     ("embree first hit, median ms", "summary.median_peer_first_hit_ms", "{:.1f}"),
                     ("speed-up vs first hit", "summary.speedup_vs_first_hit", "{:.2f}"),
                     ("speed-up vs first hit + barycentrics", "summary.speedup_vs_first_hit_plus_bary", "{:.2f}"),
                     ("batched, ms per view", "summary.ours_batch_per_view_ms", "{:.1f}"),
                     ("min coverage IoU", "summary.min_iou", "{:.4f}")),
              quick=("--res", "128", "--repeats", "1", "--runs", "1", "--large-res", "0", "--large-faces", "0")),
    Benchmark("grid_sample", "speed", "Triplane sampling vs F.grid_sample (bench_grid_sample.py)",
              ("{python}", "{bench}/bench_grid_sample.py", "--threads", "{threads}", "--json", "{json}"),
              fields(("ours forward, s", "ours_fwd_wall_s", "{:.3f}"),
                     ("reference forward, s", "reference_fwd_wall_s", "{:.3f}"),
                     ("speed-up forward", "speedup_fwd_wall", "{:.2f}"),
                     ("ours backward, s", "ours_bwd_wall_s", "{:.3f}"),
                     ("reference backward, s", "reference_bwd_wall_s", "{:.3f}"),
                     ("speed-up backward", "speedup_bwd_wall", "{:.2f}"),
                     ("ours forward + backward peak, MB", "ours_fwd_bwd_peak_mb", "{:.0f}"),
                     ("reference forward + backward peak, MB", "reference_fwd_bwd_peak_mb", "{:.0f}"),
                     ("max relative error, forward", "max_rel_err_fwd", "{:.1e}"),
                     ("max relative error, backward", "max_rel_err_bwd", "{:.1e}")),
              quick=("--batch", "1", "--res", "64", "--points", "16384", "--repeats", "1", "--no-memory")),
    Benchmark("grid_sample_cuda", "speed", "Triplane sampling backends on a CUDA GPU (bench_grid_sample_cuda.py)",
              ("{python}", "{bench}/bench_grid_sample_cuda.py", "--json", "{json}"),
              per_key("results", "backend", (("forward ms", "forward_ms", "{:.3f}"),
                                             ("forward + backward ms", "forward_backward_ms", "{:.3f}"),
                                             ("peak MiB", "forward_backward_peak_mib", "{:.0f}"),
                                             ("vs reference", "forward_backward_ratio_to_reference", "{:.2f}"))),
              quick=("--warmup", "1", "--repeats", "3"), needs=("cuda",)),
    Benchmark("export", "speed", "Export of an analytic field to GLB, step by step (bench_export.py)",
              ("{python}", "{bench}/bench_export.py", "--threads", "{threads}"),
              fields(*((f"{step}, s", f"timings_s.{step}", "{:.2f}") for step in
                       ("extract", "cleanup", "simplify", "uv", "bake", "write", "total")),
                     ("faces", "num_faces", "{:d}"), ("GLB PSNR, worst view, dB", "psnr_glb_min_db", "{:.2f}"),
                     ("OBJ PSNR, worst view, dB", "psnr_obj_min_db", "{:.2f}")),
              quick=("--resolution", "64", "--texture", "256", "--budget", "5000", "--render", "64"),
              result="stdout"),
    Benchmark("generate", "speed", "fourview generate: time and memory per asset, cold and warm (bench_generate.py)",
              ("{python}", "{bench}/bench_generate.py", "--threads", "{threads}", "--json", "{json}"),
              fields(("median wall, cold, s", "median_wall_s", "{:.1f}"),
                     ("max wall, cold, s", "max_wall_s", "{:.1f}"),
                     ("median in process, s", "median_in_process_s", "{:.1f}"),
                     ("max peak RSS, MB", "max_peak_rss_mb", "{:.0f}"),
                     ("warm text -> GLB, median s", "warm.median_glb_s", "{:.2f}"),
                     ("warm / cold (without turntable)", "warm_over_cold_without_turntable", "{:.2f}"),
                     ("goal: cold <= 20 s", "goal_time_met"), ("goal: peak <= 3 GB", "goal_memory_met"),
                     ("goal: warm <= half of cold", "goal_warm_met")),
              quick=TWO_PROMPTS),
    Benchmark("batch", "speed", "fourview batch against one generate per item (bench_batch.py)",
              ("{python}", "{bench}/bench_batch.py", "--threads", "{threads}", "--json", "{json}"),
              fields(("items", "items", "{:d}"), ("generate, items per minute", "generate_items_per_min", "{:.2f}"),
                     ("batch, items per minute", "batch_items_per_min", "{:.2f}"), ("ratio", "ratio", "{:.2f}"),
                     ("same views", "same_views"), ("goal (>= 3x) met", "goal_met")),
              quick=TWO_PROMPTS),
    Benchmark("prompt_adherence", "quality", "Prompt adherence on held-out prompts (bench_prompt_adherence.py)",
              ("{python}", "{bench}/bench_prompt_adherence.py", "--threads", "{threads}", "--json", "{json}"),
              fields(("prompts", "count", "{:d}"), ("colour rate", "generated.colour_rate", "{:.0%}"),
                     ("shape rate", "generated.shape_rate", "{:.0%}"),
                     ("mean IoU of the prompt's shape", "generated.mean_iou_of_true_shape", "{:.3f}"),
                     ("ground truth: colour rate", "ground_truth.colour_rate", "{:.0%}"),
                     ("ground truth: shape rate", "ground_truth.shape_rate", "{:.0%}"),
                     ("time, s", "time_s", "{:.0f}")),
              quick=("--count", "2", "--steps", "2")),
    Benchmark("student", "quality", "Teacher and few-step student against steps (bench_student.py)",
              ("{python}", "{bench}/bench_student.py", "--threads", "{threads}", "--json", "{json}"),
              per_key("results", "sampler", (("steps", "steps", "{:d}"), ("colour accuracy", "colour_acc", "{:.2f}"),
                                             ("mask IoU", "mask_iou", "{:.3f}"), ("s / grid", "s_per_grid", "{:.3f}"),
                                             ("time ratio", "time_ratio", "{:.2f}"))),
              quick=("--count", "2", "--teacher-steps", "2", "--student-steps", "1")),
    Benchmark("recon", "quality", "Reconstruction of held-out synthetic objects (bench_recon.py)",
              ("{python}", "{bench}/bench_recon.py", "--data", "{work}/rendered", "--json", "{json}"),
              per_key("summary", "group", RECON_GROUPS), quick=("--objects", "2", "--views", "1"),
              needs=("rendered",)),
    Benchmark("recon_adherence", "quality", "The reconstructor alone on the adherence metric "
              "(bench_recon_adherence.py)",
              ("{python}", "{bench}/bench_recon_adherence.py", "--data", "{work}/rendered", "--threads", "{threads}",
               "--json", "{json}"),
              fields(("objects", "count", "{:d}"), ("colour rate", "colour_rate", "{:.0%}"),
                     ("shape rate", "shape_rate", "{:.0%}"),
                     ("mean IoU of the prompt's shape", "mean_iou_of_true_shape", "{:.3f}")),
              needs=("rendered",)),
    Benchmark("vae_colours", "quality", "Colours in the generator's latent space (bench_vae_colours.py)",
              ("{python}", "{bench}/bench_vae_colours.py", "--vae", "{weights}/mvgen-demo/vae", "--data",
               "{work}/rendered", "--threads", "{threads}", "--json", "{json}"),
              fields(("objects", "objects", "{:d}"), ("spread (latent std units)", "spread", "{:.3f}"),
                     ("closest pairs", "closest_pairs"), ("round trip kept", "round_trip.kept", "{:d}"),
                     ("round trip of", "round_trip.of", "{:d}")),
              needs=("rendered",)),
    Benchmark("optimize", "quality", "Per-object optimisation against the visual hull (bench_optimize.py)",
              ("{python}", "{bench}/bench_optimize.py", "--objects", "{shared}/objects", "--cache", "{out}-cache",
               "--threads", "{threads}", "--json", "{json}"),
              per_key("summary", "method", FIT_COLUMNS),
              quick=("--only", "ycb_025_mug", "--input-res", "128", "--steps", "40", "--res", "64"),
              needs=("shared:objects",)),
    Benchmark("gso_hull", "quality", "GSO protocol: the visual hull of the four views (fourview bench gso)",
              (*GSO, "--method", "hull"), protocol_table(GSO_KEYS, "objects"), quick=GSO_QUICK, result="summary",
              needs=("shared:gso",), shardable=True),
    Benchmark("gso_views", "quality", "GSO protocol: the demo reconstructor, four views in (fourview bench gso)",
              (*GSO, "--mode", "views"), protocol_table(GSO_KEYS, "objects"), quick=GSO_QUICK, result="summary",
              needs=("shared:gso",), shardable=True),
    Benchmark("gso_optimize", "quality", "GSO protocol: the weight-free per-object fit (fourview bench gso)",
              (*GSO, "--mode", "optimize"), protocol_table(GSO_KEYS, "objects"),
              quick=(*GSO_QUICK, "--steps", "40"), result="summary", needs=("shared:gso",), shardable=True),
    Benchmark("gso_refine", "quality", "GSO protocol: the demo's prediction refined (fourview bench gso)",
              (*GSO, "--mode", "refine"), protocol_table(GSO_KEYS, "objects"),
              quick=(*GSO_QUICK, "--steps", "20"), result="summary", needs=("shared:gso",), shardable=True),
    Benchmark("text", "quality", "Text-to-3D on the held-out synthetic prompts (fourview bench text)",
              ("{python}", "-m", "fourview.cli", "bench", "text", "--prompts", "synthetic_heldout", "-o", "{out}",
               "--quiet"),
              protocol_table((("CLIP score", "clip_score", "{:.2f}"),
                              ("CLIP R-precision", "clip_r_precision", "{:.2f}"),
                              ("colour rate", "colour_rate", "{:.0%}"), ("shape rate", "shape_rate", "{:.0%}"),
                              ("seconds per asset", "asset_s", "{:.1f}")), "prompts"),
              quick=("--max-prompts", "2", "--steps", "2", "--turntable", "2", "--preview-resolution", "64"),
              result="summary"),
)  # fmt: skip
"""Every benchmark, in the order they run."""

PREPARE: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("{python}", "-m", "fourview.cli", "data", "synth", "--split", "heldout", "--count", "32", "-o", "{work}/synth",
      "--quiet"), ("--count", "4")),
    (("{python}", "-m", "fourview.cli", "data", "render", "{work}/synth", "-o", "{work}/rendered", "--albedo",
      "--res", "256", "--random", "4", "--no-depth", "--no-normal", "--quiet"),
     ("--res", "64", "--random", "1", "--supersample", "1")),
)  # fmt: skip
"""The ``rendered`` prerequisite: (full command, quick arguments) in order; finished objects are skipped."""


def machine_line(threads: int, load_before: str, load_after: str, shards: int = 1) -> str:
    """Where the numbers were measured: system, CPUs, threads (and processes), torch, and the load average around
    the run."""
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "none"
    processes = f" in each of {shards} shard processes" if shards > 1 else ""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {threads} threads{processes}, "
            f"torch {torch}; load average (`uptime`) {load_before} before, {load_after} after")  # fmt: skip


def load_average() -> str:
    """The three load averages as `uptime` prints them (from ``os.getloadavg`` where `uptime` is missing)."""
    try:
        text = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10, check=True).stdout
        found = re.search(r"load averages?:\s*(.+)$", text.strip())
        if found:
            return found[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def fill(args: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """The arguments with their ``{name}`` placeholders of ``values`` filled in (other braces left as they are)."""
    return [re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], m[0]), a) for a in args]


def last_json_object(text: str) -> dict:
    """The last JSON object printed: from the last line that opens one at its start to the end of its text."""
    starts = [m.start() for m in re.finditer(r"(?m)^\{", text)]
    for start in reversed(starts):
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0]
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON object in the output")


def missing_prerequisite(benchmark: Benchmark, shared: Path, cuda: Callable[[], bool]) -> str | None:
    """Why ``benchmark`` cannot run here, or None (``rendered`` is made, not missing)."""
    for need in benchmark.needs:
        if need == "cuda" and not cuda():
            return "no CUDA device"
        if need.startswith("shared:") and not (shared / need.split(":", 1)[1]).is_dir():
            return f"{shared / need.split(':', 1)[1]} not found"
    return None


def cuda_available(python: str) -> bool:
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def run_processes(
    command: list[str], env: dict, shards: int, timeout: float | None, logs: Path
) -> tuple[int, str, str]:
    """Run ``command`` once, or as ``shards`` processes at once (``RANK`` 0..N-1, ``WORLD_SIZE`` N, each with its
    output in ``logs``.shardI.log) and then once more unsharded: its exit status, stdout and stderr, or a failed
    shard's status and log.

    Raises:
        subprocess.TimeoutExpired: past ``timeout`` (every process is killed).
    """
    if shards == 1:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
        return proc.returncode, proc.stdout, proc.stderr
    paths = [Path(f"{logs}.shard{rank}.log") for rank in range(shards)]
    procs = []
    for rank, path in enumerate(paths):
        with path.open("w") as sink:  # the child keeps its own descriptor
            shard_env = {**env, "RANK": str(rank), "WORLD_SIZE": str(shards)}
            procs.append(subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=shard_env, cwd=REPO))
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        codes = [p.wait(None if deadline is None else max(0.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
        raise
    failed = next((i for i, code in enumerate(codes) if code != 0), None)
    if failed is not None:
        text = paths[failed].read_text(errors="replace")
        return codes[failed], text, text
    # Shards finishing together may each write tables missing the other's last object: one more pass, which
    # skips every finished object, writes the complete ones.
    remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=remaining, cwd=REPO)
    return proc.returncode, proc.stdout, proc.stderr


def run_benchmark(benchmark: Benchmark, values: dict[str, str], quick: bool, env: dict, timeout: float | None,
                  log: Callable[[str], None] = print, shards: int = 1) -> Outcome:  # fmt: skip
    """Run one benchmark (as ``shards`` processes where it is `Benchmark.shardable`) and read its numbers (an
    `Outcome` ``failed`` with the reason when it could not)."""
    out = Path(values["work"]) / benchmark.name
    values = {**values, "out": str(out), "json": str(out) + ".json"}
    command = fill(benchmark.command + (benchmark.quick if quick else ()), values)
    Path(values["json"]).unlink(missing_ok=True)
    outcome = Outcome(benchmark.name, "failed", command=command, load_before=load_average())
    shards = shards if benchmark.shardable else 1
    log(f"[{benchmark.name}] {' '.join(command)}" + (f" ({shards} shards)" if shards > 1 else ""))
    t0 = time.perf_counter()
    try:
        code, stdout, stderr = run_processes(command, env, shards, timeout, out)
    except subprocess.TimeoutExpired:
        outcome.reason = f"timed out after {timeout:.0f} s"
        return outcome
    outcome.seconds = time.perf_counter() - t0
    outcome.load_after = load_average()
    outcome.shards = shards
    if code != 0:
        last = (stderr.strip().splitlines() or stdout.strip().splitlines() or [""])[-1]
        outcome.reason = f"exit status {code}: {last[:300]}"
        return outcome
    try:
        if benchmark.result == "stdout":
            outcome.result = last_json_object(stdout)
        else:
            path = Path(values["json"]) if benchmark.result == "json" else out / "summary.json"
            outcome.result = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        outcome.reason = f"no numbers: {error}"
        return outcome
    outcome.status = "ok"
    return outcome


def markdown_table(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def section_body(benchmark: Benchmark, outcome: Outcome, quick: bool, threads: int, date: str) -> str:
    """The text between a benchmark's markers: when, where, how, then the table."""
    command = " ".join(_short(a) for a in outcome.command)
    mode = " --quick" if quick else ""
    return (
        f"Generated by `benchmarks/run_all.py{mode}` on {date} in {outcome.seconds:.0f} s; "
        f"{machine_line(threads, outcome.load_before, outcome.load_after, outcome.shards)}. Command: `{command}`.\n\n"
        + markdown_table(benchmark.table(outcome.result or {}))
    )


def _short(arg: str) -> str:
    """A command argument as the table shows it: paths of this checkout relative to it, the interpreter as python."""
    if arg == sys.executable:
        return "python"
    return arg.replace(str(REPO) + os.sep, "")


def rewrite_section(text: str, name: str, body: str, heading: str) -> str:
    """``text`` with the lines between ``name``'s markers replaced by ``body``; appended under ``heading`` (and
    `SECTION_HEADING` if the page lacks it) where the markers are missing.

    Raises:
        ValueError: markers out of order, or more than one pair.
    """
    begin, end = f"<!-- run_all:{name} begin -->", f"<!-- run_all:{name} end -->"
    if text.count(begin) > 1 or text.count(end) > 1:
        raise ValueError(f"the markers of {name} appear more than once")
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin not in text and end not in text:
        tail = "" if SECTION_HEADING in text else f"\n{SECTION_HEADING}\n"
        return f"{text.rstrip()}\n{tail}\n{heading}\n\n{block}\n"
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"the markers of {name} are not a begin line followed by an end line")
    return text[:i] + block + text[j + len(end) :]


def run_all(
    benchmarks: list[Benchmark],
    quick: bool = False,
    docs: Path | None = DOCS,
    work: Path = Path("/tmp/fourview_run_all"),
    threads: int = 2,
    shared: Path = SHARED,
    timeout: float | None = None,
    fresh: bool = False,
    log: Callable[[str], None] = print,
    shards: int = 1,
) -> list[Outcome]:
    """Run ``benchmarks`` (the module docstring) and rewrite their tables in ``docs`` (None: no page)."""
    work = work / ("quick" if quick else "full")
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    env = {**os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    values = {"python": python, "bench": str(HERE), "work": str(work), "shared": str(shared),
              "weights": str(WEIGHTS), "threads": str(threads)}  # fmt: skip
    cuda: dict[str, bool] = {}
    prepared: Outcome | None = None
    outcomes = []
    for benchmark in benchmarks:
        why = missing_prerequisite(benchmark, shared, lambda: cuda.setdefault("ok", cuda_available(python)))
        if why is None and "rendered" in benchmark.needs:
            prepared = prepared or prepare(values, quick, env, timeout, log)
            why = None if prepared.status == "ok" else f"the rendered objects could not be made: {prepared.reason}"
        if why is not None:
            log(f"[{benchmark.name}] skipped: {why}")
            outcomes.append(Outcome(benchmark.name, "skipped", why))
            continue
        outcome = run_benchmark(benchmark, values, quick, env, timeout, log, shards)
        log(f"[{benchmark.name}] {outcome.status} in {outcome.seconds:.0f} s" + (
            f": {outcome.reason}" if outcome.reason else ""))  # fmt: skip
        outcomes.append(outcome)
        if outcome.status == "ok" and docs is not None:
            date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            body = section_body(benchmark, outcome, quick, threads, date)
            text = rewrite_section(docs.read_text(encoding="utf-8"), benchmark.name, body, f"### {benchmark.what}")
            write_text_atomic(docs, text)  # the page is whole after every benchmark
    return outcomes


def prepare(values: dict[str, str], quick: bool, env: dict, timeout: float | None, log) -> Outcome:
    """The ``rendered`` prerequisite: `PREPARE`'s commands in turn (they skip what is finished)."""
    for command, quick_args in PREPARE:
        args = fill(command + (quick_args if quick else ()), values)
        log(f"[prepare] {' '.join(args)}")
        try:
            proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            return Outcome("prepare", "failed", f"timed out after {timeout:.0f} s", args)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [""])[-1]
            return Outcome("prepare", "failed", f"exit status {proc.returncode}: {last[:300]}", args)
    return Outcome("prepare", "ok")


def main(argv: list[str] | None = None) -> int:
    names = [b.name for b in BENCHMARKS]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small settings: minutes instead of hours")
    ap.add_argument("--only", nargs="+", choices=names, metavar="NAME", help="run these (default: all)")
    ap.add_argument("--skip", nargs="+", choices=names, metavar="NAME", default=[], help="run all but these")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--docs", type=Path, default=DOCS, help="the page whose tables are rewritten")
    ap.add_argument("--no-docs", action="store_true", help="leave the page alone")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fourview_run_all"), help="outputs and prerequisites")
    ap.add_argument("--fresh", action="store_true", help="empty the work folder first (the protocols resume)")
    ap.add_argument("--threads", type=int, default=2, help="threads of every benchmark process")
    ap.add_argument(
        "--shards",
        type=int,
        default=1,
        help="run the sharded protocols (fourview bench gso) as this many processes at once",
    )
    ap.add_argument("--shared", type=Path, default=SHARED, help="../shared/data (real objects, GSO scans)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default: none)")
    ap.add_argument("--json", type=Path, help="write every outcome and its numbers here")
    args = ap.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            needs = f" (needs {', '.join(b.needs)})" if b.needs else ""
            print(f"{b.name:18s} {b.kind:8s} {b.what}{needs}")
        return 0
    if args.threads < 1 or args.shards < 1:
        ap.error("--threads and --shards must be >= 1")
    chosen = [b for b in BENCHMARKS if (args.only is None or b.name in args.only) and b.name not in args.skip]
    docs = None if args.no_docs else args.docs
    outcomes = run_all(
        chosen, args.quick, docs, args.work, args.threads, args.shared, args.timeout, args.fresh, shards=args.shards
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1) + "\n")
    print("\n".join(f"{o.name:18s} {o.status:8s} {o.seconds:7.0f} s {o.reason}" for o in outcomes))
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
