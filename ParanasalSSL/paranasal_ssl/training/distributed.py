"""Process groups for ``torchrun``: one process per device, the same command without it.

``torchrun --nproc_per_node N -m paranasal_ssl <command> ...`` starts N copies of a command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. :func:`setup` turns that into a
process group (NCCL when the run's device is CUDA, Gloo on CPU) and a device per local rank
(``cuda:LOCAL_RANK``). Without those variables nothing is initialised and every helper here is a
no-op for a world of one, so the single-process path is untouched.

Failure, not hang: the group is created with a finite timeout (``PARANASAL_DIST_TIMEOUT_S``,
default 1800 s, PyTorch's own default for Gloo), so a collective waiting on a peer that stopped
answering raises instead of blocking forever. A peer that DIES is noticed much sooner: on one
node ``torchrun`` sees the dead worker within its monitor interval and stops the others, and
Gloo's sockets close at once; across nodes the timeout is the bound.

Only rank 0 prints progress and INFO logs (:func:`setup` silences the others) and only rank 0
writes shared files (callers test :func:`is_main`).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import inspect
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)
TIMEOUT_ENV = "PARANASAL_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0


def launched() -> bool:
    """True inside a ``torchrun`` worker of a world larger than one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, logs and merged files."""
    return rank() == 0


def setup(device: str = "auto") -> str:
    """Join the ``torchrun`` process group if launched by it; return the device name to use.

    ``device`` is the user's choice (auto, cuda, cpu, ...). Under torchrun a CUDA choice becomes
    ``cuda:LOCAL_RANK`` (one process per GPU) with the NCCL backend; anything else uses Gloo
    on CPU. Calling it again is harmless.
    """
    if not launched():
        return device
    from paranasal_ssl.training.device import resolve_device

    dev = resolve_device(device)
    lr = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        torch.cuda.set_device(lr)
        device = f"cuda:{lr}"
    if not is_initialized():
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": torch.device(device)} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout), **kwargs)
        atexit.register(cleanup)
        if not is_main():
            from paranasal_ssl import progress

            progress.set_mode("none")  # one progress display: rank 0's
            logging.getLogger().setLevel(logging.WARNING)
        log.info("distributed: %d processes (%s), timeout %.0f s", world_size(), backend, timeout)
    return device


def cleanup() -> None:
    """Leave the group together: a rank that tears Gloo down while a peer still talks to it
    can abort ("terminate called without an active exception"), so wait for all first."""
    if is_initialized():
        try:
            barrier()
        except Exception:  # noqa: BLE001 - a peer already gone: nothing left to wait for
            pass
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_initialized() and world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place; returned for chaining). No autograd."""
    if is_initialized() and world_size() > 1:
        dist.all_reduce(t)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (a collective: every rank calls it).
    ``device``: the training device (NCCL reduces GPU tensors only)."""
    t = torch.tensor([float(flag)], dtype=torch.float64, device=device)
    return bool(all_reduce_sum(t).item() > 0)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(t).div_(world_size())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a picklable value, e.g. a metrics dict)."""
    if not (is_initialized() and world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@dataclass(frozen=True)
class BatchRows:
    """This rank's rows ``[start, stop)`` of a global batch of ``total`` samples.

    Random draws for a batch are always made for all ``total`` samples, in the order one process
    would make them, and each rank keeps its rows: the augmentations and crop choices of a
    2-process run are then those of the 1-process run with the same global batch.
    """

    start: int
    stop: int
    total: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def everything(self) -> bool:
        return self.start == 0 and self.stop == self.total


def batch_rows(total: int, rank_: Optional[int] = None, world: Optional[int] = None
               ) -> BatchRows:
    """Contiguous, near-equal split of ``total`` rows: rank ``r`` of ``W`` gets
    ``[r * total // W, (r + 1) * total // W)`` (all of them in one process)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return BatchRows(r * total // w, (r + 1) * total // w, total)


_CURRENT: Optional[BatchRows] = None


@contextlib.contextmanager
def step_rows(rows: BatchRows) -> Iterator[None]:
    """Make ``rows`` the current training step's rows (for losses that draw per-sample random
    values or gather the batch inside the model, e.g. masked image modelling, NT-Xent)."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, rows
    try:
        yield
    finally:
        _CURRENT = previous


