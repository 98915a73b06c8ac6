"""Where models run: the device, autocast, deterministic algorithms, the one forward pass that
training, validation and prediction share, checkpoints as data with the random states that
make a resume exact, and the processes of a distributed (DDP) run."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from gee_export.common.atomic import atomic_output
from gee_export.common.errors import InputError, InputNotFoundError, StateError, WriteError

CHECKPOINT_VERSION = 2  # 2: lgt-unet with Twins-SVT and UNetFormer module names


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when present, else CPU. Under DDP each process takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                             "GPU(s)")
        return torch.device("cuda", index)
    return torch.device(name)


def effective_config(config: dict, device: torch.device) -> dict:
    """A run's or a prediction's configuration as it acts on `device`: AMP does nothing off
    CUDA, so there it is left out (older products recorded it on by default), and
    `deterministic` off is left out (runs made before the option existed record none), so
    that two configurations that compute the same compare equal."""
    return {k: v for k, v in config.items()
            if not (k == "amp" and device.type != "cuda") and not (k == "deterministic" and
                                                                   not v)}


def set_deterministic(on: bool, device: torch.device) -> None:
    """Choose between deterministic and fastest algorithms (`train run --deterministic`).

    On: every operation must have a deterministic implementation (an error names one that
    has none), cuDNN picks deterministic convolution algorithms without benchmarking, and
    cuBLAS gets the fixed workspace it needs (CUBLAS_WORKSPACE_CONFIG, unless set already;
    cuBLAS reads it once, so call this before the first matrix product on the GPU). Off: on
    CUDA the fastest algorithms; on the CPU deterministic ones where torch has them, with a
    warning for any that has none (CPU kernels are, almost all, deterministic anyway).

    Args:
        on: whether the run was given --deterministic.
        device: the device the run trains on.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(on or device.type == "cpu", warn_only=not on)
    torch.backends.cudnn.deterministic = on


def rng_states(device: torch.device, procs: "Processes") -> dict:
    """The random states a checkpoint carries, to be called on every process (under DDP it
    gathers from each).

    Args:
        device: the device this process trains on.
        procs: the run's processes.

    Returns:
        {"torch_rng": the CPU generator's state (rank 0's; every rank restores it),
        "cuda_rng": on CUDA, the state of the generator of each process's own GPU, in rank
        order (Dropout2d draws from it there); [] on the CPU}.
    """
    cuda = procs.gather(torch.cuda.get_rng_state(device)) if device.type == "cuda" else []
    return {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda}


def restore_rng_states(checkpoint: dict, device: torch.device, procs: "Processes") -> str | None:
    """Put back the random states `rng_states` saved, by one rule: the CPU state always; on
    CUDA each process's GPU state when the checkpoint was written by as many GPU processes
    (whatever the GPUs' numbers: a state belongs to a rank, not to a card). A checkpoint
    written elsewhere (on the CPU, on CUDA and resumed on the CPU, by another number of GPU
    processes, or before CUDA states were saved) still resumes: a GPU the checkpoint has no
    state for keeps the state --seed gave it, and the run goes on from the same weights, but
    not bit for bit as an unbroken run would; the returned note says so (None when exact).

    Args:
        checkpoint: a loaded checkpoint; its states may lie on any device (map_location).
        device: the device this process trains on.
        procs: the run's processes.

    Returns:
        None when the resume is exact as far as random states go, else a one-line note.
    """
    torch.set_rng_state(checkpoint["torch_rng"].cpu())  # generator states are CPU tensors
    saved = list(checkpoint.get("cuda_rng") or [])
    if device.type == "cuda" and len(saved) == procs.world:
        torch.cuda.set_rng_state(saved[procs.rank].cpu(), device)
        return None
    if device.type != "cuda" and not saved:
        return None
    then = f"CUDA by {len(saved)} process(es)" if saved else "the CPU"
    now = f"CUDA by {procs.world} process(es)" if device.type == "cuda" else "the CPU"
    return (f"note: the checkpoint was written on {then} and the run resumes on {now}: it "
            "goes on from the same weights and optimizer, but its random draws differ from "
            "an unbroken run's")


