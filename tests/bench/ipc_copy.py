"""Does shared memory beat pickling for sending a batch to a worker? Measure it:

    .venv/bin/python -m tests.bench.ipc_copy

Sends 400 batches of 500 records of 1.3 kB to a forkserver child, either pickled
through the pipe (what the pool does) or copied into a shared memory segment with
only the offsets through the pipe, and prints the parent's CPU time per batch.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from multiprocessing import shared_memory
from multiprocessing.connection import Connection

import numpy as np

RECORDS, SIZE, ROUNDS = 500, 1300, 400


def child(conn: Connection, name: str) -> None:
    shm = shared_memory.SharedMemory(name=name) if name else None
    buffer = shm.buf if shm is not None else None
    while message := conn.recv_bytes():
        if buffer is None:
            values = pickle.loads(message)  # noqa: S301 - our own parent
        else:
            offsets = np.frombuffer(message, dtype=np.int64)
            values = [bytes(buffer[offsets[i] : offsets[i + 1]]) for i in range(RECORDS)]
        assert len(values) == RECORDS
        conn.send_bytes(b"ok")
    del buffer
    if shm is not None:
        shm.close()


def measure(use_shm: bool) -> tuple[float, float]:
    values = [os.urandom(SIZE) for _ in range(RECORDS)]
    shm = shared_memory.SharedMemory(create=True, size=RECORDS * SIZE * 2) if use_shm else None
    parent, other = multiprocessing.Pipe()
    context = multiprocessing.get_context("forkserver")
    process = context.Process(target=child, args=(other, shm.name if shm else ""))
    process.start()
    buffer = shm.buf if shm is not None else None
    cpu, wall = 0.0, 0.0
    for round_ in range(ROUNDS + 1):
        if round_ == 1:  # round 0 warms up: the child has started and seen a batch
            cpu, wall = time.process_time(), time.perf_counter()
        if buffer is None:
            parent.send_bytes(pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL))
        else:
            offsets = np.zeros(RECORDS + 1, dtype=np.int64)
            position = 0
            for i, value in enumerate(values):
                buffer[position : position + len(value)] = value
                position += len(value)
                offsets[i + 1] = position
            parent.send_bytes(offsets.tobytes())
        parent.recv_bytes()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    parent.send_bytes(b"")
    process.join()
    del buffer
    if shm is not None:
        shm.close()
        shm.unlink()
    return cpu / ROUNDS, wall / ROUNDS


def main() -> None:
    for use_shm in (False, True, False, True):
        cpu, wall = measure(use_shm)
        name = "shared memory" if use_shm else "pickle + pipe"
        print(  # noqa: T201
            f"{name:14}: parent CPU {cpu * 1e6:6.1f} us/batch "
            f"({cpu / RECORDS * 1e6:.2f} us/record), wall {wall * 1e6:6.1f} us/batch"
        )


if __name__ == "__main__":
    main()
