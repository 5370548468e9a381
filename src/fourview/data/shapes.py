"""The synthetic world's shape classes: one builder per class, from proportions to primitive pieces.

`shape_pieces(shape, params)` builds a class from its proportions (`fourview.data.synthetic.PROPORTIONS`
names them and bounds them), in object units: +Y up, the front facing +Z, standing on y = 0. It
returns the body pieces (which carry the object's colour and pattern) and the accent pieces (dark,
at most about 20% of the surface). `normaliser` gives the similarity into the object frame that
`fourview.data.synthetic.build_asset` applies afterwards.
"""

from __future__ import annotations

import math

import numpy as np

from fourview.data.primitives import Piece, box, capsule, cylinder, frustum, prism, revolve, sphere, torus
from fourview.errors import InputError

Pieces = tuple[list[Piece], list[Piece]]
"""(body pieces, accent pieces) of one object."""


def normaliser(pieces: list[Piece]) -> tuple[np.ndarray, float]:
    """Centre of the pieces' bounding box and the scale that puts their farthest vertex at distance 1."""
    verts = np.concatenate([p.verts for p in pieces])
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2.0
    return centre, 1.0 / float(np.linalg.norm(verts - centre, axis=1).max())


def shape_pieces(shape: str, p: dict[str, float]) -> Pieces:
    """The pieces of shape class ``shape`` with proportions ``p`` (every name of its `PROPORTIONS`)."""
    if shape == "mug":
        return _mug(p)
    elif shape == "table":
        return _table(p)
    elif shape == "chair":
        return _chair(p)
    elif shape == "lamp":
        return _lamp(p)
    elif shape == "tree":
        return _tree(p)
    elif shape == "house":
        return _house(p)
    elif shape == "snowman":
        return _snowman(p)
    elif shape == "mushroom":
        return _mushroom(p)
    elif shape == "car":
        return _car(p)
    elif shape == "vase":
        return _vase(p)
    elif shape == "bottle":
        return _bottle(p)
    elif shape == "bench":
        return _bench(p)
    elif shape == "rocket":
        return _rocket(p)
    elif shape == "cactus":
        return _cactus(p)
    elif shape == "barrel":
        return _barrel(p)
    elif shape == "bowl":
        return _bowl(p)
    elif shape == "sofa":
        return _sofa(p)
    elif shape == "dumbbell":
        return _dumbbell(p)
    elif shape == "umbrella":
        return _umbrella(p)
    elif shape == "bed":
        return _bed(p)
    raise InputError(f"unknown synthetic shape {shape!r}")


def _legs(x: float, z: float, length: float, thickness: float) -> list[Piece]:
    """Four square legs standing on y = 0 at (+-x, +-z), reaching ``length`` (+1% into what they hold)."""
    leg = box(thickness, length * 1.01, thickness).moved(y=length * 1.01 / 2)
    return [leg.moved(sx * x, 0.0, sz * z) for sx in (-1, 1) for sz in (-1, 1)]


def _mug(p: dict[str, float]) -> Pieces:
    h, r, wall = p["height"], 0.5, 0.08
    body = revolve(
        np.array([[0, 0], [r, 0], [r, h], [r - wall, h], [r - wall, 0.1], [0, 0.1]]), 28, creases=(1, 2, 3, 4)
    )
    # A half torus on the right (+X), standing in the XY plane, its ends buried in the wall.
    handle = torus(p["handle_size"] * h, p["handle_thickness"], sections=14, tube_sections=8, arc_deg=180.0)
    handle = handle.rotated("y", 180.0).rotated("x", 90.0).moved(r - 0.01, h / 2, 0.0)
    return [body, handle], []


def _table(p: dict[str, float]) -> Pieces:
    w, d, length, t = p["width"], p["depth"], p["leg_length"], p["leg_thickness"]
    top = box(w, 0.1, d).moved(y=length + 0.05)
    return [top] + _legs(w / 2 - t, d / 2 - t, length, t), []


def _chair(p: dict[str, float]) -> Pieces:
    length, bh, t = p["leg_length"], p["back_height"], p["leg_thickness"]
    seat = box(1.0, 0.1, 1.0).moved(y=length + 0.05)
    back = box(1.0, bh, 0.1).moved(0.0, length + 0.1 + bh / 2 - 0.01, -0.45)  # behind the seat: front is +Z
    return [seat, back] + _legs(0.5 - t / 2, 0.5 - t / 2, length, t), []


