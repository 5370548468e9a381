"""TriplaneDecoder and TriplaneField: output ranges, split planes, the SurfaceField contract."""

from __future__ import annotations

import math

import pytest
import torch

from fourview.errors import InputError
from fourview.recon.decoder import (
    DecoderConfig,
    DecoderOutput,
    TriplaneDecoder,
    TriplaneField,
    decode_triplane,
    volume_density,
)
from fourview.recon.fields import SurfaceField
from fourview.recon.triplane import sample_triplane_reference
from fourview.recon.unet import TriplaneUNet, tiny_config


def _feats(*lead: int, c: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, 3, c, generator=g)


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_density_decoder_shapes_and_ranges(merge):
    dec = TriplaneDecoder(DecoderConfig(hidden_channels=16, hidden_layers=2, merge=merge), plane_channels=4)
    out = dec(_feats(2, 5, 7))
    assert out.density.shape == (2, 5, 7) and out.rgb.shape == (2, 5, 7, 3) and out.sdf is None
    assert (out.density > 0).all() and torch.isfinite(out.density).all()
    assert (out.rgb > 0).all() and (out.rgb < 1).all()


def test_density_is_exp_of_the_clamped_raw_output():
    cfg = DecoderConfig(hidden_channels=8, hidden_layers=1, density_log_clamp=6.0)
    dec = TriplaneDecoder(cfg, plane_channels=4)
    last = dec.trunk[-1]
    with torch.no_grad():
        last.weight.zero_()
        for raw, want in [(1e4, math.exp(6.0)), (-1e4, math.exp(-6.0)), (0.5, math.exp(0.5))]:
            last.bias.copy_(torch.tensor([raw, 1e4, -1e4, 0.0]))
            out = dec(_feats(10))
            torch.testing.assert_close(out.density, torch.full((10,), want), rtol=1e-5, atol=0)
            assert torch.isfinite(out.density).all()
            assert out.rgb[:, 0].min() > 0.999 and out.rgb.max() <= 1.0  # sigmoid saturates within [0, 1]
            assert out.rgb[:, 1].max() < 1e-3
            torch.testing.assert_close(out.rgb[:, 2], torch.full((10,), 0.5))


def test_sdf_decoder_is_signed_and_unsquashed():
    dec = TriplaneDecoder(DecoderConfig(geometry="sdf"), plane_channels=4)
    with torch.no_grad():
        dec.trunk[-1].bias[0] = -3.0
    out = dec(_feats(100))
    assert out.density is None and out.sdf.shape == (100,)
    assert out.sdf.min() < -1.0  # not squashed to a range


def test_deformation_head_only_for_sdf_decoders():
    for split in (None, 4):
        dec = TriplaneDecoder(
            DecoderConfig(geometry="sdf", deformation=True), plane_channels=4, texture_channels=split
        )
        tex = None if split is None else _feats(7)
        out = dec(_feats(7), tex)
        assert out.sdf.shape == (7,) and out.deform.shape == (7, 3) and out.rgb.shape == (7, 3)
    assert TriplaneDecoder(DecoderConfig(geometry="sdf"), plane_channels=4)(_feats(7)).deform is None
    with pytest.raises(InputError, match="deformation needs geometry='sdf'"):
        DecoderConfig(geometry="density", deformation=True)


def test_sum_merge_is_symmetric_in_the_planes_and_concat_is_not():
    f = _feats(50)
    perm = f[:, [2, 0, 1]]
    summed = TriplaneDecoder(DecoderConfig(merge="sum"), plane_channels=4)
    concat = TriplaneDecoder(DecoderConfig(merge="concat"), plane_channels=4)
    torch.testing.assert_close(summed(f).density, summed(perm).density)
    assert (concat(f).density - concat(perm).density).abs().max() > 1e-5


def test_split_decoder_reads_geometry_and_texture_planes_separately():
    dec = TriplaneDecoder(DecoderConfig(geometry="sdf"), plane_channels=4, texture_channels=6)
    geo, tex = _feats(20, c=4, seed=1), _feats(20, c=6, seed=2)
    base = dec(geo, tex)
    other_tex = dec(geo, _feats(20, c=6, seed=3))
    other_geo = dec(_feats(20, c=4, seed=4), tex)
    torch.testing.assert_close(base.sdf, other_tex.sdf)  # geometry ignores the texture planes
    torch.testing.assert_close(base.rgb, other_geo.rgb)  # colour ignores the geometry planes
    assert (base.rgb - other_tex.rgb).abs().max() > 1e-5
    assert (base.sdf - other_geo.sdf).abs().max() > 1e-5
    with pytest.raises(InputError, match="texture_features are required"):
        dec(geo)


def test_decoder_input_errors():
    dec = TriplaneDecoder(DecoderConfig(), plane_channels=4)
    with pytest.raises(InputError, match=r"\[\.\.\., 3, 4\]"):
        dec(torch.zeros(5, 3, 5))
    with pytest.raises(InputError, match="must be None"):
        dec(_feats(5), _feats(5))
    with pytest.raises(InputError, match="merge"):
        DecoderConfig(merge="mean")