def amp_dtype_for(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU has it (no loss scaling needed), else fp16; None on CPU or off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def prepared(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model on its device, in the memory format that measured fastest
    (benchmarks/bench_train.py): channels-last on CPU (convolutions 4-10 % faster; on an H200
    it was 10 % slower). Changes no global setting: the precision of matrix products is
    fast_matmul's, for the work inside it."""
    if device.type == "cuda":
        return model.to(device)
    return model.to(device, memory_format=torch.channels_last)


@contextmanager
def fast_matmul(device: torch.device) -> Iterator[None]:
    """On CUDA, fp32 with TF32 matrix products while inside (1.29-1.39x plain fp32 for the
    paper model at 512 px, and faster than bf16 autocast there; benchmarks/bench_train.py);
    on leaving, the process's setting is restored as it was, even after an error. Elsewhere
    nothing changes. Training and prediction run inside it; a caller that chooses its own
    precision (a benchmark) runs outside it and keeps that choice."""
    before = torch.get_float32_matmul_precision()  # "high" is TF32 (allow_tf32 follows it)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def forward(model: torch.nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """The model's logits, under autocast when an AMP dtype is given (training, validation and
    prediction all go through here)."""
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        return model(x)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint is data, never code: loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"checkpoint {path}: no such file")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors of several types
        raise InputError(f"checkpoint {path}: cannot be loaded as data ({type(e).__name__})"
                         ) from None
    if not isinstance(ck, dict) or "checkpoint_version" not in ck:
        raise InputError(f"checkpoint {path}: not a checkpoint of this toolkit")
    if ck["checkpoint_version"] != CHECKPOINT_VERSION:
        raise InputError(f"checkpoint {path}: version {ck['checkpoint_version']}, this toolkit "
                         f"reads version {CHECKPOINT_VERSION} (the model's modules were "
                         "renamed to load published weights); retrain with `train run`")
    bad = first_nonfinite(ck.get("model_state") or {})
    if bad is not None:
        raise InputError(f"checkpoint {path}: weight {bad} is not finite (nan or inf), so "
                         "every prediction from it would be meaningless; use an earlier "
                         "checkpoint, or retrain (a lower --lr)")
    return ck


def first_nonfinite(state: dict) -> str | None:
    """The name of the first floating-point tensor of a state dict that holds nan or inf."""
    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    with atomic_output(path) as tmp:
        try:
            torch.save({"checkpoint_version": CHECKPOINT_VERSION, **checkpoint}, tmp)
        except RuntimeError as e:  # torch reports a failed write so ("unexpected pos ...")
            full = shutil.disk_usage(Path(path).parent).free < 2 ** 26
            reason = "no space left on device" if full else str(e).strip().splitlines()[0]
            raise WriteError(f"cannot write {path}: {reason}") from None


class OtherProcessFailed(SystemExit):
    """Another process of this torchrun run stopped; it (or torchrun, for one that was
    killed) says why in one line, so this one exits with status 1 without a second line (a
    SystemExit: the commands' one-line error reporting lets it pass)."""

    def __init__(self, why: str):
        super().__init__(1)
        self.why = why


@dataclass(frozen=True)
class Processes:
    """The processes of a run: one, or the ranks that torchrun started (DDP). Rank 0 decides
    and writes; the others follow its decisions."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def start(cls, backend: str | None = None, timeout: timedelta | None = None
              ) -> "Processes":
        """Join the process group when torchrun launched several processes (it sets
        WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous, on one node or several).

        Args:
            backend: "gloo" or "nccl" [default: nccl where CUDA is, else gloo].
            timeout: how long a collective waits for the other processes [default: torch's].

        Returns:
            This process's place in the run (one process when WORLD_SIZE is unset or 1: no
            process group is made).
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
            dist.init_process_group(backend, **({"timeout": timeout} if timeout else {}))
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))

    def stop(self) -> None:
        """Leave the process group after a finished run (every rank, together)."""
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()

    def leave_at_exit(self) -> None:
        """Leave the process group when this process exits, not together with the others:
        for runs whose ranks finish at different times (prediction: rank 0 alone assembles
        and polygonizes). A process that exits still in the group is aborted by its gloo
        threads ("terminate called without an active exception")."""
        if self.world > 1:
            import atexit

            atexit.unregister(_leave_group)  # once, however many runs this process makes
            atexit.register(_leave_group)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, value: Any) -> list:
        """`value` of every process, in rank order, on every process ([value] in one)."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def decide(self, decision: Callable[[], Any]) -> Any:
        """Run `decision` on rank 0 and give every rank its result; an error on rank 0 is
        raised on every rank, so all stop together."""
        result, error = None, None
        if self.main:
            try:
                result = decision()
            except Exception as e:  # handed to every rank below
                error = e
        if self.world > 1:
            import torch.distributed as dist

            box = [result, None if error is None else (type(error), str(error))]
            dist.broadcast_object_list(box, src=0)
            result, err = box
            if err is not None and error is None:
                error = err[0](err[1]) if issubclass(err[0], Exception) else StateError(err[1])
        if error is not None:
            raise error
        return result

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over the processes (validation counts)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.as_tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.numpy().astype(values.dtype)

    def loss_reduce(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The loss sums of all processes, with autograd (None in a single process)."""
        return None if self.world == 1 else _SumOverProcesses.apply

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), so that all validate and
        checkpoint the same model."""
        if self.world > 1:
            import torch.distributed as dist

            for b in model.buffers():
                dist.broadcast(b, src=0)


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class _SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over all processes. Every process computes the same loss from the
    sums, so the gradient arriving here is the same on each; summing it gives each process
    `world` times its share, which DDP's averaging of parameter gradients then divides back:
    the update is exactly that of the global batch's loss."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad
