import sys

import numpy as np
import pytest

from fourview.errors import InputError
from fourview.export.exporter import ExportConfig, export_field
from fourview.export.extract import extract_mesh
from fourview.export.quad_remesh import quad_remesh, split_quads
from fourview.recon.fields import TorusField


def test_without_the_package_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynanoinstantmeshes", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"--quad-remesh needs the optional 'pynanoinstantmeshes' package \(pip"):
        export_field(TorusField(), ExportConfig(resolution=24, face_budget=500, vertex_colors=True, quad_remesh=True))


def test_quads_split_along_the_shorter_diagonal():
    verts = np.array([[0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0], [5, 5, 5]], np.float64)
    tris = split_quads(verts, np.array([[0, 1, 2, 3], [0, 1, 4, 4]]))  # a quad and a triangle written as a quad
    assert sorted(map(tuple, tris)) == sorted([(0, 1, 2), (0, 2, 3), (0, 1, 4)])


def test_remesh_gives_about_the_budget():
    pytest.importorskip("pynanoinstantmeshes")
    mesh = extract_mesh(TorusField(), 64)
    verts, faces = quad_remesh(mesh.verts, mesh.faces, 4000)
    assert 2000 < len(faces) < 8000 and faces.max() < len(verts)
