"""Slice geometry of a scan: find stacks of slices that are not a regular grid (a tilted
gantry, missing or unevenly spaced slices) and resample them onto one. The slices' positions
come from a DICOM series' headers or from a sheared NIfTI sform (``nifti_header``).

ITK's series reader stacks the slices as if slice ``k`` lay at ``first + k * mean gap`` along
the slices' normal. Head CT is often acquired with a tilted gantry (slices stacked obliquely,
each shifted in its own plane) and PACS exports sometimes miss slices; read that way, the
volume is sheared or stretched by up to centimetres, and a sinus box in RAS mm (from Slicer,
which regularises such series, or from a report) falls on other anatomy. A scan whose slices
lie within ``TOLERANCE_MM`` of a regular grid is left exactly as read.

Everything here is in LPS millimetres (DICOM and ITK); arrays are indexed ``[k, j, i]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from paranasal_ssl.errors import InputError

# A slice this far from where a regular grid puts it moves the scan by a tenth of a typical
# 1 mm voxel, a twentieth of the 2 mm analysis grid: below that, resampling costs more than
# it corrects (DICOM positions are rounded decimal strings).
TOLERANCE_MM = 0.1
# Two slices closer than this along the normal are the same slice twice (mixed acquisitions).
SAME_POSITION_MM = 0.01
# Wider than this between neighbouring slices, slices are missing over a third of a maxillary
# sinus's height (30-40 mm): interpolating across would invent what the crop is judged on.
# Two missing 5 mm slices (15 mm) still read.
MAX_GAP_MM = 15.0
NOTE_KEY = "paranasal_ssl:geometry_note"  # image metadata: what regularising changed

PathLike = Union[str, Path]


@dataclass(frozen=True)
class SliceStack:
    """Where the slices of a series lie (file ``k`` = slice ``k``), from their DICOM headers.

    ``positions``: (n, 3) ImagePositionPatient, LPS mm; ``row`` / ``column``: unit vectors of
    increasing ``i`` / ``j`` (ImageOrientationPatient); ``pixel_spacing``: (along i, along j)
    mm; ``shape``: (rows, columns) of every slice.
    """

    positions: np.ndarray
    row: np.ndarray
    column: np.ndarray
    pixel_spacing: Tuple[float, float]
    shape: Tuple[int, int]

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the slices, signed so that the slices follow it in file order."""
        normal = np.cross(self.row, self.column)
        return normal if (self.positions[-1] - self.positions[0]) @ normal >= 0 else -normal

    def offsets(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, w): each slice's offset from slice 0 along row, column and normal, mm."""
        d = self.positions - self.positions[0]
        return d @ self.row, d @ self.column, d @ self.normal

    def slice_gap(self) -> float:
        """The regular grid's slice spacing: the median distance between neighbours along the
        normal, mm (so a missing slice does not stretch it)."""
        return float(np.median(np.diff(self.offsets()[2])))

    def misplacement_mm(self) -> float:
        """Largest distance between a slice and where a regular grid from slice 0 puts it."""
        k = np.arange(len(self.positions))[:, None]
        regular = self.positions[0] + k * self.slice_gap() * self.normal
        return float(np.linalg.norm(self.positions - regular, axis=1).max())

    def is_regular(self) -> bool:
        return len(self.positions) < 3 or self.misplacement_mm() <= TOLERANCE_MM

    def tilt_degrees(self) -> float:
        """Angle between the stacking direction (first to last slice) and the normal."""
        step = self.positions[-1] - self.positions[0]
        cosine = abs(step @ self.normal) / max(np.linalg.norm(step), 1e-9)
        return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))

    def describe(self) -> str:
        """One sentence for the user: what is irregular and what was done about it."""
        gaps = np.diff(self.offsets()[2])
        parts = []
        tilt = self.tilt_degrees()
        if tilt > 0.1:
            parts.append(f"slices stacked {tilt:.1f} deg off their normal (gantry tilt)")
        if gaps.max() - gaps.min() > TOLERANCE_MM:
            parts.append(f"slice gaps of {gaps.min():.2f} to {gaps.max():.2f} mm "
                         "(missing or unevenly spaced slices)")
        sx, sy = self.pixel_spacing
        return (f"{'; '.join(parts) or 'slices off a regular grid'}: resampled onto a regular "
                f"{sx:.3g} x {sy:.3g} x {self.slice_gap():.3g} mm grid perpendicular to the "
                "slices (linear interpolation, as Slicer's acquisition-geometry regularisation)")


def stack_from_series_reader(reader: sitk.ImageSeriesReader, image: sitk.Image,
                             source: PathLike) -> SliceStack:
    """The stack of a series read with ``MetaDataDictionaryArrayUpdateOn``; ``image`` is what
    the reader returned (its pixel spacing and slice size)."""
    n = image.GetDepth()
    positions, orientations = [], []
    for k in range(n):
        for key, name in (("0020|0032", "ImagePositionPatient"),
                          ("0020|0037", "ImageOrientationPatient")):
            if not reader.HasMetaDataKey(k, key):
                raise InputError(source, f"slice {k + 1} of {n} has no {name} ({key})",
                                 expected="a DICOM series with 3D geometry in every slice")
        positions.append(_numbers(reader.GetMetaData(k, "0020|0032"), 3, source, k))
        orientations.append(_numbers(reader.GetMetaData(k, "0020|0037"), 6, source, k))
    sx, sy = image.GetSpacing()[:2]
    return checked_stack(np.array(positions), np.array(orientations), (sx, sy),
                          (image.GetHeight(), image.GetWidth()), source)


