"""The Khronos glTF validator (npm package ``gltf-validator``), installed by the test set-up.

`validate_glb` installs the validator into ``tests/export/validator/node_modules`` with ``npm ci``
the first time it is needed (the lock file pins the version), then returns its JSON report.
Without Node.js the calling test is skipped with the reason; a failed install fails the test, so a
CI machine with Node never skips validation silently.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

VALIDATOR = Path(__file__).resolve().parent / "export" / "validator"


def ensure_validator() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js/npm not installed; the Khronos glTF validator needs them")
    if (VALIDATOR / "node_modules" / "gltf-validator").is_dir():
        return
    run = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=VALIDATOR, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        pytest.fail(f"could not install the glTF validator with npm ci: {run.stderr.strip()[-500:]}")


def validate_glb(path: Path) -> dict:
    """The validator's report on ``path``; asserts that the validator itself ran."""
    ensure_validator()
    run = subprocess.run(
        ["node", str(VALIDATOR / "validate.mjs"), str(path)], check=False, capture_output=True, text=True, timeout=120
    )
    assert run.returncode in (0, 1), f"validator failed to run: {run.stderr}"
    report = json.loads(run.stdout)
    assert (run.returncode == 1) == (report["issues"]["numErrors"] > 0)
    return report


def issues(report: dict, severity: int) -> list[str]:
    """Messages of one severity (0 error, 1 warning, 2 info, 3 hint)."""
    return [
        f"{m['code']}: {m['message']} ({m.get('pointer', '')})"
        for m in report["issues"]["messages"]
        if m["severity"] == severity
    ]
