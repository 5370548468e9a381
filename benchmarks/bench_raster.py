"""Benchmark: `fourview.render.rasterize` (+ `interpolate`) vs trimesh/embree ray casting.

A tilted torus (normalised like a loaded object) of 131,072 faces at ``--res`` (512) and
``--large-res`` (1024), and one of about a million faces (``--large-faces``) at both, seen from
the orthogonal rig and two random cameras of `fourview.cameras`. For each view, in the same run:

- ours: ``rasterize(pos, tri, (res, res))`` + ``interpolate(normals, rast, tri)`` on the CPU;
- (a) embree first hit: ``RayMeshIntersector(mesh).intersects_first(origins, dirs)`` (trimesh
  with embreex) on the rays of `fourview.cameras.pixel_rays`;
- (b) embree first hit + barycentrics: ``intersects_id(..., return_locations=True)`` then
  ``trimesh.triangles.points_to_barycentric``, what a rasteriser returns;
- for reference, embree's own barycentrics: ``EmbreeScene.run(..., output=1)`` of embreex
  directly (first hit with u, v, no trimesh around it).

Threads, ``--threads`` (default: ``torch.get_num_threads()``, which follows ``OMP_NUM_THREADS``)
on both sides: ours through ``torch.set_num_threads`` (`rasterize` and `interpolate` run their
numba kernels on that many threads); embree's queries are one ray at a time on the calling thread
(embreex's ``run`` loops over the rays), so the rays are cut into 8 chunks per thread that a
``ThreadPoolExecutor`` of ``--threads`` workers casts (the GIL is released while embree traces).
The BVHs are built once, outside the timings, by embree's own TBB threads.

The whole comparison is repeated ``--runs`` times (3) in one process, each run printing
``os.getloadavg()`` before and after: on a shared machine compare only ratios from the same run.
Warm-up calls (numba JIT or cache load) are excluded and reported separately; times are medians
over ``--repeats`` calls per view (``--large-repeats`` beyond the 131k-face mesh at ``--res``),
then the median over the views. Coverage masks are compared
(IoU, after flipping our rows: nvdiffrast's row 0 is the bottom) together with the agreement of
triangle ids where both hit.

JSON (``--json``): ``runs`` (per run: load averages and, per mesh and resolution, times, ratios
and views) and ``summary``: the 131k-face mesh at ``--res``, times as medians over the runs and
ratios as the smallest of the runs.

Run: ``python benchmarks/bench_raster.py [--res 512] [--large-res 1024] [--large-faces 1048576]
[--runs 3] [--repeats 5] [--large-repeats 2] [--threads 2] [--json out.json]`` (about 5 minutes on
two busy cores; ``--runs 1 --large-res 0 --large-faces 0`` for a quick look). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import trimesh

from fourview.cameras import orthogonal_rig, pixel_rays, random_cameras

_CHUNKS_PER_THREAD = 8
"""Ray chunks per embree thread: a thread slowed by other load leaves its chunks to the others."""


def make_mesh(major_sections: int = 512, minor_sections: int = 128) -> trimesh.Trimesh:
    """A tilted torus with a wavy tube, normalised to unit radius; 2 * major * minor faces."""
    mesh = trimesh.creation.torus(
        major_radius=0.7, minor_radius=0.25, major_sections=major_sections, minor_sections=minor_sections
    )
    v = mesh.vertices.copy()
    ang = np.arctan2(v[:, 1], v[:, 0])
    ring = np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], axis=1) * 0.7
    v = ring + (v - ring) * (1.0 + 0.15 * np.sin(6 * ang))[:, None]  # tube radius varies along the ring
    rot = trimesh.transformations.rotation_matrix(np.radians(60.0), [1.0, 0.0, 0.0])[:3, :3]
    v = v @ rot.T
    v -= (v.min(0) + v.max(0)) / 2.0
    v /= np.linalg.norm(v, axis=1).max()
    return trimesh.Trimesh(v, mesh.faces, process=False)


def torus_sections(faces: int) -> tuple[int, int]:
    """(major, minor) sections of a `make_mesh` torus with about ``faces`` faces, major = 2 * minor."""
    minor = max(3, round(math.sqrt(faces / 4)))
    return 2 * minor, minor


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and median process CPU time (all threads) of ``fn()``, seconds."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


class Peer:
    """embree through trimesh (and embreex directly), its queries cut into chunks of rays cast on a pool."""

    def __init__(self, mesh: trimesh.Trimesh, threads: int):
        # Heavy optional dependencies, imported by the benchmark that needs them.
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        self.mesh = mesh
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads)
        t = time.perf_counter()
        self.intersector = RayMeshIntersector(mesh)
        self.intersector.intersects_first(np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]]))  # builds the BVH
        self.scene = rtcore_scene.EmbreeScene()
        TriangleMesh(self.scene, mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32))
        self.scene.run(np.zeros((1, 3), np.float32), np.array([[0.0, 0.0, 1.0]], np.float32))  # commits
        self.build_s = time.perf_counter() - t

    def _map(self, fn, origins: np.ndarray, dirs: np.ndarray) -> list:
        n = len(origins)
        k = _CHUNKS_PER_THREAD * self.threads
        cuts = [(i * n // k, (i + 1) * n // k) for i in range(k)]
        return list(self.pool.map(lambda c: fn(origins[c[0] : c[1]], dirs[c[0] : c[1]]), cuts))

    def first_hit(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """[N] first triangle hit per ray, -1 for a miss."""
        return np.concatenate(self._map(self.intersector.intersects_first, origins, dirs))

    def first_hit_barycentric(self, origins: np.ndarray, dirs: np.ndarray) -> list:
        """Per chunk: hit triangles and the barycentric coordinates of the hit points."""

        def cast(o: np.ndarray, d: np.ndarray):
            tri_id, _, locs = self.intersector.intersects_id(o, d, multiple_hits=False, return_locations=True)
            return tri_id, trimesh.triangles.points_to_barycentric(self.mesh.triangles[tri_id], locs)

        return self._map(cast, origins, dirs)

    def embree_uv(self, origins32: np.ndarray, dirs32: np.ndarray) -> list:
        """Per chunk: embree's first hits with its own (u, v) (float32 rays)."""
        return self._map(lambda o, d: self.scene.run(o, d, output=1), origins32, dirs32)