def stack_from_datasets(datasets: Sequence, source: PathLike) -> SliceStack:
    """The stack of pydicom datasets (headers of the series' files, in slice order)."""
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    # DICOM PixelSpacing is (between rows, between columns) = (along j, along i)
    return checked_stack(positions, orientations, (column_spacing, row_spacing),
                          (int(datasets[0].Rows), int(datasets[0].Columns)), source)


def enhanced_frames(ds) -> Optional[Tuple[np.ndarray, np.ndarray, Tuple[float, float],
                                           Tuple[int, int]]]:
    """Per-frame geometry of a multi-frame (Enhanced CT/MR) pydicom dataset, in frame order:
    positions (n, 3) and orientations (n, 6) in LPS, pixel spacing (along i, along j) mm and
    (rows, columns). None when the file does not give every frame a position (older
    multi-frame objects: GDCM's geometry is all there is)."""
    frames = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    shared = shared[0] if shared else None

    def value(group, sequence: str, attribute: str):
        for place in (group, shared):  # a frame's own value, else the shared one
            items = getattr(place, sequence, None) if place is not None else None
            if items and getattr(items[0], attribute, None) is not None:
                return getattr(items[0], attribute)
        return None

    if not frames:
        return None
    positions, orientations = [], []
    for group in frames:
        position = value(group, "PlanePositionSequence", "ImagePositionPatient")
        orientation = value(group, "PlaneOrientationSequence", "ImageOrientationPatient")
        if position is None or orientation is None:
            return None
        positions.append([float(v) for v in position])
        orientations.append([float(v) for v in orientation])
    spacing = value(frames[0], "PixelMeasuresSequence", "PixelSpacing")
    if spacing is None:
        return None
    # DICOM PixelSpacing is (between rows, between columns) = (along j, along i)
    return (np.array(positions), np.array(orientations), (float(spacing[1]), float(spacing[0])),
            (int(ds.Rows), int(ds.Columns)))


def frame_stack(positions: np.ndarray, orientations: np.ndarray,
                pixel_spacing: Tuple[float, float], shape: Tuple[int, int]) -> SliceStack:
    """The frames as they are in the file (any order): what a SEG frame refers to."""
    row = orientations[0][:3] / np.linalg.norm(orientations[0][:3])
    column = orientations[0][3:] / np.linalg.norm(orientations[0][3:])
    return SliceStack(np.asarray(positions, float), row, column, pixel_spacing, shape)


def sorted_stack(positions: np.ndarray, orientations: np.ndarray,
                 pixel_spacing: Tuple[float, float], shape: Tuple[int, int],
                 source: PathLike) -> Tuple[SliceStack, np.ndarray]:
    """The frames in position order along their normal (``checked_stack``), and that order
    (the frame index of each slice): a multi-frame file need not store them in order."""
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    order = np.argsort(np.asarray(positions) @ normal, kind="stable")
    return checked_stack(positions[order], orientations[order], pixel_spacing, shape,
                         source), order


def regularise(image: sitk.Image, stack: SliceStack) -> sitk.Image:
    """``image`` (slice ``k`` at ``stack.positions[k]``) resampled onto a regular grid oriented
    like the slices, with their pixel spacing and ``stack.slice_gap()`` between slices, wide
    enough to hold every slice (the margin a tilt adds is filled with the scan's minimum).
    Linear interpolation between the two nearest slices; integer scans stay integer (HU)."""
    u, v, w = stack.offsets()
    gap = stack.slice_gap()
    sx, sy = stack.pixel_spacing
    rows, columns = stack.shape
    u0, v0 = float(u.min()), float(v.min())
    out_shape = (int(np.floor(w[-1] / gap + 1e-3)) + 1,
                 int(round((v.max() - v0) / sy)) + rows,
                 int(round((u.max() - u0) / sx)) + columns)
    array = sitk.GetArrayViewFromImage(image)
    fill = float(array.min())
    out = np.empty(out_shape, np.float32)

    def placed(k: int) -> np.ndarray:
        # output pixel (J, I) lies at v0 + J sy, u0 + I sx; slice k's pixel (j, i) at
        # v_k + j sy, u_k + i sx: a shift by ((v0 - v_k) / sy, (u0 - u_k) / sx)
        return ndimage.affine_transform(
            array[k].astype(np.float32), np.ones(2), offset=((v0 - v[k]) / sy, (u0 - u[k]) / sx),
            output_shape=out_shape[1:], order=1, mode="constant", cval=fill)

    for z in range(out_shape[0]):
        depth = z * gap
        b = int(np.clip(np.searchsorted(w, depth), 1, len(w) - 1))
        a = b - 1
        t = float(np.clip((depth - w[a]) / (w[b] - w[a]), 0.0, 1.0))
        out[z] = placed(a) if t < 1e-4 else placed(b) if t > 1 - 1e-4 else \
            (1 - t) * placed(a) + t * placed(b)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(array.dtype)
    result = sitk.GetImageFromArray(out)
    result.SetSpacing((sx, sy, gap))
    result.SetOrigin(tuple(stack.positions[0] + u0 * stack.row + v0 * stack.column))
    result.SetDirection(tuple(np.column_stack([stack.row, stack.column,
                                               stack.normal]).ravel()))
    return result


