"""A real MRML scene without the Slicer application (slicer-core), for the ParanasalSSLLib tests.

The fixture builds what the application would: a scene with the default colour tables, an
application logic, the Colors, Volumes, Markups, Segmentations, SubjectHierarchy and CropVolume
module logics, and a small ``slicer.modules`` stand-in whose entries return those logics. It sets
``slicer.mrmlScene`` for ``slicer.util`` and restores the previous values afterwards.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "ParanasalSSL"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))  # ParanasalSSLLib importable as inside Slicer

SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


@dataclass
class SlicerStandIn:
    scene: object
    appLogic: object
    logics: Dict[str, object]
    sliceLogics: Dict[str, object]

    def renderSlice(self, viewName: str = "Red") -> np.ndarray:
        """Blended background+foreground slice of a view as an RGBA uint8 array [row, col, 4]
        (row 0 at the bottom of the view, as VTK stores images)."""
        from vtkmodules.util.numpy_support import vtk_to_numpy

        logic = self.sliceLogics[viewName]
        producer = logic.GetImageDataConnection().GetProducer()
        producer.Update()
        image = producer.GetOutputDataObject(0)
        cols, rows, _ = image.GetDimensions()
        return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, cols, -1).copy()


def _makeStandIn(withSliceViews: bool) -> SlicerStandIn:
    import slicer
    from vtkmodules.vtkCommonCore import vtkCollection, vtkOutputWindow

    out = vtkOutputWindow()
    out.SetDisplayModeToAlwaysStdErr()
    vtkOutputWindow.SetInstance(out)

    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    appLogic.GetColorLogic().SetMRMLScene(scene)
    appLogic.GetColorLogic().AddDefaultColorNodes()
    appLogic.SetSliceLogics(vtkCollection())
    appLogic.SetViewLogics(vtkCollection())
    logics = {}
    for key, moduleName, cls in (
            ("colors", "Colors", slicer.vtkMRMLColorLogic),
            ("volumes", "Volumes", slicer.vtkSlicerVolumesLogic),
            ("markups", "Markups", slicer.vtkSlicerMarkupsLogic),
            ("segmentations", "Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
            ("subjecthierarchy", "SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
            ("cropvolume", "CropVolume", slicer.vtkSlicerCropVolumeLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(appLogic)
        logic.SetMRMLScene(scene)
        appLogic.SetModuleLogic(moduleName, logic)
        logics[key] = logic
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)

    sliceLogics = {}
    if withSliceViews:
        for viewName, orientation in SLICE_VIEWS.items():
            sliceNode = scene.CreateNodeByClass("vtkMRMLSliceNode")
            sliceNode.SetName(viewName)
            sliceNode.SetLayoutName(viewName)
            sliceNode.SetSingletonTag(viewName)
            sliceNode.SetDimensions(128, 128, 1)
            scene.AddNode(sliceNode)
            sliceNode.UnRegister(None)
            sliceNode.SetOrientation(orientation)
            sliceLogic = slicer.vtkMRMLSliceLogic()
            sliceLogic.SetMRMLApplicationLogic(appLogic)
            sliceLogic.SetMRMLScene(scene)
            sliceLogic.SetSliceNode(sliceNode)
            appLogic.GetSliceLogics().AddItem(sliceLogic)
            sliceLogics[viewName] = sliceLogic
    return SlicerStandIn(scene, appLogic, logics, sliceLogics)


@pytest.fixture
def slicerApp():
    """Scene, application logic, module logics and Red/Yellow/Green slice views."""
    import slicer

    previous = {name: getattr(slicer, name, None) for name in ("mrmlScene", "modules")}
    standIn = _makeStandIn(withSliceViews=True)
    slicer.mrmlScene = standIn.scene
    slicer.modules = types.SimpleNamespace(**{
        key: types.SimpleNamespace(logic=(lambda logic=logic: logic))
        for key, logic in standIn.logics.items()})
    try:
        yield standIn
    finally:
        for logic in standIn.sliceLogics.values():
            logic.SetMRMLScene(None)
        standIn.scene.Clear(1)
        for name, value in previous.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)


@pytest.fixture
def scene(slicerApp):
    return slicerApp.scene


@pytest.fixture
def secondScene():
    """Another independent scene with the same module logics (e.g. to reload a saved scene)."""
    standIn = _makeStandIn(withSliceViews=False)
    yield standIn
    standIn.scene.Clear(1)


def nodeCount(scene) -> int:
    return scene.GetNumberOfNodes()
