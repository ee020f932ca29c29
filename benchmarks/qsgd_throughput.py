"""Single-core throughput of the QSGD codec: quantize+pack and unpack+dequantize, in coords/s.

Run pinned to one core, e.g.::

    PYTHONPATH=. NUMBA_NUM_THREADS=1 taskset -c 0 python benchmarks/qsgd_throughput.py

Reports the median of ``--repeats`` timed runs after one untimed warm-up (numba JIT). Two
timings per direction: the numba kernel alone, and the full codec call (tensor conversion,
header, payload copy to ``bytes``, validation).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from fedsim.codecs import qsgd_kernels as kern
from fedsim.codecs.qsgd import HEADER_BYTES, QsgdCodec


def _median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and median thread-CPU seconds of ``fn`` (after one warm-up call)."""
    fn()  # warm-up: JIT compilation (or cache load) and first-touch page faults
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(wall), statistics.median(cpu)


def _bench_levels(v: torch.Tensor, s: int, args: argparse.Namespace) -> None:
    """Time the four operations for one number of levels s and print one row each."""
    codec = QsgdCodec(s, args.bucket_size, args.norm)
    arr = v.numpy()
    payload = codec.encode(v, seed=1, slot=0).payload
    nb = -(-args.numel // args.bucket_size)
    norms = np.empty(nb, dtype=np.float32)
    codes = np.empty(len(payload) - HEADER_BYTES - 4 * nb, dtype=np.uint8)
    out = np.zeros(args.numel, dtype=np.float32)
    in_codes = np.frombuffer(payload, np.uint8, offset=HEADER_BYTES + 4 * nb)
    in_norms = np.frombuffer(payload, np.float32, count=nb, offset=HEADER_BYTES).copy()
    timings = {
        "quantize+pack (kernel)": lambda: kern.quantize_pack(
            arr, s, args.bucket_size, args.norm == "max", codec.bits, np.uint64(1), norms, codes),
        "encode() (full codec)": lambda: codec.encode(v, seed=1, slot=0),
        "unpack+dequantize (kernel)": lambda: kern.dequantize_add(
            in_codes, in_norms, s, args.bucket_size, args.numel, codec.bits, 1.0, out),
        "decode() (full codec)": lambda: codec.decode(payload, numel=args.numel),
    }
    for op, fn in timings.items():
        wall, cpu = _median_seconds(fn, args.repeats)
        print(f"{s:>5} {codec.bits:>4}  {op:<26} {args.numel / wall / 1e6:>8.1f} "
              f"{args.numel / cpu / 1e6:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=10_000_000, help="coordinates p")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 7, 127], help="s values")
    parser.add_argument("--bucket-size", type=int, default=512, help="d")
    parser.add_argument("--norm", choices=["l2", "max"], default="l2")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.set_num_threads(1)
    v = torch.randn(args.numel, generator=torch.Generator().manual_seed(0))
    print(f"p={args.numel:,} d={args.bucket_size} norm={args.norm}; median of {args.repeats} "
          "runs in Mcoords/s, by wall clock and by thread CPU time (robust to a shared machine)")
    print(f"{'s':>5} {'bits':>4}  {'operation':<26} {'wall':>8} {'cpu':>8}")
    for s in args.levels:
        _bench_levels(v, s, args)


if __name__ == "__main__":
    main()
