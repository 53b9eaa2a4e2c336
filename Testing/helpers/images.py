"""Small synthetic images with non-trivial geometry, and a DICOM series writer for tests."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.scan_io import image_from_array


def rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    r = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def oblique_image(shape=(20, 30, 40), spacing=(0.7, 0.9, 2.5), degrees=17.0, seed=0,
                  dtype=np.int16) -> sitk.Image:
    """An image ``[k, j, i]`` of ``shape`` with anisotropic spacing and an oblique direction."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, size=shape).astype(dtype)
    direction = rotation(2, degrees) @ rotation(0, degrees / 2)
    return image_from_array(array, spacing, (-12.5, 30.25, 7.0), direction.ravel())


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str | None = None,
                       description: str = "test", positions=None) -> Path:
    """Write ``image`` (int16) as one DICOM file per slice with full geometry tags; slice ``k``
    at ``positions[k]`` (LPS mm) when given (e.g. a tilted gantry), else where ``image`` has it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    series_uid = series_uid or f"1.2.826.0.1.3680043.2.1125.{int(time.time() * 1e3)}.{id(image)}"
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    tags = {
        "0008|0060": "CT",
        "0020|000d": series_uid + ".1",
        "0020|000e": series_uid,
        "0020|0052": series_uid + ".2",  # frame of reference: what a DICOM SEG refers to
        "0010|0020": "phantom",
        "0008|103e": description,
        "0020|0037": "\\".join(f"{v:.10f}" for v in (direction[0], direction[3], direction[6],
                                                      direction[1], direction[4], direction[7])),
        "0028|1052": "0", "0028|1053": "1",
    }
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        for tag, value in tags.items():
            s.SetMetaData(tag, value)
        pos = image.TransformIndexToPhysicalPoint((0, 0, k)) if positions is None else \
            positions[k]
        s.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in pos))
        s.SetMetaData("0020|0013", str(k + 1))
        s.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        s.SetMetaData("0018|0050", f"{image.GetSpacing()[2]:.6f}")
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(s)
    return folder


def write_enhanced_ct(image: sitk.Image, folder: Path, positions=None) -> Path:
    """Write ``image`` as ONE multi-frame DICOM file (a legacy-converted Enhanced CT, as modern
    scanners export), via single-frame files converted with highdicom; frame ``k`` at
    ``positions[k]`` (LPS mm) when given (a tilted gantry, a missing frame). Returns the
    folder."""
    import shutil

    import highdicom as hd
    import pydicom

    singles = write_dicom_series(image, folder.parent / f".{folder.name}-singles")
    datasets = [pydicom.dcmread(f) for f in sorted(singles.glob("*.dcm"))]
    for ds in datasets:  # what SimpleITK's writer leaves out and a CT image has
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets, series_instance_uid=hd.UID(), series_number=1,
        sop_instance_uid=hd.UID(), instance_number=1)
    if positions is not None:  # what the scanner says about each frame
        for group in enhanced.PerFrameFunctionalGroupsSequence:  # frames in the converter's order
            plane = group.PlanePositionSequence[0]
            k = image.TransformPhysicalPointToIndex([float(v) for v in
                                                     plane.ImagePositionPatient])[2]
            plane.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
    folder.mkdir(parents=True, exist_ok=True)
    enhanced.save_as(folder / "enhanced.dcm")
    shutil.rmtree(singles)
    return folder


def tilted_copy(scan: sitk.Image, degrees: float):
    """``scan`` as a tilted gantry acquires it: slices parallel to its own, each shifted along
    j by tan(degrees) x its distance from the middle slice. Returns (slices as an image, each
    slice's position, LPS mm)."""
    direction = np.asarray(scan.GetDirection()).reshape(3, 3)
    spacing = np.asarray(scan.GetSpacing())
    middle = scan.GetDepth() // 2
    positions, slices = [], []
    for k in range(scan.GetDepth()):
        position = np.asarray(scan.TransformIndexToPhysicalPoint((0, 0, k))) + \
            (k - middle) * spacing[2] * np.tan(np.deg2rad(degrees)) * direction[:, 1]
        reference = sitk.Image(scan.GetWidth(), scan.GetHeight(), 1, sitk.sitkFloat32)
        reference.SetSpacing(scan.GetSpacing())
        reference.SetDirection(scan.GetDirection())
        reference.SetOrigin(tuple(position))
        sampled = sitk.Resample(scan, reference, sitk.Transform(), sitk.sitkLinear, -1000.0)
        slices.append(sitk.GetArrayFromImage(sampled)[0])
        positions.append(tuple(position))
    image = sitk.GetImageFromArray(np.rint(np.stack(slices)).astype(np.int16))
    image.CopyInformation(scan)
    return image, positions


def write_dicom_cd(series_folders, cd: Path) -> Path:
    """The series (folders of ``write_dicom_series``) as a DICOM CD writes them: a DICOMDIR at
    ``cd`` and the slices as ``PT000000/ST000000/SE00000n/IM00000k``, no file suffix (pydicom's
    FileSet). Returns ``cd``."""
    import pydicom
    from pydicom.fileset import FileSet

    fileset = FileSet()
    for number, folder in enumerate(series_folders, start=1):
        for path in sorted(Path(folder).glob("*.dcm")):
            ds = pydicom.dcmread(path)
            # what a scanner's CD has and SimpleITK's writer leaves empty
            ds.PatientName, ds.StudyID, ds.SeriesNumber = "Phantom^Test", "1", number
            ds.StudyDate, ds.StudyTime = "20260101", "120000"
            ds.InstanceNumber = ds.get("InstanceNumber") or 1
            fileset.add(ds)
    fileset.write(cd)
    return cd
