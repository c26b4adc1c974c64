"""The GPU pool (vlmrepro.gpus) on a simulated two-GPU machine: no real GPU needed."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmrepro import gpus
from vlmrepro.smk import running_job

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool(tmp_path, monkeypatch):
    """Two visible GPUs, a private lock dir; returns ``acquire(n, **kw)`` with short timeouts."""
    monkeypatch.setenv("VLMREPRO_GPUS", "0,1")
    lock_dir = tmp_path / "locks"
    leases = []

    def acquire(n, **kw):
        kw = {"lock_dir": str(lock_dir), "timeout_s": 0.3, "poll_s": 0.05, "log": lambda msg: None, **kw}
        lease = gpus.acquire_gpus(n, **kw)
        leases.append(lease)
        return lease

    acquire.lock_dir = lock_dir
    yield acquire
    for lease in leases:
        lease.release()


def test_visible_gpus(monkeypatch):
    monkeypatch.delenv("VLMREPRO_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert gpus.visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus.visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus.visible_gpus() == []
    monkeypatch.setenv("VLMREPRO_GPUS", "0,1,2")
    assert gpus.visible_gpus() == ["0", "1", "2"]


def test_distinct_devices_then_wait_then_freed(pool):
    a, b = pool(1), pool(1)
    assert sorted(a.devices + b.devices) == ["0", "1"]
    with pytest.raises(TimeoutError, match="lock dir"):
        pool(1)
    a.release()
    assert pool(1).devices == a.devices


def test_jobs_per_gpu_shares_devices(pool):
    leases = [pool(1, jobs_per_gpu=2) for _ in range(4)]
    assert Counter(d for lease in leases for d in lease.devices) == {"0": 2, "1": 2}
    assert len({lease.devices[0] for lease in leases[:2]}) == 2  # spread over devices before sharing
    with pytest.raises(TimeoutError):
        pool(1, jobs_per_gpu=2)
    with pytest.raises(TimeoutError):
        pool(1)  # a job that will not share finds no device to itself either


def test_multi_gpu_request_is_all_or_nothing(pool):
    both = pool(2)
    assert sorted(both.devices) == ["0", "1"]
    both.release()

    one = pool(1)
    with pytest.raises(TimeoutError):
        pool(2)
    other = pool(1)  # the failed 2-GPU request does not keep the other device locked
    assert {one.devices[0], other.devices[0]} == {"0", "1"}
    one.release()
    other.release()
    assert sorted(pool(2).devices) == ["0", "1"]


def test_killed_holder_frees_its_gpu(pool, monkeypatch):
    monkeypatch.setenv("VLMREPRO_GPUS", "0")
    code = (
        "import sys, time\n"
        "from vlmrepro.gpus import acquire_gpus\n"
        "lease = acquire_gpus(1, lock_dir=sys.argv[1])\n"
        "print('LOCKED', ','.join(lease.devices), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(pool.lock_dir)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("LOCKED"):
                break
        else:
            pytest.fail(f"holder never locked: {proc.stderr.read()}")
        assert line.split() == ["LOCKED", "0"]
        with pytest.raises(TimeoutError):
            pool(1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert pool(1, timeout_s=2).devices == ["0"]


def test_a_killed_holders_card_stays_taken_until_its_child_exits(pool, monkeypatch, tmp_path):
    """A fine-tune hands its GPUs to torchrun: killing the job (SIGKILL) must not free the card while the child
    still trains on it. The child holds the lock file too (run_holding_gpus), so the card is free only once it
    has exited."""
    monkeypatch.setenv("VLMREPRO_GPUS", "0")
    started, stop = tmp_path / "started", tmp_path / "stop"
    child = (
        f"import os, pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
        f"while not os.path.exists({str(stop)!r}): time.sleep(0.05)\n"
    )
    code = (
        "import sys\n"
        "from vlmrepro.gpus import acquire_gpus, run_holding_gpus\n"
        "lease = acquire_gpus(1, lock_dir=sys.argv[1], log=lambda _: None)\n"
        "print('LOCKED', flush=True)\n"
        "run_holding_gpus([sys.executable, '-c', sys.argv[2]])\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(pool.lock_dir), child],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the child is found (and cleaned up) through it
    )
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:  # the holder has started its child
            time.sleep(0.05)
        assert started.exists(), "the child never started"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        with pytest.raises(TimeoutError):  # the holder is dead, its child is not
            pool(1, timeout_s=0.5)
        stop.touch()
        assert pool(1, timeout_s=10).devices == ["0"]  # free once the child has exited
    finally:
        stop.touch()
        holder.stdout.close()
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_more_gpus_than_visible(pool):
    with pytest.raises(RuntimeError, match=r"job needs 4 GPUs, 2 visible \(VLMREPRO_GPUS=0,1\)"):
        pool(4)
    assert pool(0).devices == []


def test_apply_env(pool, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    lease = pool(2)
    lease.apply_env()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(lease.devices)


def fake_snakemake(log, gpu=1, run=None):
    return SimpleNamespace(
        log=[str(log)],
        threads=1,
        rule="x",
        resources=SimpleNamespace(gpu=gpu),
        params=SimpleNamespace(run={"device": "auto"} if run is None else run),
    )


def test_running_job_without_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMREPRO_GPUS", "")
    monkeypatch.setenv("VLMREPRO_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with running_job(fake_snakemake(tmp_path / "x.log")):
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not (tmp_path / "locks").exists()
    assert (tmp_path / "x.log").read_text() == ""


def test_running_job_leases_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMREPRO_GPUS", "3")
    monkeypatch.setenv("VLMREPRO_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    log = tmp_path / "x.log"
    with running_job(fake_snakemake(log)):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        with pytest.raises(TimeoutError):  # held for the whole job
            gpus.acquire_gpus(1, timeout_s=0, log=lambda msg: None)
    assert "GPUs 3 taken" in log.read_text() and "CUDA_VISIBLE_DEVICES=3" in log.read_text()
    gpus.acquire_gpus(1, timeout_s=0, log=lambda msg: None).release()  # released on exit

    # A job pinned to the CPU leases nothing, even with a gpu resource.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with running_job(fake_snakemake(log, run={"device": "cpu"})):
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


# --- a shared node: the lock directory and files cannot be steered by another user --------------------------------


def test_lock_dir_is_created_private(pool):
    pool(1)
    assert (pool.lock_dir.stat().st_mode & 0o777) == 0o700


def test_group_writable_or_symlinked_lock_dir_is_refused(pool, tmp_path):
    pool.lock_dir.mkdir()
    pool.lock_dir.chmod(0o777)
    with pytest.raises(RuntimeError, match="writable by you only"):
        pool(1)
    pool.lock_dir.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    pool.lock_dir.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RuntimeError, match="not a directory"):
        pool(1)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the directory to another user needs root")
def test_lock_dir_of_another_user_is_refused(pool):
    pool.lock_dir.mkdir(mode=0o700)
    os.chown(pool.lock_dir, 12345, 12345)
    with pytest.raises(RuntimeError, match="owned by uid 12345"):
        pool(1)


def test_a_planted_symlink_lock_file_is_not_followed(pool, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    pool.lock_dir.mkdir(mode=0o700)
    for slot_file in ("gpu-0.slot-0.lock", "gpu-1.slot-0.lock"):
        (pool.lock_dir / slot_file).symlink_to(victim)
    with pytest.raises(RuntimeError, match="cannot be opened safely"):
        pool(1)
    assert victim.read_text() == "keep me"
