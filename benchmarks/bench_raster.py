"""Benchmark: `fourview.render.rasterize` (+ `interpolate`) vs trimesh/embree ray casting.

A torus of >= 100k faces (normalised like a loaded object), seen at 512x512 from the orthogonal
rig and two random cameras of `fourview.cameras`. For each view, in the same run:

- ours: ``rasterize(pos, tri, (512, 512))`` + ``interpolate(normals, rast, tri)`` on the CPU;
- peer: ``RayMeshIntersector(mesh).intersects_first(origins, dirs)`` with the rays of
  `fourview.cameras.pixel_rays` (embree BVH built once, outside the timing), plus the
  barycentric coordinates of the hits (``intersects_id(..., return_locations=True)`` then
  ``trimesh.triangles.points_to_barycentric``) for parity.

Warm-up calls (numba JIT or cache load) are excluded and reported separately; times are the
median over repeats. Coverage masks are compared (IoU, after flipping our rows: nvdiffrast's row
0 is the bottom) together with the agreement of triangle ids where both hit.

Run: ``python benchmarks/bench_raster.py [--res 512] [--repeats 5] [--json out.json]``.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
import trimesh

from fourview.cameras import orthogonal_rig, pixel_rays, random_cameras


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


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and median process CPU time of ``fn()``, seconds.

    Both are reported: on a shared machine wall time includes waiting for a core, while CPU
    time measures the work (it also counts any spinning of idle worker threads).
    """
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    res = args.res

    import numba

    t = time.perf_counter()
    from fourview.render import interpolate, rasterize

    mesh = make_mesh()
    verts = torch.from_numpy(mesh.vertices).float()  # [V, 3]
    faces = torch.from_numpy(mesh.faces).to(torch.int32)  # [F, 3]
    normals = torch.from_numpy(mesh.vertex_normals.copy()).float()[None]  # [1, V, 3]
    verts_h = torch.cat([verts, torch.ones(len(verts), 1)], dim=1)  # [V, 4]
    cameras = orthogonal_rig() + random_cameras(2, seed=1)

    # Warm-up: the first call compiles the numba kernels (or loads them from numba's cache).
    pos0 = (verts_h @ torch.from_numpy(cameras[0].mvp()).float().T)[None]
    t = time.perf_counter()
    rast, _ = rasterize(pos0, faces, (res, res))
    interpolate(normals, rast, faces)
    first_call_s = time.perf_counter() - t

    from trimesh.ray.ray_pyembree import RayMeshIntersector

    t = time.perf_counter()
    peer = RayMeshIntersector(mesh)
    peer.intersects_first(np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]]))  # builds the BVH
    peer_build_s = time.perf_counter() - t

    rows = []
    for cam in cameras:
        pos = (verts_h @ torch.from_numpy(cam.mvp()).float().T)[None]  # [1, V, 4] clip space
        origins, dirs = pixel_rays(cam, res)
        origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)

        def ours(pos=pos):
            rast, _ = rasterize(pos, faces, (res, res))
            nrm, _ = interpolate(normals, rast, faces)
            return rast, nrm

        def theirs(origins=origins, dirs=dirs):
            # One cast returning first-hit triangles and hit points, then barycentrics.
            tri_id, _, locs = peer.intersects_id(origins, dirs, multiple_hits=False, return_locations=True)
            return trimesh.triangles.points_to_barycentric(mesh.triangles[tri_id], locs)

        ours()
        theirs()
        t_ours, c_ours = median_time(ours, args.repeats)
        t_raster, c_raster = median_time(lambda pos=pos: rasterize(pos, faces, (res, res)), args.repeats)
        t_peer_first, c_peer_first = median_time(lambda o=origins, d=dirs: peer.intersects_first(o, d), args.repeats)
        t_peer, c_peer = median_time(theirs, args.repeats)

        rast, _ = ours()
        our_id = torch.flip(rast[0, ..., 3], dims=[0]).numpy().astype(np.int64) - 1  # row 0 = top
        their_id = peer.intersects_first(origins, dirs).reshape(res, res)
        a, b = our_id >= 0, their_id >= 0
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        same = float((our_id[a & b] == their_id[a & b]).mean()) if (a & b).any() else 1.0
        rows.append(
            dict(
                camera=f"az {cam.azimuth_deg:.0f} el {cam.elevation_deg:.0f}",
                ours_ms=1e3 * t_ours,
                ours_cpu_ms=1e3 * c_ours,
                ours_rasterize_only_ms=1e3 * t_raster,
                ours_rasterize_only_cpu_ms=1e3 * c_raster,
                peer_first_hit_ms=1e3 * t_peer_first,
                peer_first_hit_cpu_ms=1e3 * c_peer_first,
                peer_with_bary_ms=1e3 * t_peer,
                peer_with_bary_cpu_ms=1e3 * c_peer,
                iou=iou,
                same_triangle=same,
                coverage=float(a.mean()),
            )
        )

    # The whole batch in one call.
    pos_all = torch.stack([verts_h @ torch.from_numpy(c.mvp()).float().T for c in cameras])  # [N, V, 4]

    def ours_batch():
        rast, _ = rasterize(pos_all, faces, (res, res))
        interpolate(normals, rast, faces)

    ours_batch()
    t_batch, _ = median_time(ours_batch, args.repeats)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    summary = dict(
        device=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        load_average=os.getloadavg()[0],
        torch=torch.__version__,
        numba=numba.__version__,
        resolution=res,
        faces=len(mesh.faces),
        vertices=len(mesh.vertices),
        first_call_s=first_call_s,
        peer_bvh_build_s=peer_build_s,
        ours_batch_per_view_ms=1e3 * t_batch / len(cameras),
        min_iou=min(r["iou"] for r in rows),
        min_same_triangle=min(r["same_triangle"] for r in rows),
    )
    for key in (
        "ours_ms",
        "ours_cpu_ms",
        "ours_rasterize_only_ms",
        "ours_rasterize_only_cpu_ms",
        "peer_first_hit_ms",
        "peer_first_hit_cpu_ms",
        "peer_with_bary_ms",
        "peer_with_bary_cpu_ms",
    ):
        summary["median_" + key] = med(key)
    # Headline ratios: wall-clock medians, ours = rasterize + interpolate(normals).
    summary["speedup_vs_first_hit"] = med("peer_first_hit_ms") / med("ours_ms")
    summary["speedup_vs_first_hit_plus_bary"] = med("peer_with_bary_ms") / med("ours_ms")
    summary["cpu_speedup_vs_first_hit"] = med("peer_first_hit_cpu_ms") / med("ours_cpu_ms")
    summary["cpu_speedup_vs_first_hit_plus_bary"] = med("peer_with_bary_cpu_ms") / med("ours_cpu_ms")

    print(
        f"mesh: {summary['faces']} faces, {summary['vertices']} vertices; {res}x{res}; "
        f"{summary['cpu_count']} cpus, load average {summary['load_average']:.1f}"
    )
    print(f"first call (numba JIT compile or cache load): {first_call_s:.2f} s; embree BVH build {peer_build_s:.3f} s")
    print(
        "times in ms, wall / cpu; ours = rasterize + interpolate(normals); peer = embree first hit,"
        " and first hit + hit points + barycentrics"
    )
    print(f"{'camera':<14}{'ours':>13}{'rasterize':>13}{'embree':>13}{'embree+bary':>14}{'IoU':>8}{'same id':>9}")
    for r in rows:
        print(
            f"{r['camera']:<14}{r['ours_ms']:>7.1f} /{r['ours_cpu_ms']:>5.1f}"
            f"{r['ours_rasterize_only_ms']:>7.1f} /{r['ours_rasterize_only_cpu_ms']:>5.1f}"
            f"{r['peer_first_hit_ms']:>7.1f} /{r['peer_first_hit_cpu_ms']:>5.1f}"
            f"{r['peer_with_bary_ms']:>8.1f} /{r['peer_with_bary_cpu_ms']:>5.1f}"
            f"{r['iou']:>8.4f}{r['same_triangle']:>9.4f}"
        )
    print(
        f"median wall: ours {med('ours_ms'):.1f} ms vs embree first hit {med('peer_first_hit_ms'):.1f} ms"
        f" -> x{summary['speedup_vs_first_hit']:.1f}; vs first hit + barycentrics {med('peer_with_bary_ms'):.1f} ms"
        f" -> x{summary['speedup_vs_first_hit_plus_bary']:.1f}"
    )
    print(
        f"median cpu:  ours {med('ours_cpu_ms'):.1f} ms vs embree first hit {med('peer_first_hit_cpu_ms'):.1f} ms"
        f" -> x{summary['cpu_speedup_vs_first_hit']:.1f}; vs first hit + barycentrics"
        f" {med('peer_with_bary_cpu_ms'):.1f} ms -> x{summary['cpu_speedup_vs_first_hit_plus_bary']:.1f}"
    )
    print(
        f"batched ({len(cameras)} views in one call): {summary['ours_batch_per_view_ms']:.1f} ms/view;"
        f" min coverage IoU {summary['min_iou']:.4f}; min same-triangle fraction {summary['min_same_triangle']:.4f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(summary=summary, views=rows), f, indent=2)


if __name__ == "__main__":
    main()
