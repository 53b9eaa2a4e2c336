"""Stage 2: residual maps of every crop of the manifest, cached by sinus and CAE checkpoint(s).

Output folder ``RUN/residuals/<cae key>/``: one float16 ``(n, S, S, S)`` file of raw
median-filtered residuals per sinus (``<sinus key>.npy``; with ``cae.ensemble > 1`` the mean
of the members' maps), ``scores.csv`` (the zero-label baseline: a residual score per sinus)
and ``calibration.json`` (the scale that puts normal training residuals at 0.5 on the
heatmap). A rerun with the same inputs recomputes nothing. When the run fine-tunes with the
residual fusion, the same CAE pass also writes the focal maps it will read
(``residual_fusion.focal_folder``), so the CAE runs once per crop for both.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from paranasal_ssl.atomic import atomic_path, write_json, write_text
from paranasal_ssl.config import load_json, to_dict
from paranasal_ssl.crop_cache import CropSet, record_key
from paranasal_ssl.experiment import ResidualConfig
from paranasal_ssl.hashing import file_sha256, stable_hash
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.progress import Progress
from paranasal_ssl.residual_maps import crop_scores, residuals_of
from paranasal_ssl.stages.cae_stage import cae_checkpoints, load_cae, trained_cae_checkpoints
from paranasal_ssl.stages.data import crops_for, n_crops, roi_masks
from paranasal_ssl.stages.run import Run
from paranasal_ssl.training import distributed as ddp
from paranasal_ssl.training.device import to_input
from paranasal_ssl.version import code_version

log = logging.getLogger(__name__)


@dataclass
class ResidualSet:
    """Residuals of the sinuses in ``crops.records``: ``maps[i]`` is ``(n, S, S, S)`` float16."""

    folder: Path
    crops: CropSet
    maps: List[np.ndarray]
    scores: Dict[str, float]
    heatmap_scale: float


def residual_folder(run: Run) -> Path:
    """``RUN/residuals/<key>``: the key hashes every CAE checkpoint (a single CAE's run keeps
    the key it had before ensembles existed), the residual settings and the data settings."""
    shas = [file_sha256(p) for p in trained_cae_checkpoints(run)]
    r = run.config.residual
    # only the settings that shape the maps, scores and calibration (not the pretext's)
    shaping = {k: getattr(r, k) for k in ("median_kernel", "sign", "air_gate",
                                            "heatmap_quantile", "score")}
    # later settings join the key only when they differ from their default (the settings of
    # runs saved before them), so those runs keep their folder
    legacy = ResidualConfig()
    shaping.update({k: getattr(r, k) for k in ("smoothing", "gaussian_sigma_mm", "bone_gate_hu")
                    if getattr(r, k) != getattr(legacy, k)})
    key = stable_hash({"cae": shas[0] if len(shas) == 1 else shas, "residual": shaping,
                       "data": to_dict(run.config.data)}, 12)
    return run.dir / "residuals" / key


def compute_residuals(run: Run, batch_size: int = 16,
                      shard: Optional[Tuple[int, int]] = None) -> Optional[ResidualSet]:
    """Residuals for every sinus of the manifest (all splits); cached. See module docstring.

    Sharding: the sinuses are cut into the batches one process would run, and batch ``j``
    goes to shard ``j % n``, so every map is computed in the same batch as by one process and
    the files are byte-identical. Under ``torchrun`` the shards are the ranks: each writes its
    maps, rank 0 then writes ``scores.csv`` and ``calibration.json`` and every rank returns the
    whole set. ``shard=(i, n)`` is for independent worker processes (no process group, e.g. a
    CPU site's job array): each computes its share; the worker that finds every map present
    when it is done writes the summaries (two that finish together write identical files) and
    gets the set; the others get None.
    """
    folder = residual_folder(run)
    folder.mkdir(parents=True, exist_ok=True)
    n = n_crops(run)
    crops = crops_for(run, run.records, "residuals", "crops (all)")
    paths = [folder / f"{record_key(r)}.npy" for r in crops.records]
    index, count = shard if shard is not None else (ddp.rank(), ddp.world_size())
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    ddp.barrier()  # every rank has listed the missing maps before any is written
    per_batch = max(1, batch_size // n)
    if count == 1:
        batches = [missing[s:s + per_batch] for s in range(0, len(missing), per_batch)]
    else:  # batches of the whole list: the same wherever and whenever a shard starts
        batches = [[i for i in range(s, min(s + per_batch, len(paths))) if not paths[i].exists()]
                   for s in range(0, len(paths), per_batch)][index::count]
        batches = [b for b in batches if b]
    _write_maps(run, crops, paths, batches, _fusion_companions(run, folder, crops.records),
                batch_records=per_batch)
    rewrite = bool(missing)
    if shard is not None and count > 1:
        if not all(p.exists() for p in paths):
            return None  # another shard still works; the last one writes the summaries
        rewrite = bool(batches) or not (folder / "scores.csv").exists()
    ddp.barrier()  # every map is written
    maps = [np.load(p, mmap_mode="r") for p in paths]
    if ddp.is_main():
        scores = _scores(run, crops, maps, folder, rewrite=rewrite)
        scale = _calibration(run, crops, maps, folder, rewrite=rewrite)
    ddp.barrier()  # rank 0 wrote scores.csv and calibration.json
    if not ddp.is_main():
        scores = _scores(run, crops, maps, folder, rewrite=False)
        scale = _calibration(run, crops, maps, folder, rewrite=False)
    return ResidualSet(folder, crops, maps, scores, scale)


def residuals_for_records(run: Run, records: Sequence[SinusRecord], folder: Path,
                          batch_size: int = 16) -> ResidualSet:
    """Residuals of sinuses outside the run's manifest (e.g. an independent test cohort) with
    the run's CAE, in ``folder`` (cached like ``compute_residuals``; keep one folder per
    cohort and CAE). The heatmap scale is the run's own: calibration needs the run's normal
    training sinuses, and a test cohort must not set it. Single process."""
    own = compute_residuals(run)  # the run's calibration, and its residuals up to date
    crops, maps, scores = _maps_and_scores(run, records, Path(folder), batch_size,
                                           fusion_maps=True)
    write_json(Path(folder) / "calibration.json", {
        "heatmap_scale": own.heatmap_scale, "from": str(own.folder / "calibration.json"),
        "code_version": code_version()})
    return ResidualSet(Path(folder), crops, maps, scores, own.heatmap_scale)


def residual_scores_for_records(run: Run, records: Sequence[SinusRecord], folder: Path,
                                batch_size: int = 16, fusion_maps: bool = False
                                ) -> Dict[str, float]:
    """Zero-label score per sinus key of ``records`` only, maps cached in ``folder``: no
    calibration, so none of the run's other sinuses is computed (e.g. a reference score under
    other residual settings). ``fusion_maps``: the residual fusion's focal maps of the same
    sinuses too, from the same CAE pass, cached where ``focal_folder(run, folder)`` says (a
    later call for their scores reads them). Single process."""
    return _maps_and_scores(run, records, Path(folder), batch_size, fusion_maps=fusion_maps)[2]


def crop_score_table(run: Run, records: Sequence[SinusRecord], folder: Path,
                     batch_size: int = 16, crops: Optional[CropSet] = None
                     ) -> Dict[str, np.ndarray]:
    """Per sinus key of ``records``: the ``(t,)`` zero-label scores of its ``t`` test-time
    crops (crop 0 unjittered; their mean is the sinus score), maps cached in ``folder``.
    ``crops``: the records' crops when the caller has them (no cropping, no process
    synchronisation: one rank may call it alone)."""
    crops, maps, _ = _maps_and_scores(run, records, Path(folder), batch_size, crops,
                                      sinus_scores=False)
    setting = stable_hash({"score": run.config.residual.score,
                           "crop": to_dict(run.config.data.crop)})
    table = {}
    for i, r in enumerate(crops.records):
        # the benchmark asks for the same sinuses' scores once per fine-tuned classifier; a
        # map file's name and folder key its sinus, CAEs and settings (and its time a rewrite)
        path = Path(folder) / f"{record_key(r)}.npy"
        memo_key = (str(path), path.stat().st_mtime_ns, setting)
        if memo_key not in _CROP_SCORES:
            _CROP_SCORES[memo_key] = _crop_scores_of(run, r, maps[i])
        table[r.key] = _CROP_SCORES[memo_key].copy()
    return table


# (map file, its mtime, score setting) -> (t,) crop scores, for this process's lifetime
_CROP_SCORES: Dict[Tuple[str, int, str], np.ndarray] = {}


def _crop_scores_of(run: Run, record: SinusRecord, sinus_maps) -> np.ndarray:
    """``(t,)`` scores of one sinus's test-time crops from its ``(n, S, S, S)`` maps."""
    t = run.config.data.crop.test_crops_per_side
    res = torch.from_numpy(np.asarray(sinus_maps[:t], dtype=np.float32))[:, None]
    return crop_scores(res, roi_masks([record], run, t), run.config.residual.score).numpy()


