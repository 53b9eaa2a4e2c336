"""A real MRML scene without the Slicer application (``slicer-core``), for scripts and tests.

Builds what the application would: a scene with the default colour tables, an application
logic, the Colors, Volumes, Markups, Segmentations, SubjectHierarchy and CropVolume module
logics, optional Red/Yellow/Green slice views whose ``vtkMRMLSliceLogic`` renders the blended
layers to an RGBA array without Qt or OpenGL, and a small ``slicer.modules`` stand-in whose
entries return those logics (``install()`` sets it and ``slicer.mrmlScene``).
Never used inside Slicer, where the application provides all of this.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Dict

import numpy as np
import slicer

SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
MODULE_LOGICS = (
    ("colors", "Colors", "vtkMRMLColorLogic"),
    ("volumes", "Volumes", "vtkSlicerVolumesLogic"),
    ("markups", "Markups", "vtkSlicerMarkupsLogic"),
    ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("subjecthierarchy", "SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("cropvolume", "CropVolume", "vtkSlicerCropVolumeLogic"),
)


@dataclass
class HeadlessSlicer:
    scene: object
    appLogic: object
    logics: Dict[str, object]
    sliceLogics: Dict[str, object] = field(default_factory=dict)
    _previous: Dict[str, object] = field(default_factory=dict)

    def install(self) -> HeadlessSlicer:
        """Make ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` point here."""
        self._previous = {n: getattr(slicer, n, None) for n in ("mrmlScene", "modules")}
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(**{
            key: types.SimpleNamespace(logic=(lambda logic=logic: logic))
            for key, logic in self.logics.items()})
        return self

    def close(self) -> None:
        """Clear the scene and restore what ``install()`` replaced."""
        for logic in self.sliceLogics.values():
            logic.SetMRMLScene(None)
        self.scene.Clear(1)
        for name, value in self._previous.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)
        self._previous = {}

    def renderSlice(self, viewName: str = "Red") -> np.ndarray:
        """Blended background+foreground slice of a view: RGBA uint8 [row, col, 4], row 0 at
        the BOTTOM of the view (VTK image order)."""
        from vtkmodules.util.numpy_support import vtk_to_numpy

        producer = self.sliceLogics[viewName].GetImageDataConnection().GetProducer()
        producer.Update()
        image = producer.GetOutputDataObject(0)
        cols, rows, _ = image.GetDimensions()
        return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, cols, -1).copy()


def makeHeadlessSlicer(sliceViews: bool = True, viewSize: int = 128) -> HeadlessSlicer:
    """A new scene with the module logics (and slice views); call ``install()`` to use it
    through ``slicer.mrmlScene`` / ``slicer.util``."""
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
    for key, moduleName, className in MODULE_LOGICS:
        logic = getattr(slicer, className)()
        logic.SetMRMLApplicationLogic(appLogic)
        logic.SetMRMLScene(scene)
        appLogic.SetModuleLogic(moduleName, logic)
        logics[key] = logic
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    headless = HeadlessSlicer(scene, appLogic, logics)
    if sliceViews:
        for viewName, orientation in SLICE_VIEWS.items():
            sliceNode = scene.CreateNodeByClass("vtkMRMLSliceNode")
            sliceNode.SetName(viewName)
            sliceNode.SetLayoutName(viewName)
            sliceNode.SetSingletonTag(viewName)
            sliceNode.SetDimensions(viewSize, viewSize, 1)
            scene.AddNode(sliceNode)
            sliceNode.UnRegister(None)
            sliceNode.SetOrientation(orientation)
            sliceLogic = slicer.vtkMRMLSliceLogic()
            sliceLogic.SetMRMLApplicationLogic(appLogic)
            sliceLogic.SetMRMLScene(scene)
            sliceLogic.SetSliceNode(sliceNode)
            appLogic.GetSliceLogics().AddItem(sliceLogic)
            headless.sliceLogics[viewName] = sliceLogic
    return headless