def _lamp(p: dict[str, float]) -> Pieces:
    pole, sr, sh = p["pole_height"], p["shade_radius"], p["shade_height"]
    base = frustum(0.4, 0.34, 0.08, 24)
    stem = cylinder(0.035, pole, 10).moved(y=0.07)
    shade = frustum(sr, 0.6 * sr, sh, 24).moved(y=0.08 + pole - 0.6 * sh)
    return [base, shade], [stem]


def _tree(p: dict[str, float]) -> Pieces:
    cs, th, tr = p["crown_size"], p["trunk_height"], p["trunk_radius"]
    trunk = cylinder(tr, th + 0.5 * cs, 12)
    cy = th + 0.9 * cs
    crown = [sphere(cs, 14, 9).moved(y=cy)]
    for az in (45.0, 135.0, 225.0, 315.0):  # four lobes, so every rig view sees a lumpy crown
        a = math.radians(az)
        crown.append(sphere(0.62 * cs, 12, 7).moved(0.62 * cs * math.sin(a), cy - 0.2 * cs, 0.62 * cs * math.cos(a)))
    return crown, [trunk]


def _house(p: dict[str, float]) -> Pieces:
    w, wh, rh, d = p["width"], p["wall_height"], p["roof_height"], 1.4
    walls = box(w, wh, d).moved(y=wh / 2)
    roof = prism(np.array([[-d / 2 - 0.12, wh - 0.02], [d / 2 + 0.12, wh - 0.02], [0.0, wh + rh]]), w + 0.2)
    chimney = box(0.2, 0.6 * rh, 0.2).moved(0.28 * w, wh + 0.55 * rh, -0.2 * d)
    door = box(0.32, 0.6, 0.04).moved(0.0, 0.3, d / 2 + 0.01)  # the front (+Z) wall
    windows = [box(0.3, 0.28, 0.04).moved(sx * 0.3 * w, 0.6 * wh, d / 2 + 0.01) for sx in (-1, 1)]
    return [walls, roof, chimney], [door] + windows


def _snowman(p: dict[str, float]) -> Pieces:
    r0 = 0.6
    r1 = r0 * p["body_ratio"]
    r2 = r1 * p["head_ratio"]
    y0 = r0
    y1 = y0 + r0 + 0.6 * r1
    y2 = y1 + r1 + 0.6 * r2
    balls = [sphere(r0, 16, 10).moved(y=y0), sphere(r1, 16, 10).moved(y=y1), sphere(r2, 14, 9).moved(y=y2)]
    hat_y = y2 + 0.75 * r2
    brim = cylinder(0.95 * r2, 0.05, 16).moved(y=hat_y)
    crown = cylinder(0.6 * r2, p["hat_height"] * r2, 16).moved(y=hat_y + 0.04)
    nose = frustum(0.12 * r2, 0.0, 0.6 * r2, 8).rotated("x", 90.0).moved(0.0, y2, 0.9 * r2)  # points +Z
    return balls, [brim, crown, nose]


def _mushroom(p: dict[str, float]) -> Pieces:
    cr, ch, sh, sr = p["cap_radius"], p["cap_height"], p["stem_height"], p["stem_radius"]
    stem = frustum(1.15 * sr, sr, sh, 16)
    y0 = sh - 0.05
    phi = np.linspace(0.0, math.pi / 2, 9)
    dome = np.stack([cr * np.cos(phi), y0 + ch * np.sin(phi)], axis=1)
    dome[-1, 0] = 0.0
    cap = revolve(np.concatenate([[[0.0, y0]], dome]), 24, creases=(1,))
    return [stem, cap], []


def _car(p: dict[str, float]) -> Pieces:
    length, chh, cl = p["length"], p["cabin_height"], p["cabin_length"]
    w = 1.0
    hull = box(w, 0.42, length).moved(y=0.39)
    z0, z1 = -0.4 * length, (-0.4 + cl) * length  # cabin towards the back: the bonnet points +Z
    yb, yt = 0.59, 0.6 + chh
    cabin = prism(np.array([[z0, yb], [z1, yb], [z1 - 0.35 * chh, yt], [z0 + 0.15 * chh, yt]]), 0.88 * w)
    wheel = cylinder(0.21, 0.16, 16).moved(y=-0.08).rotated("z", 90.0)  # axle along X
    wheels = [wheel.moved(sx * (w / 2 - 0.04), 0.21, sz * 0.3 * length) for sx in (-1, 1) for sz in (-1, 1)]
    return [hull, cabin], wheels


