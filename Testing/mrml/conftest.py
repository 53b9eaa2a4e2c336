"""A real MRML scene without the Slicer application (slicer-core), for the ParanasalSSLLib tests.

``ParanasalSSLLib.headless`` builds what the application would (default colour tables, module
logics, Red/Yellow/Green slice views that render without Qt/OpenGL); the fixtures install it as
``slicer.mrmlScene`` / ``slicer.modules`` and restore the previous values afterwards.
"""

from __future__ import annotations

import os
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
def sickCase(slicerApp, tiny_cohort):
    """A case of the tiny cohort with an opacified sinus (heat for the tiny model), loaded the
    way Slicer loads a file, with a markups ROI node per side at the manifest's boxes."""
    import types

    import slicer

    from paranasal_ssl.manifest import read_manifest
    from ParanasalSSLLib import analysis, mrml_bridge

    records = read_manifest(tiny_cohort)
    sick = next(r for r in records if {"complete_opacification", "partial_opacification"}
                & set(r.anomaly_types))
    case = {r.side: r for r in records if r.case_id == sick.case_id}
    scan = slicer.modules.volumes.logic().AddArchetypeVolume(str(sick.image), "sinus CT")
    rois = {side: mrml_bridge.addRoiNode(r.roi, analysis.roiNodeName(side))
            for side, r in case.items()}
    return types.SimpleNamespace(scan=scan, rois=rois, records=case, sickSide=sick.side,
                                 image=sick.image)


@pytest.fixture
def secondScene():
    """Another independent scene with the same module logics (e.g. to reload a saved scene)."""
    headless = makeHeadlessSlicer(sliceViews=False)
    yield headless
    headless.scene.Clear(1)


# -- stand-ins for the PythonQt widgets of the module panel ----------------------------------
# The panel's Qt widgets exist only inside Slicer (PythonQt). These stand-ins carry exactly the
# widget names of the .ui file and emit the signals Qt would, so the panels' own code (what they
# record, show and start) runs here against the real scene, jobs and command line.

UI_FILE = MODULE_DIR / "Resources" / "UI" / "ParanasalSSL.ui"


class StandInWidget:
    def __init__(self):
        self.slots, self.text, self.toolTip, self.enabled, self.visible = {}, "", "", True, True
        self._checked, self._index, self.items = False, 0, []
        self.value, self.maximum = 0, 100

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        import inspect

        for slot in self.slots.get(signal, []):
            params = inspect.signature(slot).parameters.values()
            if not any(p.kind == p.VAR_POSITIONAL for p in params):
                args = args[:len(params)]  # PythonQt drops arguments a slot does not take
            slot(*args)

    def click(self):
        self.emit("clicked(bool)", False)

    def addItems(self, items):
        self.items += items

    def clear(self):  # QPlainTextEdit
        self.text = ""

    def appendPlainText(self, line):
        self.text += ("\n" if self.text else "") + line

    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        if value != self._checked:
            self._checked = value
            self.emit("toggled(bool)", value)

    @property
    def currentIndex(self):
        return self._index

    @currentIndex.setter
    def currentIndex(self, value):
        if value != self._index:
            self._index = value
            self.emit("currentIndexChanged(int)", value)


class StandInShortcut(StandInWidget):
    made = {}

    def __init__(self, keys, parent):
        super().__init__()
        StandInShortcut.made[keys.key] = self

    def setEnabled(self, on):
        self.enabled = on

    def setParent(self, parent):
        pass


class StandInTimer(StandInWidget):
    """A QTimer that never fires by itself: the test calls ``fire()`` (or polls the job)."""

    def __init__(self):
        super().__init__()
        self.active, self.interval = False, None

    def setInterval(self, ms):
        self.interval = ms

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def fire(self):
        self.emit("timeout()")


@pytest.fixture
def standIns(slicerApp, tmp_path, monkeypatch):
    """``ui`` (a stand-in per widget name of the .ui file), and ``qt`` / ``slicer.app``
    stand-ins installed for the test (testing mode: message boxes are only logged)."""
    import types
    import xml.etree.ElementTree as ET

    import slicer

    names = [w.get("name") for w in ET.parse(UI_FILE).getroot().iter("widget")]
    qt = types.SimpleNamespace(
        QShortcut=StandInShortcut, QKeySequence=lambda key: types.SimpleNamespace(key=key),
        QTimer=StandInTimer, QMessageBox=types.SimpleNamespace(Ok=1024, Critical=3),
        QFileDialog=types.SimpleNamespace(getExistingDirectory=lambda *a: str(tmp_path / "x")),
        Qt=types.SimpleNamespace(WaitCursor=0))
    monkeypatch.setitem(sys.modules, "qt", qt)
    app = types.SimpleNamespace(setOverrideCursor=lambda c: None, testingEnabled=lambda: True,
                                restoreOverrideCursor=lambda: None, topLevelWidgets=lambda: [],
                                applicationName="Slicer",
                                applicationLogic=lambda: slicerApp.appLogic)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    # inside Slicer, jobs run `PythonSlicer` (found on PATH): here it is this interpreter
    bin = tmp_path / "slicer-bin"
    bin.mkdir()
    (bin / "PythonSlicer").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin / "PythonSlicer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin}{os.pathsep}{os.environ.get('PATH', '')}")
    return types.SimpleNamespace(ui=types.SimpleNamespace(**{n: StandInWidget() for n in names}),
                                 qt=qt, shortcuts=StandInShortcut.made)