def bench_mesh(mesh: trimesh.Trimesh, res: int, peer: Peer, repeats: int) -> dict:
    """Times, ratios and parity of ours against the peer on one mesh at ``res`` x ``res``."""
    from fourview.render import interpolate, rasterize

    verts = torch.from_numpy(mesh.vertices).float()  # [V, 3]
    faces = torch.from_numpy(mesh.faces).to(torch.int32)  # [F, 3]
    normals = torch.from_numpy(mesh.vertex_normals.copy()).float()[None]  # [1, V, 3]
    verts_h = torch.cat([verts, torch.ones(len(verts), 1)], dim=1)  # [V, 4]
    cameras = orthogonal_rig() + random_cameras(2, seed=1)

    rows = []
    for cam in cameras:
        pos = (verts_h @ torch.from_numpy(cam.mvp()).float().T)[None]  # [1, V, 4] clip space
        origins, dirs = pixel_rays(cam, res)
        origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        origins32, dirs32 = origins.astype(np.float32), dirs.astype(np.float32)

        def ours(pos=pos):
            rast, _ = rasterize(pos, faces, (res, res))
            nrm, _ = interpolate(normals, rast, faces)
            return rast, nrm

        def first(o=origins, d=dirs):
            return peer.first_hit(o, d)

        def with_bary(o=origins, d=dirs):
            return peer.first_hit_barycentric(o, d)

        def own_uv(o=origins32, d=dirs32):
            return peer.embree_uv(o, d)

        for fn in (ours, first, with_bary, own_uv):  # warm caches and pools
            fn()
        t_ours, c_ours = median_time(ours, repeats)
        t_raster, c_raster = median_time(lambda pos=pos: rasterize(pos, faces, (res, res)), repeats)
        t_first, c_first = median_time(first, repeats)
        t_bary, c_bary = median_time(with_bary, repeats)
        t_uv, c_uv = median_time(own_uv, repeats)

        rast, _ = ours()
        our_id = torch.flip(rast[0, ..., 3], dims=[0]).numpy().astype(np.int64) - 1  # row 0 = top
        their_id = first().reshape(res, res)
        a, b = our_id >= 0, their_id >= 0
        rows.append(
            dict(
                camera=f"az {cam.azimuth_deg:.0f} el {cam.elevation_deg:.0f}",
                ours_ms=1e3 * t_ours,
                ours_cpu_ms=1e3 * c_ours,
                ours_rasterize_only_ms=1e3 * t_raster,
                ours_rasterize_only_cpu_ms=1e3 * c_raster,
                peer_first_hit_ms=1e3 * t_first,
                peer_first_hit_cpu_ms=1e3 * c_first,
                peer_with_bary_ms=1e3 * t_bary,
                peer_with_bary_cpu_ms=1e3 * c_bary,
                peer_embree_uv_ms=1e3 * t_uv,
                peer_embree_uv_cpu_ms=1e3 * c_uv,
                iou=float((a & b).sum() / max((a | b).sum(), 1)),
                same_triangle=float((our_id[a & b] == their_id[a & b]).mean()) if (a & b).any() else 1.0,
                coverage=float(a.mean()),
            )
        )

    pos_all = torch.stack([verts_h @ torch.from_numpy(c.mvp()).float().T for c in cameras])  # [N, V, 4]

    def ours_batch():
        rast, _ = rasterize(pos_all, faces, (res, res))
        interpolate(normals, rast, faces)

    ours_batch()
    t_batch, _ = median_time(ours_batch, repeats)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    out = dict(faces=len(mesh.faces), vertices=len(mesh.vertices), resolution=res)
    for key in rows[0]:
        if key.endswith("_ms"):
            out["median_" + key] = med(key)
    out["ours_batch_per_view_ms"] = 1e3 * t_batch / len(cameras)
    # Headline ratios: wall-clock medians, ours = rasterize + interpolate(normals).
    out["speedup_vs_first_hit"] = med("peer_first_hit_ms") / med("ours_ms")
    out["speedup_vs_first_hit_plus_bary"] = med("peer_with_bary_ms") / med("ours_ms")
    out["speedup_vs_embree_uv"] = med("peer_embree_uv_ms") / med("ours_ms")
    out["cpu_speedup_vs_first_hit"] = med("peer_first_hit_cpu_ms") / med("ours_cpu_ms")
    out["min_iou"] = min(r["iou"] for r in rows)
    out["min_same_triangle"] = min(r["same_triangle"] for r in rows)
    out["views"] = rows
    return out