def _vase(p: dict[str, float]) -> Pieces:
    from scipy.interpolate import PchipInterpolator  # 0.6 s to import; only the vase needs it

    h, belly, neck = p["height"], p["belly"], p["neck"]
    lip = 1.35 * neck
    radius = PchipInterpolator([0.0, 0.35, 0.8, 1.0], [0.32, belly, neck, lip])
    t = np.linspace(0.0, 1.0, 14)
    outer = np.stack([radius(t), h * t], axis=1)
    inner = np.array([[lip - 0.04, h], [0.8 * neck, h - 0.18], [0.0, h - 0.22]])
    profile = np.concatenate([[[0.0, 0.0]], outer, inner])
    return [revolve(profile, 28, creases=(1, 14, 15))], []


def _bottle(p: dict[str, float]) -> Pieces:
    bh, nl, sh = p["body_height"], p["neck_length"], p["shoulder"]
    r, rn = 0.35, 0.11
    phi = np.linspace(0.0, math.pi / 2, 6)
    shoulder = np.stack([rn + (r - rn) * np.cos(phi), bh + sh * np.sin(phi)], axis=1)
    top = bh + sh + nl
    profile = np.concatenate([[[0.0, 0.0], [r, 0.0]], shoulder, [[rn, top], [0.0, top]]])
    body = revolve(profile, 24, creases=(1, 7, 8))
    cap = cylinder(0.13, 0.14, 16).moved(y=top - 0.03)
    return [body], [cap]


def _bench(p: dict[str, float]) -> Pieces:
    length, bh, sh = p["length"], p["back_height"], p["seat_height"]
    seat = box(length, 0.08, 0.55).moved(y=sh)
    sides = [box(0.08, sh, 0.5).moved(sx * (length / 2 - 0.2), sh / 2, 0.0) for sx in (-1, 1)]
    back = box(length, bh, 0.06).moved(0.0, sh + 0.15 + bh / 2, -0.28)  # backrest behind: front is +Z
    posts = [box(0.08, bh + 0.17, 0.06).moved(sx * (length / 2 - 0.2), sh + (bh + 0.17) / 2, -0.32) for sx in (-1, 1)]
    return [seat, back] + sides + posts, []


def _rocket(p: dict[str, float]) -> Pieces:
    bh, nh, fs = p["body_height"], p["nose_height"], p["fin_size"]
    body = cylinder(0.3, bh, 24)
    nose = frustum(0.3, 0.0, nh, 24).moved(y=bh - 0.01)
    fin = prism(np.array([[0.2, 0.0], [0.3 + fs, -0.1], [0.3 + 0.3 * fs, 1.2 * fs], [0.2, 1.6 * fs]]), 0.05)
    fins = [fin.rotated("y", az) for az in (45.0, 135.0, 225.0, 315.0)]
    nozzle = frustum(0.26, 0.18, 0.15, 16).moved(y=-0.14)
    return [body, nose] + fins, [nozzle]


def _cactus(p: dict[str, float]) -> Pieces:
    h, ah, reach, al = p["height"], p["arm_height"], p["arm_reach"], p["arm_length"]
    ra = 0.16
    trunk = capsule(0.25, h, 14, 4)
    pieces = [trunk]
    for side, y, length in ((1.0, ah * h, al), (-1.0, (ah + 0.12) * h, 0.8 * al)):
        # Out along +-X, ending inside the upright part (no shared vertices between the two).
        arm = capsule(ra, reach + 0.6 * ra, 12, 3).rotated("z", -90.0 * side).moved(y=y)
        up = capsule(ra, length + ra, 12, 3).moved(side * reach, y - ra, 0.0)
        pieces += [arm, up]
    return pieces, []


def _barrel(p: dict[str, float]) -> Pieces:
    h, bulge = p["height"], p["bulge"]
    t = np.linspace(0.0, 1.0, 11)
    radius = 0.42 + bulge * np.sin(math.pi * t)
    profile = np.concatenate([[[0.0, 0.0]], np.stack([radius, h * t], axis=1), [[0.0, h]]])
    body = revolve(profile, 28, creases=(1, 11))
    hoops = [torus(0.42 + bulge * math.sin(math.pi * s), 0.025, 28, 6).moved(y=s * h) for s in (0.15, 0.85)]
    return [body], hoops


