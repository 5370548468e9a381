"""`ReconConfig`: everything that sizes the reconstructor (U-Net, decoder, renderer), and its presets.

A config is stored as JSON next to the weights (``to_json`` / ``from_json``). Reading is strict:
an unknown or missing key, at any level, is an `InputError`, so that a typo never silently falls
back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from fourview.errors import InputError
from fourview.recon.carving import CarveConfig
from fourview.recon.decoder import DecoderConfig
from fourview.recon.unet import UNetConfig, demo_config, full_config, tiny_config

__all__ = ["CarveConfig", "DecoderConfig", "ReconConfig", "UNetConfig", "recon_preset"]


@dataclass(frozen=True)
class ReconConfig:
    """The reconstructor: U-Net, decoder and how its triplanes are rendered in training.

    ``renderer`` and ``decoder.geometry`` go together: the volume renderer needs a density, DMTet an SDF.
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    """The triplane U-Net."""
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """The MLP from plane features to geometry and colour."""
    renderer: Literal["volume", "dmtet"] = "volume"
    """Training renderer: volumetric ray marching (stage A) or DMTet + rasterisation (stage B)."""
    render_resolution: int = 128
    """Side of the images rendered for the loss, pixels."""
    samples_per_ray: int = 128
    """Ray-marching samples per pixel (renderer "volume")."""
    tet_grid_resolution: int = 256
    """Cells per side of the DMTet tetrahedral grid over [-1, 1]^3 (renderer "dmtet")."""
    carve: CarveConfig = field(default_factory=CarveConfig)
    """Inference: keep the predicted geometry inside the input views' visual hull (`fourview.recon.carving`)."""

    def __post_init__(self) -> None:
        if self.renderer not in ("volume", "dmtet"):
            raise InputError(f"ReconConfig.renderer must be 'volume' or 'dmtet', got {self.renderer!r}")
        wanted = "density" if self.renderer == "volume" else "sdf"
        if self.decoder.geometry != wanted:
            raise InputError(
                f"ReconConfig: renderer {self.renderer!r} needs decoder.geometry={wanted!r}, "
                f"got {self.decoder.geometry!r}"
            )
        for name in ("render_resolution", "samples_per_ray", "tet_grid_resolution"):
            if getattr(self, name) < 1:
                raise InputError(f"ReconConfig.{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), the JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReconConfig:
        """Inverse of `to_dict`.

        Raises:
            InputError: on an unknown or missing key, a wrong kind of value, or an invalid setting.
        """
        return _from_dict(cls, data, "ReconConfig")

    def to_json(self) -> str:
        """`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReconConfig:
        """Inverse of `to_json` (strict, as `from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"ReconConfig JSON is not valid JSON: {err}") from None
        return cls.from_dict(data)


# Keys added to a config after weights with it were shipped: a saved config without them takes the
# field's default (which keeps the old behaviour); every other key must be present.
_ADDED_KEYS: dict[str, set[str]] = {"DecoderConfig": {"deformation"}, "ReconConfig": {"carve"}}


def _from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data``; nested dataclasses recursively, lists to tuples."""
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    missing = sorted(set(fields) - set(data) - _ADDED_KEYS.get(cls.__name__, set()))
    if missing:
        raise InputError(f"{where}: missing key(s) {missing}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _value(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _value(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (int, float, bool, str, None, tuples, unions, Literal)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a list, got {value!r}")
        return tuple(_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Literal:
        if value not in args:
            raise InputError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _value(arg, value, where)
            except InputError:
                pass
        raise InputError(f"{where} must be {' or '.join(getattr(a, '__name__', str(a)) for a in args)}, got {value!r}")
    if hint is type(None):
        if value is not None:
            raise InputError(f"{where} must be null, got {value!r}")
        return None
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise InputError(f"{where} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def recon_preset(
    name: Literal["full", "demo", "tiny"], renderer: Literal["volume", "dmtet"] = "volume"
) -> ReconConfig:
    """A preset size, for stage A (``renderer="volume"``) or stage B (``"dmtet"``, split planes).

    * full: the seed's 300 M-parameter U-Net, 512 views and planes (stage B: geometry 256 / texture
      512), tet grid 256, loss renders at 128 (the volume renderer's ray budget) or 512 (DMTet).
    * demo: 64-pixel views and planes, tet grid 48, renders at 64: trainable on a CPU.
    * tiny: 32-pixel views, 16-texel planes, tet grid 16, renders at 16: tests.

    Raises:
        InputError: on an unknown name or renderer.
    """
    if renderer not in ("volume", "dmtet"):
        raise InputError(f"renderer must be 'volume' or 'dmtet', got {renderer!r}")
    split = renderer == "dmtet"
    geometry: Literal["density", "sdf"] = "density" if renderer == "volume" else "sdf"
    deformation = renderer == "dmtet"  # stage B: SDF plus a deformation per tet-grid vertex
    if name == "full":
        return ReconConfig(
            unet=full_config(split_planes=split),
            decoder=DecoderConfig(hidden_channels=64, hidden_layers=4, geometry=geometry, deformation=deformation),
            renderer=renderer,
            render_resolution=512 if split else 128,
            samples_per_ray=128,
            tet_grid_resolution=256,
        )
    if name == "demo":
        return ReconConfig(
            unet=demo_config(split_planes=split),
            decoder=DecoderConfig(hidden_channels=32, hidden_layers=2, geometry=geometry, deformation=deformation),
            renderer=renderer,
            render_resolution=64,
            samples_per_ray=48,
            tet_grid_resolution=48,
        )
    if name == "tiny":
        return ReconConfig(
            unet=tiny_config(split_planes=split),
            decoder=DecoderConfig(hidden_channels=8, hidden_layers=1, geometry=geometry, deformation=deformation),
            renderer=renderer,
            render_resolution=16,
            samples_per_ray=8,
            tet_grid_resolution=16,
        )
    raise InputError(f"unknown reconstructor preset {name!r}; choose 'full', 'demo' or 'tiny'")