def current_rows() -> Optional[BatchRows]:
    """The rows of the training step running now under DDP; None outside one (one process,
    validation, inference)."""
    return _CURRENT


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks: every rank's loss depends on
    every rank's contribution to the sum."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out


def gather_rows(t: torch.Tensor, rows: BatchRows) -> torch.Tensor:
    """The global batch ``(rows.total, ...)`` from every rank's rows ``t`` (``rows.size``
    leading rows each; uneven splits too), in single-process order; ``t`` itself in one process.

    Differentiable like ``torch.distributed.nn.functional.all_gather``: each rank places its rows
    in a zero tensor and the autograd-aware all-reduce sums them, so the backward gives each rank
    the SUM over ranks of the gradients with respect to its rows (a loss of every rank may
    depend on every rank's rows, e.g. the negatives of NT-Xent).
    """
    if not (is_initialized() and world_size() > 1):
        return t
    if t.shape[0] != rows.size:
        raise ValueError(f"gather_rows: {t.shape[0]} rows for {rows}")
    rest = t.shape[1:]
    full = torch.cat([t.new_zeros((rows.start, *rest)), t,
                      t.new_zeros((rows.total - rows.stop, *rest))])
    return _AllReduceSum.apply(full)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the GLOBAL batch, for Gloo/CPU.

    ``nn.SyncBatchNorm`` runs on GPUs only. This computes the per-channel mean, then the
    variance around it (two passes, like the fused kernel's accuracy), each summed over ranks
    with the autograd-aware all-reduce, whose backward sums the gradients over ranks as the
    global batch's gradient needs. Input ``(B, C, ...)`` of any rank >= 2; in eval mode, or in
    one process, it is plain batch norm. It shares its parameters and buffers with the module it
    replaces, so state dicts keep their keys.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_initialized() and world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        total = all_reduce(torch.cat([x.sum(dims), count]))
        n = total[-1].detach()
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n  # biased, as batch norm normalises
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var.detach() * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> list:
    """Replace every batch norm of ``model`` in place by its global-batch version
    (``nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` elsewhere); returns what
    :func:`restore_batchnorm` needs to put the originals back. Parameters and buffers are the
    same tensors, so training updates the originals too."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.modules.batchnorm._BatchNorm) or isinstance(
                    child, (nn.SyncBatchNorm, GlobalBatchNorm)):
                continue
            cls = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm
            new = cls(child.num_features, child.eps, child.momentum, child.affine,
                      child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(parent, name, new)
            swapped.append((parent, name, child))
    return swapped


def restore_batchnorm(swapped: list) -> None:
    for parent, name, child in swapped:
        current = getattr(parent, name)
        child.train(current.training)
        setattr(parent, name, child)


class _Dispatch(nn.Module):
    """What DDP wraps: ``forward(method, ...)`` calls ``model(...)`` or ``model.<method>(...)``,
    so a training loss computed by a method (the baselines' ``loss``) also runs inside DDP's
    forward, which is what arms its gradient all-reduce."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, method: Optional[str], *args, **kwargs):
        if method is None:
            return self.model(*args, **kwargs)
        return getattr(self.model, method)(*args, **kwargs)


class TrainView:
    """The model as a ``train_step`` sees it under DDP.

    Calling it, or one of ``ROUTED`` methods, goes through ``DistributedDataParallel``; any
    other attribute (``encoder``, ``n_views``, ``train()``) is the plain model's. ``calls``
    counts the routed calls: a step that bypassed DDP would train each rank apart, and
    :func:`paranasal_ssl.training.loop.fit` refuses it.
    """

    ROUTED = ("loss",)

    def __init__(self, model: nn.Module, device: torch.device):
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        # 1x1x1 convolution weights in channels_last_3d get gradients with other (equivalent)
        # strides than DDP's bucket views: a copy per step on tiny tensors, not worth a warning
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
        # broadcast_buffers off: global batch norm keeps running statistics equal on all ranks
        # (still synced once at construction); the option was renamed in torch 2.13
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers"
                   in inspect.signature(DDP.__init__).parameters else "broadcast_buffers")
        self.ddp = DDP(_Dispatch(model), device_ids=ids, **{no_sync: False})
        self.module = model
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.ddp(None, *args, **kwargs)

    def __getattr__(self, name: str):
        if name in TrainView.ROUTED:
            def routed(*args, **kwargs):
                self.calls += 1
                return self.ddp(name, *args, **kwargs)
            return routed
        return getattr(self.module, name)