def _maps_and_scores(run: Run, records: Sequence[SinusRecord], folder: Path, batch_size: int,
                     crops: Optional[CropSet] = None, fusion_maps: bool = False,
                     sinus_scores: bool = True) -> Tuple[CropSet, list, Dict[str, float]]:
    """Crops, cached residual maps and ``scores.csv`` of ``records`` in ``folder``
    (``fusion_maps``: the residual fusion's focal maps from the same CAE pass;
    ``sinus_scores=False``: maps only, no score table, an empty dict in its place)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = n_crops(run)
    if crops is None:
        crops = crops_for(run, list(records), "residuals of other sinuses", "crops (other)")
    paths = [folder / f"{record_key(r)}.npy" for r in crops.records]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    per_batch = max(1, batch_size // n)
    companions = _fusion_companions(run, folder, crops.records) if fusion_maps else []
    _write_maps(run, crops, paths, [missing[s:s + per_batch]
                                    for s in range(0, len(missing), per_batch)], companions,
                batch_records=per_batch)
    maps = [np.load(p, mmap_mode="r") for p in paths]
    if not sinus_scores:
        return crops, maps, {}
    return crops, maps, _scores(run, crops, maps, folder, rewrite=bool(missing))


def _write_maps(run: Run, crops: CropSet, paths: List[Path], batches: List[List[int]],
                companions: Sequence[Tuple[ResidualConfig, List[Path]]] = (),
                batch_records: int = 0) -> None:
    """Compute and atomically save the ``(n, S, S, S)`` float16 residuals of crop-set rows
    ``batches`` (lists of indices into ``crops``/``paths``), one CAE forward per batch.
    ``companions``: other residual settings with their own paths (one per crop-set row),
    whose missing maps of the same rows come from the same CAE forward. A batch shorter than
    ``batch_records`` sinuses is padded with empty crops to that size: CPU kernels (oneDNN,
    MKL) may sum in another order for another batch size (1e-7 apart on Intel Xeons), which
    can flip a gate or a float16 rounding, so a sinus' map would depend on which sinuses were
    computed with it; at one batch size it does not."""
    if not batches:
        return
    n = n_crops(run)
    cae = load_cae(run)
    configs = [run.config.residual] + [c for c, _ in companions]
    outputs = [paths] + [p for _, p in companions]
    with Progress("residuals", total=sum(map(len, batches)), unit="sinus") as progress:
        for chunk in batches:
            stack = np.stack([np.asarray(crops.crops[i][:n]) for i in chunk])
            if len(chunk) < batch_records:
                stack = np.concatenate([stack, np.zeros((batch_records - len(chunk),
                                                         *stack.shape[1:]), stack.dtype)])
            x = torch.from_numpy(stack)
            x = to_input(x.reshape(-1, 1, *x.shape[2:]), run.device)
            wanted = [0] + [k for k in range(1, len(configs))
                            if any(not outputs[k][i].exists() for i in chunk)]
            maps = residuals_of(cae, x, [configs[k] for k in wanted], run.config.data)
            for k, r in zip(wanted, maps):
                r = r[:len(chunk) * n].cpu().numpy().reshape(len(chunk), n, *r.shape[2:])
                r = r.astype(np.float16)
                for j, i in enumerate(chunk):
                    if k == 0 or not outputs[k][i].exists():
                        with atomic_path(outputs[k][i]) as tmp:
                            np.save(tmp, r[j], allow_pickle=False)
            progress.update(len(chunk))


def _fusion_companions(run: Run, folder: Path, records: Sequence[SinusRecord]
                       ) -> List[Tuple[ResidualConfig, List[Path]]]:
    """The focal maps the residual fusion will read for ``records`` (whose stage-2 maps go to
    ``folder``), to be made in stage 2's CAE pass; none when the run does not fuse."""
    from paranasal_ssl.residual_fusion import focal_folder, focal_run

    focal = focal_run(run).config.residual
    if not run.config.finetune.residual_fusion or focal == run.config.residual:
        return []
    out = focal_folder(run, folder)
    out.mkdir(parents=True, exist_ok=True)
    return [(focal, [out / f"{record_key(r)}.npy" for r in records])]


