"""Data-parallel training of `tiny` on the CPU: real processes, gloo, through the command line
(`train --nproc 2`) and torchrun; the runs of one process they are compared with run in-process.

Every run here is the same run (seed, schedule, global batch of 4 clips drawn from a clip bank,
flow phase then few-step phase), cut and spread differently over processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from streamstyle.model.errors import ConfigError
from streamstyle.model.training.distributed import Ranks
from streamstyle.model.training.objective import ObjectiveConfig, StepRandomness, batch_loss, draw_frame
from streamstyle.model.training.trainer import TrainConfig, Trainer
from streamstyle.tools.cli import main

# A bank of 3 shots, one new shot every 2 draws: each rank keeps its own bank. Steps 3-4 are the
# few-step phase (K from 1, 2, 4, drawn alike on every rank).
RUN = dict(preset="tiny", size=32, frames=2, batch=4, steps=4, bank=3, refresh=2, lr=3e-3, warmup=3,
           prompts=False, distill=0.5, precision="fp32", device="cpu", checkpoint_every=1000)
CLI = ["--preset", "tiny", "--size", "32", "--frames", "2", "--batch", "4", "--bank", "3",
       "--refresh", "2", "--lr", "3e-3", "--warmup", "3", "--no-prompts", "--distill", "0.5", "--precision", "fp32",
       "--device", "cpu", "--checkpoint-every", "1000", "--quiet"]
FILES = ("raw.safetensors", "model.safetensors", "optimizer.safetensors")


def train_cli(out: Path, *extra: str, torchrun: bool = False, timeout: float = 300):
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
            "streamstyle"] if torchrun else [sys.executable, "-m", "streamstyle"]
    return subprocess.run([*head, "train", "--out", str(out), *CLI, "--steps", "4", *extra], capture_output=True,
                          text=True, timeout=timeout)


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path, atol: float = 1e-5) -> None:
    """Same weights, EMA and optimizer state (float tolerance: the batch is summed in another
    order), the same steps logged once each, with the same losses and gradient norms (which a
    gradient summed instead of averaged over the ranks would change; Adam alone would not show it)."""
    for name in FILES:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys(), name
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=1e-4, atol=atol, msg=f"{name}: {k}")
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [1, 2, 3, 4]
    assert [r["phase"] for r in rb] == ["flow", "flow", "few-step", "few-step"]
    for x, y in zip(ra, rb):
        for key in ("loss", "decoder", "grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=1e-4 if atol <= 1e-5 else 1e-3), (key, x, y)
    assert json.loads((b / "train_state.json").read_text())["step"] == 4


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The run in one process, four steps unbroken."""
    out = tmp_path_factory.mktemp("straight")
    Trainer(TrainConfig(out=str(out), **RUN), log=lambda *_: None).run(progress=False)
    return out


def test_two_processes_take_the_steps_of_one(straight, tmp_path):
    run = train_cli(tmp_path / "two", "--nproc", "2")
    assert run.returncode == 0, run.stderr
    assert "global batch 4 clips, 2 per process" in run.stdout
    assert run.stdout.count("weights (EMA) and training state in") == 1  # rank 0 alone reports
    assert_same_run(straight, tmp_path / "two")
    state = json.loads((tmp_path / "two" / "train_state.json").read_text())
    assert state["batch"] == 4 and state["processes"] == 2
    # Not vacuous: the four steps moved the weights well past the tolerance.
    init = TrainConfig(**RUN)
    torch.manual_seed(init.seed)
    from streamstyle.model.config import preset
    from streamstyle.model.network import StreamStyleModel

    start = StreamStyleModel(preset("tiny")).state_dict()
    raw = load_file(str(tmp_path / "two" / "raw.safetensors"))
    assert max((raw[k] - start[k]).abs().max().item() for k in raw) > 1e-3


def test_two_processes_then_one_continue_the_same_run(straight, tmp_path):
    out = tmp_path / "run"
    first = train_cli(out, "--nproc", "2", "--stop-after", "2")
    assert first.returncode == 0, first.stderr
    assert "stopped after 2 steps at step 2 of 4" in first.stdout
    assert json.loads((out / "train_state.json").read_text())["step"] == 2
    Trainer(TrainConfig(out=str(out), resume=str(out), **RUN), log=lambda *_: None).run(progress=False)
    assert_same_run(straight, out)