def _bowl(p: dict[str, float]) -> Pieces:
    depth, foot = p["depth"], p["foot"]
    rim, wall, fh = 1.0, 0.06, 0.06
    phi0 = math.asin(foot / rim)
    phi = np.linspace(phi0, math.pi / 2, 9)
    outer = np.stack([rim * np.sin(phi), fh + depth * (1.0 - np.cos(phi))], axis=1)
    phi_in = np.linspace(math.pi / 2, 0.0, 9)
    inner = np.stack([(rim - wall) * np.sin(phi_in), fh + wall + (depth - wall) * (1.0 - np.cos(phi_in))], axis=1)
    inner[-1, 0] = 0.0
    profile = np.concatenate([[[0.0, 0.0], [foot, 0.0]], outer, inner])
    return [revolve(profile, 32, creases=(1, 2, 10, 11))], []


def _sofa(p: dict[str, float]) -> Pieces:
    w, bh, ah = p["width"], p["back_height"], p["arm_height"]
    d = 0.95
    base = box(w, 0.35, d).moved(y=0.275)
    back = box(w, bh + 0.35, 0.25).moved(0.0, 0.1 + (bh + 0.35) / 2, -d / 2 + 0.125)  # back at -Z: front is +Z
    arms = [box(0.22, 0.35 + ah, d).moved(sx * (w / 2 - 0.11), 0.1 + (0.35 + ah) / 2, 0.0) for sx in (-1, 1)]
    legs = _legs(w / 2 - 0.1, d / 2 - 0.1, 0.1, 0.08)
    return [base, back] + arms, legs


def _dumbbell(p: dict[str, float]) -> Pieces:
    bl, wr, ww = p["bar_length"], p["weight_radius"], p["weight_width"]
    grip = bl - 2.0 * ww + 0.1  # the bar only spans the gap between the weights (+0.05 into each)
    bar = cylinder(0.045, grip, 12).moved(y=-grip / 2).rotated("z", 90.0).moved(y=wr)
    plate = cylinder(wr, ww, 24).moved(y=-ww / 2).rotated("z", 90.0)
    plates = [plate.moved(sx * (bl / 2 - ww / 2), wr, 0.0) for sx in (-1, 1)]
    return plates, [bar]


def _umbrella(p: dict[str, float]) -> Pieces:
    cr, ch, sl = p["canopy_radius"], p["canopy_height"], p["shaft_length"]
    phi = np.linspace(0.0, math.pi / 2, 7)
    under = np.stack([0.97 * cr * np.sin(phi), 0.75 * ch * np.cos(phi)], axis=1)  # axis -> rim, underneath
    over = np.stack([cr * np.sin(phi[::-1]), ch * np.cos(phi[::-1])], axis=1)  # rim -> axis, on top
    over[-1, 0] = 0.0
    canopy = revolve(np.concatenate([under, over]), 8, creases=(6, 7))  # 8 panels
    shaft = cylinder(0.025, ch + sl, 8).moved(y=-sl)
    hook = torus(0.1, 0.025, 10, 6, arc_deg=180.0).rotated("x", 90.0).rotated("z", 90.0).moved(0.1, -sl, 0.0)
    return [canopy], [shaft, hook]


def _bed(p: dict[str, float]) -> Pieces:
    w, length, hb = p["width"], p["length"], p["headboard_height"]
    frame = box(w, 0.25, length).moved(y=0.245)
    mattress = box(w - 0.06, 0.22, length - 0.06).moved(y=0.47)
    head = box(w, 0.47 + hb, 0.08).moved(0.0, 0.12 + (0.47 + hb) / 2, -length / 2 + 0.04)  # head at -Z
    foot = box(w, 0.45, 0.06).moved(0.0, 0.12 + 0.225, length / 2 - 0.03)
    pillow = box(0.6 * w, 0.12, 0.35).moved(0.0, 0.62, -length / 2 + 0.3)
    return [frame, mattress, head, foot, pillow], _legs(w / 2 - 0.06, length / 2 - 0.06, 0.125, 0.08)