def test_for_unet_matches_the_unet_planes():
    cfg = tiny_config(split_planes=True)
    dec = TriplaneDecoder.for_unet(DecoderConfig(geometry="sdf"), cfg)
    assert (dec.plane_channels, dec.texture_channels) == (cfg.plane_channels, cfg.texture_channels)
    assert TriplaneDecoder.for_unet(DecoderConfig(), tiny_config()).texture_channels is None


# ---------------------------------------------------------------- TriplaneField (with sample_triplane)


def _points(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * 2 - 1  # [N, 3] in [-1, 1]


def test_field_is_a_surface_field_and_matches_the_grid_sample_reference():
    planes = torch.randn(1, 3, 4, 8, 8)
    dec = TriplaneDecoder(DecoderConfig(hidden_channels=16, hidden_layers=2), plane_channels=4)
    field = TriplaneField(dec, planes[0], chunk_size=7)
    assert isinstance(field, SurfaceField)
    xyz = _points(50)
    with torch.no_grad():
        want = dec(sample_triplane_reference(planes, xyz[None]))
        density, rgb = field.density_and_color(xyz)
        sdf = field.sdf(xyz)
        color = field.color(xyz.double())  # moved to the planes' dtype
    torch.testing.assert_close(density, want.density[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rgb, want.rgb[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(color, want.rgb[0], rtol=1e-5, atol=1e-6)
    assert sdf.shape == (50,) and color.shape == (50, 3) and color.dtype == torch.float32
    # the level function of a density field: negative exactly where density exceeds the iso value
    iso = dec.config.density_iso
    torch.testing.assert_close(sdf, math.log(iso) - torch.log(density))
    assert torch.equal(sdf < 0, density > iso)


def test_field_of_sdf_decoder_reads_as_log_density_and_handles_no_points():
    dec = TriplaneDecoder(DecoderConfig(geometry="sdf", density_iso=6.0), plane_channels=4, texture_channels=2)
    field = TriplaneField(dec, torch.randn(3, 4, 8, 8), texture_planes=torch.randn(3, 2, 16, 16))
    assert field.sdf(_points(9)).shape == (9,)
    assert field.color(torch.zeros(0, 3)).shape == (0, 3)
    xyz = _points(30)
    with torch.no_grad():
        density, rgb = field.density_and_color(xyz)
        sdf = field.sdf(xyz)
    # volume_density inverts TriplaneField.sdf of a density field: the zero level is density_iso
    torch.testing.assert_close(density, 6.0 * torch.exp(-sdf))
    torch.testing.assert_close(math.log(6.0) - torch.log(density), sdf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rgb, field.color(xyz))
    far = volume_density(dec.config, DecoderOutput(rgb=rgb[:2], sdf=torch.tensor([-1e4, 1e4])))
    assert torch.isfinite(far).all() and float(far[1]) > 0  # clamped like the density activation
    with pytest.raises(InputError, match=r"\[N, 3\]"):
        field.sdf(torch.zeros(4, 2))


def test_unet_to_field_end_to_end_with_gradients():
    """Tiny U-Net -> split planes -> decode_triplane: gradients reach the U-Net's first layer."""
    cfg = tiny_config(split_planes=True)
    unet = TriplaneUNet(cfg)
    dec = TriplaneDecoder.for_unet(DecoderConfig(geometry="sdf"), cfg)
    out = unet(torch.rand(2, 4, 3, cfg.view_resolution, cfg.view_resolution), 20.0)
    xyz = torch.rand(2, 64, 3) * 2 - 1  # [B, N, 3]
    dec_out = decode_triplane(dec, out.planes, xyz, out.texture_planes)
    assert dec_out.sdf.shape == (2, 64) and dec_out.rgb.shape == (2, 64, 3)
    (dec_out.sdf.square().mean() + dec_out.rgb.mean()).backward()
    assert unet.conv_in.weight.grad.abs().max() > 0
    assert unet.geometry_head.conv.weight.grad.abs().max() > 0
    field = TriplaneField(dec, out.planes[:1].detach(), out.texture_planes[:1].detach())
    with torch.no_grad():
        torch.testing.assert_close(field.sdf(xyz[0]), dec_out.sdf[0].detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("texture_channels", [None, 4])
def test_a_generator_draws_the_default_initialisation_and_leaves_the_global_one_alone(texture_channels):
    cfg = DecoderConfig(hidden_channels=8, hidden_layers=2, geometry="sdf", deformation=True)
    torch.manual_seed(7)
    reference = TriplaneDecoder(cfg, 4, texture_channels)  # torch's own initialisation of nn.Linear
    torch.manual_seed(123)
    state = torch.get_rng_state()
    seeded = TriplaneDecoder(cfg, 4, texture_channels, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert reference.state_dict().keys() == seeded.state_dict().keys()
    for k, v in reference.state_dict().items():
        assert torch.equal(seeded.state_dict()[k], v), k