def test_one_process_then_two_under_torchrun_continue_the_same_run(straight, tmp_path):
    """The second half runs under torchrun itself, with a render worker per rank."""
    out = tmp_path / "run"
    Trainer(TrainConfig(out=str(out), stop_after=2, **RUN), log=lambda *_: None).run(progress=False)
    second = train_cli(out, "--resume", str(out), "--workers", "1", torchrun=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(f"resumed {out} at step 2") == 1
    assert_same_run(straight, out)


def _rank_pid(launcher: int, rank: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        for pid in kids:
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} under the launcher {launcher}")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the ranks through Linux's /proc")
def test_a_stop_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """SIGINT reaches rank 1 alone; rank 0, never signalled, stops at the same step boundary (or
    the next collective would hang or fail), writes the one checkpoint and says so."""
    out = tmp_path / "run"
    metrics = out / "metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "streamstyle", "train", "--out", str(out), *CLI, "--steps", "400",
                             "--nproc", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rank1 = _rank_pid(proc.pid, 1)
        deadline = time.monotonic() + 240
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        os.kill(rank1, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    step = json.loads((out / "train_state.json").read_text())["step"]
    assert 2 <= step < 400
    assert [r["step"] for r in rows(out)] == list(range(1, step + 1))  # every step once, all saved
    assert stdout.count(f"interrupted at step {step} of 400") == 1  # rank 0 agreed, and wrote once
    assert "Traceback" not in stderr


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the ranks through Linux's /proc")
def test_a_rank_that_dies_takes_the_run_down_with_it(tmp_path):
    """Rank 1 is killed mid-run: the launcher stops rank 0 (which would otherwise wait on its
    dead peer) and exits with the dead rank's status, leaving no rank behind."""
    out = tmp_path / "run"
    metrics = out / "metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "streamstyle", "train", "--out", str(out), *CLI, "--steps", "400",
                             "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rank0, rank1 = _rank_pid(proc.pid, 0), _rank_pid(proc.pid, 1)
        deadline = time.monotonic() + 240
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        os.kill(rank1, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGKILL
    assert "rank 1 of 2 ended by SIGKILL: stopping the other ranks" in stderr
    assert not Path(f"/proc/{rank0}").exists()  # reaped by the launcher before it returned


def test_a_clips_draws_do_not_depend_on_its_rank_or_neighbours():
    """The per-clip generators: a clip drawn in a batch of 4 or in a share of 2 gets the same
    strength, noise and path position; the shared K is the same on every rank; and the mean of two
    shares' losses and gradients (what DDP computes) is the whole batch's."""
    from streamstyle.model.stylizer import null_context

    trainer = Trainer(TrainConfig(out="unused", **RUN), log=lambda *_: None)
    model = trainer.model
    clips = [trainer._clip(i) for i in range(4)]
    ctx = [null_context(model, torch.device("cpu"))] * 4
    shape = (4, 3, 8, 8)
    for cfg in (ObjectiveConfig(), ObjectiveConfig(sampler_steps=(1, 2, 4))):
        whole = draw_frame(StepRandomness.seeded(5, 7, range(4)), cfg, shape, "cpu")
        half = draw_frame(StepRandomness.seeded(5, 7, [2, 3]), cfg, (2, *shape[1:]), "cpu")
        assert torch.equal(whole.noise[2:], half.noise) and torch.equal(whole.strength[2:], half.strength)
        assert whole.steps == half.steps
        if whole.u is not None:
            assert torch.equal(whole.u[2:], half.u)
        other = draw_frame(StepRandomness.seeded(5, 8, range(4)), cfg, shape, "cpu")
        assert not torch.equal(other.noise, whole.noise)  # another step draws anew

        def loss_and_grads(idx):
            model.zero_grad(set_to_none=True)
            loss, _ = batch_loss(model, [clips[i] for i in idx], [ctx[i] for i in idx],
                                 StepRandomness.seeded(5, 7, idx), cfg)
            loss.backward()
            return loss.detach(), [p.grad.clone() for p in model.parameters()]

        loss4, grads4 = loss_and_grads([0, 1, 2, 3])
        loss_a, grads_a = loss_and_grads([0, 1])
        loss_b, grads_b = loss_and_grads([2, 3])
        torch.testing.assert_close((loss_a + loss_b) / 2, loss4, rtol=1e-5, atol=1e-6)
        for g4, ga, gb in zip(grads4, grads_a, grads_b):
            torch.testing.assert_close((ga + gb) / 2, g4, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="3 clip generators for a batch of 4"):
        draw_frame(StepRandomness.seeded(5, 7, range(3)), ObjectiveConfig(), shape, "cpu")


def test_each_rank_takes_its_own_share_of_the_batch():
    shares = [Ranks(rank=r, world=4, local_rank=r, local_world=4).share(8) for r in range(4)]
    assert [list(s) for s in shares] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert list(Ranks().share(3)) == [0, 1, 2]
    env = dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    assert Ranks.from_env(env) == Ranks(rank=1, world=2, local_rank=1, local_world=2)
    assert Ranks.from_env({}) == Ranks()


@pytest.mark.parametrize("env, words", [
    (dict(RANK="2", WORLD_SIZE="2"), "rank 2 of 2"),
    (dict(RANK="0", WORLD_SIZE="two"), "not made of integers"),
    (dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="1"), "local rank 1 of 1"),
])
def test_a_broken_distributed_environment_is_refused(env, words):
    with pytest.raises(ConfigError, match=words):
        Ranks.from_env(env)


@pytest.mark.parametrize("extra, words", [
    (["--nproc", "3"], "must split evenly over 3 processes"),
    (["--nproc", "0"], "--nproc is a number of processes"),
])
def test_bad_process_counts_are_refused_before_anything_starts(tmp_path, capsys, extra, words):
    rc = main(["train", "--out", str(tmp_path / "run"), *CLI, "--steps", "4", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "[bad_config]" in err and words in err, err
    assert not (tmp_path / "run").exists()


def test_nproc_under_torchrun_must_match_it(tmp_path, capsys, monkeypatch):
    for k, v in dict(RANK="0", WORLD_SIZE="4", LOCAL_RANK="0", LOCAL_WORLD_SIZE="4").items():
        monkeypatch.setenv(k, v)
    rc = main(["train", "--out", str(tmp_path / "run"), *CLI, "--steps", "4", "--nproc", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "torchrun started 4 processes" in err, err
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_global_batch_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(TrainConfig(out=str(out), **dict(RUN, steps=1)), log=lambda *_: None).run(progress=False)
    before = (out / "train_state.json").read_text()
    with pytest.raises(ConfigError, match="global batch of 4 clips, and this one has 2: resume with --batch 4"):
        Trainer(TrainConfig(out=str(out), resume=str(out), **dict(RUN, batch=2)), log=lambda *_: None)
    assert (out / "train_state.json").read_text() == before
    # From the command line, refused before any rank starts, once; without --batch the saved one is taken.
    cli = [a for a in CLI if a not in ("--batch", "4")] + ["--steps", "2", "--stop-after", "1"]
    rc = main(["train", "--out", str(out), "--resume", str(out), *cli, "--batch", "2", "--nproc", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("global batch of 4 clips") == 1, err
    assert (out / "train_state.json").read_text() == before
    assert main(["train", "--out", str(out), "--resume", str(out), *cli]) == 0
    assert json.loads((out / "train_state.json").read_text())["batch"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_take_the_steps_of_one_gpu(tmp_path):
    """NCCL, one GPU per rank, fp32: the same run as one GPU with the whole batch (to a looser
    tolerance than on the CPU: cuDNN may pick other kernels, TF32 among them, for another batch)."""
    gpu = [a if a != "cpu" else "cuda" for a in CLI] + ["--steps", "4", "--workers", "0"]
    one = subprocess.run([sys.executable, "-m", "streamstyle", "train", "--out", str(tmp_path / "one"), *gpu],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "streamstyle", "train", "--out", str(tmp_path / "two"), *gpu,
                          "--nproc", "2"], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    assert "(nccl)" in two.stdout
    assert_same_run(tmp_path / "one", tmp_path / "two", atol=1e-4)
