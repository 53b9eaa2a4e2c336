"""A real MRML scene without the Slicer application (slicer-core), for the ParanasalSSLLib tests.

``ParanasalSSLLib.headless`` builds what the application would (default colour tables, module
logics, Red/Yellow/Green slice views that render without Qt/OpenGL); the fixtures install it as
``slicer.mrmlScene`` / ``slicer.modules`` and restore the previous values afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "ParanasalSSL"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))  # ParanasalSSLLib importable as inside Slicer

from ParanasalSSLLib.headless import makeHeadlessSlicer  # noqa: E402


@pytest.fixture
def slicerApp():
    """Scene, application logic, module logics and Red/Yellow/Green slice views (128 x 128)."""
    headless = makeHeadlessSlicer(sliceViews=True).install()
    try:
        yield headless
    finally:
        headless.close()


@pytest.fixture
def scene(slicerApp):
    return slicerApp.scene


@pytest.fixture
def secondScene():
    """Another independent scene with the same module logics (e.g. to reload a saved scene)."""
    headless = makeHeadlessSlicer(sliceViews=False)
    yield headless
    headless.scene.Clear(1)
