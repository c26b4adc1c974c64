"""Give each concurrently running job its own GPUs.

Snakemake only *counts* a ``gpu`` resource (``resources: gpu=N`` on a rule, ``--resources gpu=8`` on the
command line); it never says *which* devices a job may use. On a local machine with several GPUs, two jobs
that each asked for one GPU would therefore both run on ``cuda:0``. This module keeps a small pool of
devices shared by all jobs of one user: a job takes ``n`` distinct devices by holding an exclusive
``flock`` on one slot lock file per device, then restricts itself to them via ``CUDA_VISIBLE_DEVICES``.

``flock`` locks belong to the open file and are dropped by the kernel when the last process holding it exits,
however it exits, so a crashed or killed job never leaves a GPU locked. A job that hands its GPUs to child
processes (torchrun) starts them with :func:`run_holding_gpus`, which gives them the lock files too: a holder
killed with ``SIGKILL`` then leaves its cards taken until the children have exited. ``jobs_per_gpu`` slots per
device allow deliberate sharing (small models). Under SLURM each job only sees its own allocation; the default lock
directory is then per SLURM job, so jobs of different allocations never wait on each other.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import time
from typing import Callable

__all__ = ["GpuLease", "acquire_gpus", "default_lock_dir", "run_holding_gpus", "visible_gpus"]

_HELD: list["GpuLease"] = []  # this process's live leases, whose lock files its GPU-using children inherit


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _visible() -> tuple[list[str], str]:
    """The visible device ids and where they came from (for error messages)."""
    if "VLMREPRO_GPUS" in os.environ:
        value = os.environ["VLMREPRO_GPUS"]
        return _split(value), f"VLMREPRO_GPUS={value}"
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        value = os.environ["CUDA_VISIBLE_DEVICES"]
        ids = _split(value)
        # CUDA stops at the first invalid id; "-1" is the usual way to hide every GPU.
        for i, device in enumerate(ids):
            if device.startswith("-"):
                ids = ids[:i]
                break
        return ids, f"CUDA_VISIBLE_DEVICES={value}"
    import torch  # lazily: jobs without GPUs need not pay for it

    # Counted via NVML where available, which does not initialise CUDA (apply_env() still works after it).
    return [str(i) for i in range(torch.cuda.device_count())], "torch.cuda.device_count()"


def visible_gpus() -> list[str]:
    """Device ids this process may use: ``VLMREPRO_GPUS`` if set (overrides; how tests simulate a multi-GPU
    machine), else ``CUDA_VISIBLE_DEVICES`` if set (empty: none), else ``0..torch.cuda.device_count()-1``."""
    return _visible()[0]


def default_lock_dir() -> str:
    """``VLMREPRO_GPU_LOCK_DIR``, else one directory per user (per SLURM job inside an allocation)."""
    if os.environ.get("VLMREPRO_GPU_LOCK_DIR"):
        return os.environ["VLMREPRO_GPU_LOCK_DIR"]
    job = os.environ.get("SLURM_JOB_ID")
    return f"/tmp/vlmrepro-gpu-locks-{os.getuid()}" + (f"-slurm{job}" if job else "")


class GpuLease:
    """Devices held by this process until :meth:`release` (or process exit). Also a context manager."""

    def __init__(self, devices: list[str], fds: list[int]):
        self.devices = devices
        self._fds = fds
        if fds:
            _HELD.append(self)

    def apply_env(self) -> None:
        """Restrict this process to the leased devices (``CUDA_VISIBLE_DEVICES``).

        Must be called before CUDA is initialised in this process (before the first tensor or model is put
        on a GPU): CUDA reads the variable once, at initialisation, and ignores later changes.
        """
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self.devices)

    def release(self) -> None:
        """Unlock the devices; safe to call twice."""
        fds, self._fds = self._fds, []
        if self in _HELD:
            _HELD.remove(self)
        for fd in fds:  # closed, not unlocked: a child holding the same file keeps the card taken
            os.close(fd)

    def __enter__(self) -> GpuLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"GpuLease(devices={self.devices}, held={bool(self._fds)})"


def run_holding_gpus(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(command, **kwargs)`` with the child holding every GPU lock of this process too (its lock
    files passed as inherited descriptors). An ``flock`` lives until every process holding the file has closed it,
    so if this process is killed the cards stay taken while the child (torchrun's agent, which waits for its
    workers) runs."""
    return subprocess.run(command, pass_fds=[fd for lease in _HELD for fd in lease._fds], **kwargs)