def print_result(r: dict) -> None:
    print(
        f"  {r['faces']:>8} faces {r['resolution']:>5}^2: ours {r['median_ours_ms']:7.1f} ms"
        f" (rasterize {r['median_ours_rasterize_only_ms']:.1f}, batched {r['ours_batch_per_view_ms']:.1f}/view)"
        f" | (a) first hit {r['median_peer_first_hit_ms']:7.1f} ms x{r['speedup_vs_first_hit']:5.1f}"
        f" | (b) + barycentrics {r['median_peer_with_bary_ms']:7.1f} ms x{r['speedup_vs_first_hit_plus_bary']:5.1f}"
        f" | embree's u,v {r['median_peer_embree_uv_ms']:6.1f} ms x{r['speedup_vs_embree_uv']:5.1f}"
        f" | IoU {r['min_iou']:.4f} same id {r['min_same_triangle']:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--large-res", type=int, default=1024, help="second resolution (0: none)")
    ap.add_argument("--large-faces", type=int, default=1 << 20, help="faces of the second mesh (0: none)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5, help="calls per view timed, 131k faces at --res")
    ap.add_argument("--large-repeats", type=int, default=2, help="calls per view timed, the other cases")
    ap.add_argument("--threads", type=int, default=None, help="threads on both sides (default: torch's)")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    import numba

    from fourview.render import interpolate, rasterize

    meshes = [make_mesh()]
    if args.large_faces:
        meshes.append(make_mesh(*torus_sections(args.large_faces)))
    resolutions = [args.res] + ([args.large_res] if args.large_res else [])

    # Warm-up: the first call compiles the numba kernels (or loads them from numba's cache).
    pos0 = torch.cat([torch.from_numpy(meshes[0].vertices).float(), torch.ones(len(meshes[0].vertices), 1)], 1)[None]
    faces0 = torch.from_numpy(meshes[0].faces).to(torch.int32)
    t = time.perf_counter()
    rast, _ = rasterize(pos0 * torch.tensor([1.0, 1.0, 0.5, 1.0]), faces0, (args.res, args.res))
    interpolate(pos0[..., :3], rast, faces0)
    first_call_s = time.perf_counter() - t
    peers = [Peer(m, threads) for m in meshes]

    print(
        f"{os.cpu_count()} cpus, {threads} threads on both sides; first call (numba JIT compile or cache load)"
        f" {first_call_s:.2f} s; embree BVH builds {', '.join(f'{p.build_s:.2f}' for p in peers)} s"
    )
    print("times: wall-clock medians; x = peer time / ours; ours = rasterize + interpolate(normals)")
    runs = []
    for i in range(args.runs):
        load_before = os.getloadavg()
        print(f"run {i + 1}: load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
        results = []
        for mesh, peer in zip(meshes, peers):
            for res in resolutions:
                repeats = args.repeats if not results else args.large_repeats
                results.append(bench_mesh(mesh, res, peer, repeats))
                print_result(results[-1])
        load_after = os.getloadavg()
        print(f"  load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        runs.append(dict(load_average_before=load_before, load_average_after=load_after, results=results))

    primary = [r["results"][0] for r in runs]
    summary = dict(
        device=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        threads=threads,
        load_average=[r["load_average_before"][0] for r in runs],
        torch=torch.__version__,
        numba=numba.__version__,
        resolution=args.res,
        faces=primary[0]["faces"],
        vertices=primary[0]["vertices"],
        first_call_s=first_call_s,
        peer_bvh_build_s=peers[0].build_s,
    )
    for key in primary[0]:
        if key.endswith("_ms"):
            summary[key] = statistics.median(p[key] for p in primary)
        elif key.startswith(("speedup", "cpu_speedup", "min_")):
            summary[key] = min(p[key] for p in primary)
    for key, label in (("speedup_vs_first_hit", "(a)"), ("speedup_vs_first_hit_plus_bary", "(b)")):
        per_run = [[res[key] for res in r["results"]] for r in runs]
        print(f"smallest ratio {label} per run (over meshes and resolutions): {[round(min(x), 1) for x in per_run]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(summary=summary, runs=runs), f, indent=2)


if __name__ == "__main__":
    main()