def placed(image: sitk.Image, stack: SliceStack) -> sitk.Image:
    """``image`` (slice ``k`` = the stack's slice ``k``) given the geometry of a regular
    ``stack``: its first slice's position, pixel spacing and slice gap, row / column / normal."""
    image.SetSpacing((*stack.pixel_spacing, stack.slice_gap() if len(stack.positions) > 1
                      else 1.0))
    image.SetOrigin(tuple(stack.positions[0]))
    image.SetDirection(tuple(np.column_stack([stack.row, stack.column, stack.normal]).ravel()))
    return image


def regularised(image: sitk.Image, stack: SliceStack, note_suffix: str = "",
                source: Optional[PathLike] = None) -> sitk.Image:
    """``regularise`` with the note saying what was done (``NOTE_KEY``: ``scan_notes``).
    Raises ``InputError`` naming ``source`` where neighbouring slices lie more than
    ``MAX_GAP_MM`` apart (slices missing: nothing to analyse there but interpolation)."""
    gaps = np.diff(stack.offsets()[2])
    if len(gaps) and gaps.max() > MAX_GAP_MM:
        k = int(gaps.argmax())
        raise InputError(source, f"slices {k + 1} and {k + 2} of {len(gaps) + 1} lie "
                         f"{gaps[k]:.1f} mm apart along the slice normal, the series' usual gap "
                         f"being {stack.slice_gap():.2f} mm: slices are missing there"
                         f"{note_suffix}", field="slice positions",
                         expected=f"a complete series (at most {MAX_GAP_MM:g} mm between "
                         "neighbouring slices): export or copy it again")
    regular = regularise(image, stack)
    regular.SetMetaData(NOTE_KEY, stack.describe() + note_suffix)
    return regular


def on_source_slices(labels: sitk.Image, stack: SliceStack) -> np.ndarray:
    """A label image (any grid) sampled at the pixels of each slice of ``stack``, nearest
    neighbour: uint8 ``[k, j, i]``, slice ``k`` = file ``k`` (what a DICOM SEG frame needs)."""
    rows, columns = stack.shape
    direction = tuple(np.column_stack([stack.row, stack.column, stack.normal]).ravel())
    out = np.zeros((len(stack.positions), rows, columns), np.uint8)
    for k, position in enumerate(stack.positions):
        reference = sitk.Image(columns, rows, 1, sitk.sitkUInt8)
        reference.SetSpacing((*stack.pixel_spacing, 1.0))
        reference.SetOrigin(tuple(position))
        reference.SetDirection(direction)
        sampled = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                sitk.sitkUInt8)
        out[k] = sitk.GetArrayViewFromImage(sampled)[0]
    return out


def _numbers(text: str, count: int, source: PathLike, k: int) -> np.ndarray:
    try:
        values = [float(v) for v in text.strip().split("\\")]
    except ValueError:
        values = []
    if len(values) != count:
        raise InputError(source, f"slice {k + 1}: cannot read {count} numbers from {text!r}",
                         expected="DICOM position / orientation values")
    return np.array(values)


def checked_stack(positions: np.ndarray, orientations: np.ndarray,
                  pixel_spacing: Tuple[float, float], shape: Tuple[int, int],
                  source: PathLike) -> SliceStack:
    """Refuse stacks no single grid can hold: slices of different orientations, or two slices
    at the same place (a folder mixing acquisitions under one series)."""
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        k = int(np.abs(orientations - orientations[0]).max(axis=1).argmax())
        raise InputError(source, f"slice {k + 1} is oriented differently from slice 1 "
                         "(ImageOrientationPatient)",
                         expected="one stack of parallel slices (a localizer mixed in?)")
    row = orientations[0][:3] / np.linalg.norm(orientations[0][:3])
    column = orientations[0][3:] / np.linalg.norm(orientations[0][3:])
    stack = SliceStack(positions, row, column, pixel_spacing, shape)
    gaps = np.diff(stack.offsets()[2])
    if len(gaps) and gaps.min() < SAME_POSITION_MM:
        k = int(gaps.argmin())
        raise InputError(source, f"slices {k + 1} and {k + 2} lie {gaps[k]:.3f} mm apart "
                         "along the slice normal", expected="distinct slices in position order "
                         "(two acquisitions mixed in one series?)")
    return stack
