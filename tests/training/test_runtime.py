"""Random states in checkpoints (CPU, and each process's GPU through a stand-in for torch's
CUDA generator API), the rule for a checkpoint resumed on another kind of device, and
--deterministic: what it switches, that the run records it, and that a resume made otherwise
is refused; TF32 matrix products only inside fast_matmul, never as a global side effect."""
import os
from contextlib import contextmanager

import pytest
import torch

from gee_export.common.stage import differences
from training import trainer
from training.runtime import (
    Processes,
    effective_config,
    fast_matmul,
    load_checkpoint,
    prepared,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    set_deterministic,
)
from training.trainer import TrainConfig
from training.trainer import train as run_train

CUDA0 = torch.device("cuda", 0)
CFG = TrainConfig(preset="tiny", epochs=2, lr=2e-3, batch_size=4, seed=3, workers=0)


def _state(seed: int) -> torch.Tensor:
    """A generator state as torch's CUDA generator gives one: 16 bytes on the CPU."""
    return torch.randint(0, 256, (16,), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


class FakeCudaRng:
    """torch.cuda.get_rng_state / set_rng_state over one generator per GPU number, refusing
    what torch refuses: a state that is not a CPU byte tensor."""

    def __init__(self, states: dict[int, torch.Tensor]):
        self.states = dict(states)
        self.sets: list[int] = []

    def get_rng_state(self, device="cuda"):
        return self.states[torch.device(device).index].clone()

    def set_rng_state(self, state, device="cuda"):
        if state.device.type != "cpu" or state.dtype != torch.uint8:
            raise RuntimeError("RNG state must be a torch.ByteTensor")
        index = torch.device(device).index
        self.sets.append(index)
        self.states[index] = state.clone()


@pytest.fixture
def cuda_rng(monkeypatch):
    fake = FakeCudaRng({i: _state(i) for i in range(4)})
    monkeypatch.setattr(torch.cuda, "get_rng_state", fake.get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake.set_rng_state)
    return fake


def test_cpu_and_gpu_random_states_come_back_from_a_checkpoint(tmp_path, cuda_rng):
    saved = rng_states(CUDA0, Processes())
    assert [s.tolist() for s in saved["cuda_rng"]] == [_state(0).tolist()]
    expected = torch.rand(4)  # what the run draws next on the CPU
    save_checkpoint(tmp_path / "last.pt", saved)
    ck = load_checkpoint(tmp_path / "last.pt")  # weights_only: the states are data
    torch.manual_seed(99)  # the resumed process starts elsewhere
    cuda_rng.states[0] = _state(99)
    assert restore_rng_states(ck, CUDA0, Processes()) is None  # exact
    assert torch.equal(torch.rand(4), expected)
    assert torch.equal(cuda_rng.states[0], _state(0)) and cuda_rng.sets == [0]


def test_a_gpu_state_belongs_to_a_rank_not_to_a_card(cuda_rng):
    """Rank r takes the state rank r saved, onto whatever GPU it runs on now."""
    ck = {"torch_rng": torch.get_rng_state(), "cuda_rng": [_state(10), _state(11)]}
    assert restore_rng_states(ck, torch.device("cuda", 3), Processes(1, 2, 3)) is None
    assert torch.equal(cuda_rng.states[3], _state(11)) and cuda_rng.sets == [3]
    ck1 = {"torch_rng": torch.get_rng_state(), "cuda_rng": [_state(12)]}
    assert restore_rng_states(ck1, torch.device("cuda", 2), Processes()) is None  # --device
    assert torch.equal(cuda_rng.states[2], _state(12))


def test_gpu_processes_each_save_their_own_state(cuda_rng, monkeypatch):
    """rng_states gathers every rank's state of its own GPU, in rank order."""
    assert Processes().gather("x") == ["x"]
    procs = Processes(0, 2, 0)
    gathered = []
    monkeypatch.setattr(Processes, "gather",
                        lambda self, v: gathered.append(v) or [v, _state(21)])
    saved = rng_states(CUDA0, procs)
    assert torch.equal(gathered[0], _state(0))
    assert [s.tolist() for s in saved["cuda_rng"]] == [_state(0).tolist(), _state(21).tolist()]


def test_a_cpu_run_does_not_touch_cuda(monkeypatch):
    def no_cuda(*a, **k):
        raise AssertionError("CUDA touched")

    monkeypatch.setattr(torch.cuda, "get_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state", no_cuda)
    saved = rng_states(torch.device("cpu"), Processes())
    assert saved["cuda_rng"] == []
    assert restore_rng_states(saved, torch.device("cpu"), Processes()) is None
    assert restore_rng_states({"torch_rng": saved["torch_rng"]}, torch.device("cpu"),
                              Processes()) is None  # a checkpoint from before CUDA states


@pytest.mark.parametrize("saved, device, procs, then, now", [
    ([_state(0)], "cpu", Processes(), "CUDA by 1 process(es)", "the CPU"),
    ([], "cuda", Processes(), "the CPU", "CUDA by 1 process(es)"),
    (None, "cuda", Processes(), "the CPU", "CUDA by 1 process(es)"),  # no CUDA states saved
    ([_state(0), _state(1)], "cuda", Processes(), "CUDA by 2 process(es)",
     "CUDA by 1 process(es)"),
])
def test_a_checkpoint_from_elsewhere_resumes_with_a_note(cuda_rng, saved, device, procs,
                                                         then, now):
    """The CPU state comes back; a GPU with no state of its own keeps the one --seed gave it."""
    ck = {"torch_rng": torch.get_rng_state()}
    if saved is not None:
        ck["cuda_rng"] = saved
    expected = torch.rand(3)
    torch.manual_seed(5)
    before = {i: s.clone() for i, s in cuda_rng.states.items()}
    note = restore_rng_states(ck, torch.device(device, 0) if device == "cuda" else
                              torch.device("cpu"), procs)
    assert note == (f"note: the checkpoint was written on {then} and the run resumes on {now}: "
                    "it goes on from the same weights and optimizer, but its random draws "
                    "differ from an unbroken run's")
    assert torch.equal(torch.rand(3), expected)
    assert cuda_rng.sets == [] and all(torch.equal(before[i], s)
                                       for i, s in cuda_rng.states.items())


# -- --deterministic ------------------------------------------------------------------------------

@pytest.fixture
def global_switches(monkeypatch):
    """Put back torch's process-wide switches and the environment that set_deterministic
    turns."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # so that monkeypatch restores it
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def _switches():
    on = torch.are_deterministic_algorithms_enabled()
    return (on, torch.is_deterministic_algorithms_warn_only_enabled() if on else None,
            torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


@pytest.mark.parametrize("on, device, want", [
    (True, "cuda", (True, False, True, ":4096:8")),
    (False, "cuda", (False, None, False, None)),
    (True, "cpu", (True, False, True, ":4096:8")),
    (False, "cpu", (True, True, False, None)),  # deterministic where torch can, else a warning
])
def test_deterministic_switches(global_switches, on, device, want):
    torch.backends.cudnn.benchmark = True
    set_deterministic(on, torch.device(device))
    assert _switches() == want
    assert torch.backends.cudnn.benchmark is not on


def test_a_cublas_setting_of_the_user_is_kept(global_switches, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    set_deterministic(True, CUDA0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_runs_from_before_the_option_compare_as_not_deterministic():
    old = {"lr": 1e-4}  # recorded before --deterministic existed
    cpu = torch.device("cpu")
    assert differences(effective_config(old, cpu),
                       effective_config({"lr": 1e-4, "deterministic": False}, cpu)) == []
    assert differences(effective_config(old, cpu),
                       effective_config({"lr": 1e-4, "deterministic": True}, cpu)
                       ) == ["--deterministic: off -> on"]


def test_train_run_deterministic_is_recorded_and_a_resume_without_it_refused(
        demo_tiles, global_switches):
    import json

    from click.testing import CliRunner

    from gee_export.common.cli import train

    ws, tiles = demo_tiles
    args = ["run", "--tiles", tiles, "--workspace", ws, "--preset", "tiny", "--epochs", 1,
            "--batch-size", 4, "--name", "det", "--quiet"]
    res = CliRunner().invoke(train, [str(a) for a in args + ["--deterministic"]])
    assert res.exit_code == 0, res.output
    assert json.loads((ws / "runs" / "det" / "config.json").read_text())["config"][
        "deterministic"] is True
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    res = CliRunner().invoke(train, [str(a) for a in args])
    assert res.exit_code != 0
    assert "made with other options (--deterministic: on -> off)" in res.output


def test_a_checkpoint_written_on_cuda_resumes_on_the_cpu_with_a_note(demo_tiles, monkeypatch):
    """The trainer saves what rng_states gives (here with a GPU state added) and hands the
    loaded checkpoint to restore_rng_states."""
    ws, tiles = demo_tiles
    real = trainer.rng_states
    monkeypatch.setattr(trainer, "rng_states",
                        lambda d, p: {**real(d, p), "cuda_rng": [_state(7)]})
    run = run_train(tiles, ws, CFG, "from-cuda", max_steps=1, quiet=True, echo=lambda *a: None)
    assert [s.tolist() for s in load_checkpoint(run / "last.pt")["cuda_rng"]] == [
        _state(7).tolist()]
    monkeypatch.setattr(trainer, "rng_states", real)
    said = []
    run_train(tiles, ws, CFG, "from-cuda", max_steps=2, quiet=True, echo=said.append)
    assert said[:2] == [f"resuming {run} at epoch 2",
                        "note: the checkpoint was written on CUDA by 1 process(es) and the run "
                        "resumes on the CPU: it goes on from the same weights and optimizer, but "
                        "its random draws differ from an unbroken run's"]


def _matmul_setting() -> tuple[str, bool]:
    return torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32


class _StaysPut(torch.nn.Module):
    """A model whose move to a device does nothing: prepared() for CUDA on any machine."""

    def to(self, *args, **kwargs):
        return self


@pytest.fixture(params=["highest", "medium"])
def matmul_setting(request):
    """The process's setting before a test: torch's default (no TF32), or one of the user's
    (bf16 and TF32), so that resetting it to either default or on instead of restoring shows."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(request.param)
    yield _matmul_setting()
    torch.set_float32_matmul_precision(saved)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_preparing_a_model_changes_no_global_setting(matmul_setting, device):
    prepared(_StaysPut(), torch.device(device))
    assert _matmul_setting() == matmul_setting


def test_fast_matmul_is_tf32_on_cuda_inside_and_restores_the_setting_after(matmul_setting):
    with fast_matmul(CUDA0):
        assert _matmul_setting() == ("high", True)
    assert _matmul_setting() == matmul_setting
    with pytest.raises(KeyError), fast_matmul(CUDA0):
        raise KeyError("a failure inside")
    assert _matmul_setting() == matmul_setting
    with fast_matmul(torch.device("cpu")):
        assert _matmul_setting() == matmul_setting


def test_training_steps_run_inside_fast_matmul(demo_tiles, monkeypatch):
    ws, tiles = demo_tiles
    inside, seen = [], []

    @contextmanager
    def recording(device):
        inside.append(device)
        yield
        inside.pop()

    real_step = trainer.train_step
    monkeypatch.setattr(trainer, "fast_matmul", recording)
    monkeypatch.setattr(trainer, "train_step", lambda *a, **k: seen.append(list(inside))
                        or real_step(*a, **k))
    run_train(tiles, ws, CFG, "in-fast-matmul", max_steps=2, quiet=True, echo=lambda *a: None)
    assert seen and all(s == [torch.device("cpu")] for s in seen) and not inside
