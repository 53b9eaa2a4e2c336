"""Self-supervised baselines: the losses against hand computation, BYOL's EMA target, SimSiam's
stop-gradient, MIM's masked-only loss, and each method trained on a tiny phantom cohort, checked
for a falling loss and spread-out embeddings, exported as an encoder and fine-tuned."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.tiny import TINY_OVERRIDES
from paranasal_ssl.baselines import METHODS, build_baseline
from paranasal_ssl.baselines.byol import BYOL, byol_tau
from paranasal_ssl.baselines.heads import embedding_std
from paranasal_ssl.baselines.mim import MaskedImageModel, masked_mse, random_patch_mask
from paranasal_ssl.baselines.simclr import nt_xent
from paranasal_ssl.baselines.simsiam import simsiam_loss
from paranasal_ssl.experiment import EncoderConfig
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.training.checkpoint import read_checkpoint

TINY_ENCODER = EncoderConfig(layers=[1, 1, 1, 1], widths=[8, 8, 16, 16], stem_kernel=3,
                             max_pool=False, decoder_widths=[16, 8, 8])
# Enough optimiser steps on the tiny cohort (16 training sinuses, batch 8: 2 steps an epoch)
# for every method's loss to fall clearly from the first epoch to the last: with these settings
# SimSiam (the slowest: its predictor must learn first) fell by 0.38-0.64 for seeds 0-5.
TRAIN = ["pretext_train.epochs=12", "pretext_train.lr=0.03", "pretext_train.schedule=constant"]


def test_nt_xent_matches_hand_computation():
    z1 = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    z2 = torch.tensor([[0.8, 0.6], [0.0, 2.0]])  # norm 2: the loss must normalise
    t = 0.5
    z = [torch.nn.functional.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    expected = 0.0
    for i in range(4):
        pos = (i + 2) % 4
        logits = {k: float(z[i] @ z[k]) / t for k in range(4) if k != i}
        expected -= logits[pos] - math.log(sum(math.exp(v) for v in logits.values()))
    expected /= 4
    assert nt_xent(z1, z2, t).item() == pytest.approx(expected, rel=1e-6)
    assert nt_xent(z1[:1], z2[:1], t).item() == pytest.approx(0.0, abs=1e-7)  # no negatives
    same = torch.ones(8, 16)  # all similarities equal at a tiny temperature: log(2B - 1)
    assert nt_xent(same, same, 1e-3).item() == pytest.approx(math.log(15), rel=1e-5)


def test_byol_target_is_an_ema_of_the_online_network():
    torch.manual_seed(0)
    model = BYOL(TINY_ENCODER)
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    before = [p.detach().clone() for p in model.target_encoder.parameters()]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    views = [torch.rand(4, 1, 16, 16, 16), torch.rand(4, 1, 16, 16, 16)]
    loss, _ = model.loss(views)
    loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())  # stop-gradient
    opt.step()
    model.after_step(1, 10)
    tau = byol_tau(0, 10)
    assert tau == pytest.approx(0.99) and byol_tau(10, 10) == pytest.approx(1.0)
    assert byol_tau(3, 10) < byol_tau(6, 10)
    moved = False
    for old, online, target in zip(before, model.encoder.parameters(),
                                   model.target_encoder.parameters()):
        torch.testing.assert_close(target, tau * old + (1 - tau) * online.detach())
        moved |= not torch.equal(target, online)
    assert moved, "the target must lag behind the online network"
    for bo, bt in zip(model.encoder.buffers(), model.target_encoder.buffers()):
        assert torch.equal(bo, bt)


def test_simsiam_stop_gradient_on_the_target_branch():
    p1, p2, z1, z2 = (torch.randn(4, 8, requires_grad=True) for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    loss.backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    # identical prediction and target: the minimum, -1
    assert simsiam_loss(z2, z1, z1, z2).item() == pytest.approx(-1.0, abs=1e-6)


def test_mim_loss_only_on_masked_voxels():
    gen = torch.Generator().manual_seed(0)
    mask = random_patch_mask(3, 16, 4, 0.6, gen)
    assert mask.shape == (3, 1, 16, 16, 16) and mask.dtype == torch.bool
    patches = mask[:, 0].reshape(3, 4, 4, 4, 4, 4, 4).permute(0, 1, 3, 5, 2, 4, 6)
    blocks = patches.reshape(3, 64, 64)
    assert torch.all(blocks.all(-1) | ~blocks.any(-1))  # whole patches masked or kept
    assert torch.all(blocks[..., 0].sum(1) == round(0.6 * 64))
    target = torch.rand(3, 1, 16, 16, 16)
    pred = torch.where(mask, target, target + 5.0)  # wrong only where visible
    assert masked_mse(pred, target, mask).item() == 0.0
    pred = torch.where(mask, target + 0.5, target)
    assert masked_mse(pred, target, mask).item() == pytest.approx(0.25)

    torch.manual_seed(0)
    model = MaskedImageModel(TINY_ENCODER, 16)
    seen = {}
    model.net.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0], y=out))
    model.net.register_forward_hook(lambda mod, inp, out: out.retain_grad())
    x = torch.rand(3, 1, 16, 16, 16)
    loss, _ = model.loss([x], torch.Generator().manual_seed(1))
    loss.backward()
    mask = random_patch_mask(3, 16, model.patch, model.mask_ratio,
                             torch.Generator().manual_seed(1))
    assert torch.all(seen["x"][mask] == model.mask_token) and torch.equal(seen["x"][~mask],
                                                                           x[~mask])
    assert torch.all(seen["y"].grad[~mask] == 0) and seen["y"].grad[mask].abs().sum() > 0


def test_distributed_rows_of_the_baselines_are_the_single_process_batch():
    """What each rank of a DDP run computes, checked in one process: its rows of the global
    batch's views, SimCLR anchors and MIM masks, and losses whose row-weighted sum is the
    global one (2-process runs: ``test_distributed.py``)."""
    from paranasal_ssl.baselines.train import draw_views
    from paranasal_ssl.training.distributed import batch_rows, step_rows

    crops = torch.rand(6, 2, 1, 16, 16, 16).half()
    idx = torch.tensor([4, 0, 3, 1, 5])
    whole = draw_views(crops, idx, torch.Generator().manual_seed(7), 2, True, torch.device("cpu"))
    splits = [[batch_rows(5, r, w) for r in range(w)] for w in (2, 3)]
    for rows in splits:
        parts = [draw_views(crops, idx, torch.Generator().manual_seed(7), 2, True,
                            torch.device("cpu"), r) for r in rows]
        for v in range(2):
            torch.testing.assert_close(torch.cat([p[v] for p in parts]), whole[v])

    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    for rows in splits:
        weighted = sum(nt_xent(z1, z2, 0.5, anchors=r.slice) * (r.size / 5) for r in rows)
        torch.testing.assert_close(weighted, nt_xent(z1, z2, 0.5))

    torch.manual_seed(0)
    model = MaskedImageModel(TINY_ENCODER, 16).eval()  # per-sample outputs: no batch statistics
    seen = {}
    model.net.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
    x = torch.rand(5, 1, 16, 16, 16)
    with torch.no_grad():
        full, _ = model.loss([x], torch.Generator().manual_seed(1))
        full_input = seen["x"]
        for rows in splits:
            total = 0.0
            for r in rows:
                with step_rows(r):
                    part, _ = model.loss([x[r.slice]], torch.Generator().manual_seed(1))
                torch.testing.assert_close(seen["x"], full_input[r.slice])  # its masks
                total += part * (r.size / 5)
            torch.testing.assert_close(total, full)


def test_embedding_std_detects_collapse():
    assert embedding_std(torch.ones(16, 32) + 1e-6 * torch.randn(16, 32)) < 1e-5
    spread = embedding_std(torch.randn(4096, 32))
    assert spread == pytest.approx(1 / math.sqrt(32), rel=0.05)


@pytest.fixture(scope="module")
def baseline_run(trained_run):
    """The tiny run of the method's four stages, reopened with the baselines' training budget:
    baselines share the run's crops, splits and fine-tuning."""
    run, _ = trained_run
    return open_run(run.dir, overrides=TINY_OVERRIDES + TRAIN, device="cpu", workers=1)


@pytest.mark.parametrize("method", METHODS)
def test_pretrain_baseline_learns_exports_encoder_and_finetunes(baseline_run, method):
    from paranasal_ssl.baselines.train import pretrain_baseline
    from paranasal_ssl.stages.finetune_stage import finetune
    from paranasal_ssl.stages.pretext_stage import encoder_signature

    run = baseline_run
    result, out = pretrain_baseline(run, method)
    first, last = result.history[0], result.history[-1]
    assert result.epochs_run == 12
    assert last["train_loss"] < first["train_loss"] - 0.1, [r["train_loss"]
                                                             for r in result.history]
    if method in ("byol", "simsiam"):
        # no collapse: the normalised encoder features (16 channels) keep a spread near the
        # 1/sqrt(16) = 0.25 of directions spread evenly; a collapsed encoder gives ~0. (SimSiam's
        # projections end in an affine-free batch norm, which fixes their training-mode spread.)
        assert all(r["train_std_encoder"] > 0.1 for r in result.history)
        if method == "byol":
            assert all(r["train_std_projection"] > 0.3 / math.sqrt(128) for r in result.history)
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "val_loss", "val_std_encoder", "train_std_encoder"} <= set(header)
    assert ("val_std_projection" in header) == (method != "mim")

    encoder_keys = set(build_baseline(method, run.config.encoder, 16).encoder.state_dict())
    for name in ("best.pt", "last.pt"):
        payload = read_checkpoint(out / name, "encoder", encoder_signature(run))
        assert set(payload["model"]) == encoder_keys  # the encoder alone, no heads
        assert payload["meta"]["method"] == method
        assert payload["meta"]["train_cfg"]["epochs"] == 12
    assert (out / "config.json").exists() and (out / "baseline.json").exists()

    ft, ft_dir = finetune(run, 1.0, 0, init=str(out / "best.pt"), name=f"ft-{method}",
                          set_default=False)
    assert ft.epochs_run >= 1 and (ft_dir / "best.pt").exists()
    default = (run.dir / "model.json").read_text()
    assert f"ft-{method}" not in default  # set_default=False leaves predict's model alone


def test_cli_pretrain_baseline(baseline_run):
    from paranasal_ssl.cli.main import main

    threads = torch.get_num_threads()
    try:
        code = main(["pretrain-baseline", "--run", str(baseline_run.dir), "--method", "simsiam",
                     "--set", "pretext_train.epochs=1", "--device", "cpu", "--progress", "none",
                     "--threads", "2"])
    finally:  # --threads sets torch's for the whole process: the later tests keep theirs
        torch.set_num_threads(threads)
    assert code == 0
    lines = (baseline_run.dir / "baselines" / "simsiam" / "metrics.csv").read_text().splitlines()
    assert len(lines) == 2


def test_method_defaults_yield_to_user_settings(tmp_path, tiny_cohort):
    from paranasal_ssl.baselines.train import baseline_train_config

    paper = open_run(tmp_path / "paper", manifest=tiny_cohort, profile="paper", device="cpu")
    tcfg, applied = baseline_train_config(paper, "simsiam")
    assert applied == {"weight_decay": 1e-4} and tcfg.weight_decay == 1e-4
    assert (tcfg.epochs, tcfg.batch_size, tcfg.lr) == (100, 128, 0.15)  # the shared budget
    assert baseline_train_config(paper, "simclr")[0] == paper.config.pretext_train
    mine = open_run(tmp_path / "paper", overrides=["pretext_train.weight_decay=0.003"],
                    device="cpu")
    tcfg, applied = baseline_train_config(mine, "simsiam")
    assert applied == {} and tcfg.weight_decay == 0.003


def test_byol_resumes_exactly_with_its_target_network(baseline_run):
    import logging

    from paranasal_ssl import progress
    from paranasal_ssl.baselines.train import pretrain_baseline
    from paranasal_ssl.errors import CancelledError

    run = open_run(baseline_run.dir, overrides=TINY_OVERRIDES + TRAIN + ["pretext_train.epochs=3"],
                   device="cpu", workers=1)
    state = run.dir / "baselines" / "byol" / "training" / "last.pt"
    pretrain_baseline(run, "byol")
    straight = read_checkpoint(state)["model"]

    class CancelAfterFirstEpoch(logging.Handler):  # as a user pressing Cancel would
        def emit(self, record):
            if "epoch 1/3" in record.getMessage():
                progress.request_cancel()

    loop_log = logging.getLogger("paranasal_ssl.training.loop")
    handler, level = CancelAfterFirstEpoch(), loop_log.level
    loop_log.addHandler(handler)
    loop_log.setLevel(logging.INFO)
    try:
        with pytest.raises(CancelledError):
            pretrain_baseline(run, "byol")
    finally:
        loop_log.removeHandler(handler)
        loop_log.setLevel(level)
        progress.reset_cancel()
    assert read_checkpoint(state)["meta"]["epoch"] == 1
    result, _ = pretrain_baseline(run, "byol", resume=True)
    assert result.epochs_run == 3
    resumed = read_checkpoint(state)["model"]
    assert any(k.startswith("target_encoder.") for k in resumed)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