def _private_lock_dir(lock_dir: str) -> None:
    """Create ``lock_dir`` (mode 0700) or check an existing one: on a shared node another user could have created
    it first, or planted a symlink, to steer or block this user's jobs. A directory that is a symlink, is owned by
    someone else, or is writable by group or others is refused."""
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    info = os.lstat(lock_dir)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RuntimeError(f"GPU lock directory {lock_dir} is not a directory (a symlink?): remove it, or set "
                           "VLMREPRO_GPU_LOCK_DIR to a directory of your own")  # fmt: skip
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RuntimeError(
            f"GPU lock directory {lock_dir} is owned by uid {info.st_uid} with mode {stat.filemode(info.st_mode)}: "
            "it must be yours and writable by you only; remove it, or set VLMREPRO_GPU_LOCK_DIR"
        )


def _try_lock(path: str) -> int | None:
    # never through a symlink: a planted link would have the open truncate its target
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as err:  # ELOOP: the lock file is a symlink
        raise RuntimeError(f"GPU lock file {path} cannot be opened safely ({err.strerror}): remove it") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a human looking at the lock dir
    return fd


def _try_acquire(n: int, devices: list[str], jobs_per_gpu: int, lock_dir: str) -> GpuLease | None:
    """One attempt: all ``n`` devices or none. Lower slots first, so jobs spread over devices before sharing."""
    taken: dict[str, int] = {}
    for slot in range(jobs_per_gpu):
        for device in devices:
            if len(taken) == n:
                break
            if device in taken:
                continue
            name = device.replace("/", "_")  # MIG ids contain slashes
            fd = _try_lock(os.path.join(lock_dir, f"gpu-{name}.slot-{slot}.lock"))
            if fd is not None:
                taken[device] = fd
    lease = GpuLease(list(taken), list(taken.values()))
    if len(taken) == n:
        return lease
    lease.release()  # never sit on part of a request: two multi-GPU jobs could deadlock
    return None


def acquire_gpus(
    n: int,
    jobs_per_gpu: int = 1,
    lock_dir: str | None = None,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    log: Callable[[str], object] = print,
) -> GpuLease:
    """Take ``n`` distinct visible devices, waiting (``poll_s``) until that many are free.

    Raises RuntimeError at once if fewer than ``n`` devices are visible at all, and TimeoutError after
    ``timeout_s`` seconds (None: wait forever). ``n == 0`` returns an empty lease.
    """
    if n < 0 or jobs_per_gpu < 1:
        raise ValueError(f"need n >= 0 and jobs_per_gpu >= 1, got n={n}, jobs_per_gpu={jobs_per_gpu}")
    if n == 0:
        return GpuLease([], [])
    devices, source = _visible()
    if len(devices) < n:
        raise RuntimeError(f"job needs {n} GPUs, {len(devices)} visible ({source})")
    lock_dir = lock_dir or default_lock_dir()
    _private_lock_dir(lock_dir)
    start = time.monotonic()
    waiting_logged = False
    while True:
        lease = _try_acquire(n, devices, jobs_per_gpu, lock_dir)
        waited = time.monotonic() - start
        if lease is not None:
            log(f"GPUs {','.join(lease.devices)} taken after waiting {waited:.1f} s (lock dir {lock_dir})")
            return lease
        if timeout_s is not None and waited >= timeout_s:
            raise TimeoutError(
                f"no {n} free GPU(s) among {','.join(devices)} after {waited:.1f} s "
                f"(jobs_per_gpu={jobs_per_gpu}, lock dir {lock_dir})"
            )
        if not waiting_logged:
            log(f"waiting for {n} free GPU(s) among {','.join(devices)} (lock dir {lock_dir})")
            waiting_logged = True
        time.sleep(poll_s if timeout_s is None else max(0.0, min(poll_s, timeout_s - waited)))