def _scores(run: Run, crops: CropSet, maps, folder: Path, rewrite: bool) -> Dict[str, float]:
    """Zero-label score per sinus: the crop score averaged over the test-time crops."""
    path = folder / "scores.csv"
    if path.exists() and not rewrite:
        with open(path, newline="") as f:
            cached = {row["key"]: float(row["score"]) for row in csv.DictReader(f)}
        keys = [r.key for r in crops.records]
        # a folder shared by two record sets (each with its maps cached) must not answer one
        # with the other's table: reuse it only when it covers exactly these sinuses
        if set(cached) == set(keys):
            return {k: cached[k] for k in keys}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "case_id", "side", "split", "label", "anomaly_types", "score",
                     "score_crop0"])
    out = {}
    for i, r in enumerate(crops.records):
        s = _crop_scores_of(run, r, maps[i])
        out[r.key] = float(s.mean())
        writer.writerow([r.key, r.case_id, r.side, run.split_of_subject.get(r.subject_id, ""),
                         "" if r.label is None else r.label, ";".join(r.anomaly_types),
                         f"{s.mean():.6g}", f"{s[0]:.6g}"])
    write_text(path, buf.getvalue())
    return out


def _calibration(run: Run, crops: CropSet, maps, folder: Path, rewrite: bool) -> float:
    """Heatmap scale: twice the ``heatmap_quantile`` of residuals inside normal training ROIs."""
    path = folder / "calibration.json"
    if path.exists() and not rewrite:
        return float(load_json(path)["heatmap_scale"])
    values = []
    for i, r in enumerate(crops.records):
        if r.label == 0 and run.split_of_subject.get(r.subject_id) == "train":
            region = roi_masks([r], run, 1)[0, 0].numpy()
            values.append(np.asarray(maps[i][0], dtype=np.float32)[region])
    if not values:  # no labelled normals: fall back to every training sinus
        values = [np.asarray(maps[i][0], np.float32).ravel() for i, r in
                  enumerate(crops.records) if run.split_of_subject.get(r.subject_id) == "train"]
    q = float(np.quantile(np.concatenate(values), run.config.residual.heatmap_quantile))
    scale = 2.0 * max(q, 1e-6)
    write_json(path, {"heatmap_scale": scale, "quantile": run.config.residual.heatmap_quantile,
                      "normal_quantile_value": q, "n_sinuses": len(values),
                      "code_version": code_version()})
    return scale


def load_residual_scale(run: Run) -> Optional[float]:
    """The heatmap scale of this run's residuals, or None (no CAE or no residuals yet)."""
    if not all(p.exists() for p in cae_checkpoints(run.dir, run.config)):
        return None
    path = residual_folder(run) / "calibration.json"
    return float(load_json(path)["heatmap_scale"]) if path.exists() else None
