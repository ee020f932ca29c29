"""Host seconds of one secure-aggregation round's protocol math (no simulation, no training).

Each client's work (key pairs, Shamir shares, sealed bundles, masking) and the server's
(routing, summing, reconstructing and unmasking) for ``n`` clients, ``p`` coordinates and a
fraction of clients dropping out before their masked input (the server then rebuilds their
mask keys and removes their pairwise masks). Goal: at 10 clients per round the protocol costs
far less host time than the round's local training (LeNet-5, p = 61,706: seconds on a CPU).
The server's cost grows as n^3: each of its ~n Shamir reconstructions interpolates t ~ n/2
shares with PyCryptodome's pure-Python GF(2^128) arithmetic (O(t^2) products, t inversions).

Usage::

    python benchmarks/secagg_speed.py [--clients 10 50] [--numel 61706] [--dropout 0.3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.secagg import ClientRound, Ring, ServerRound, threshold_count
from fedsim.secagg.protocol import SECRET_BYTES


def one_round(n: int, numel: int, dropout: float) -> tuple[float, float]:
    """(client seconds per client, server seconds) of one round."""
    ring, rng = Ring(32, 16), np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(scale=0.01, size=numel).astype(np.float32))
    dropped = set(rng.choice(n, size=int(dropout * n), replace=False).tolist())
    t_client = t_server = 0.0
    h = time.perf_counter()
    clients = {c: ClientRound(c, 1, rng.bytes(SECRET_BYTES), ring) for c in range(n)}
    advertised = {c: cl.advertise() for c, cl in clients.items()}
    t_client += time.perf_counter() - h
    h = time.perf_counter()
    server = ServerRound(ring, numel, threshold_count(0.5, n))
    keys = server.key_list(advertised)
    t_server += time.perf_counter() - h
    h = time.perf_counter()
    shares = {c: cl.share_keys(keys) for c, cl in clients.items()}
    t_client += time.perf_counter() - h
    h = time.perf_counter()
    routed = server.route(shares)
    t_server += time.perf_counter() - h
    masked = {}
    h = time.perf_counter()
    for c in routed:
        if c not in dropped:
            masked[c], _ = clients[c].masked_input(routed[c], x, 10)
    t_client += time.perf_counter() - h
    h = time.perf_counter()
    for c, payload in masked.items():
        server.add_masked(c, payload)
    request = server.unmask_request()
    t_server += time.perf_counter() - h
    h = time.perf_counter()
    reveals = {c: clients[c].reveal(request) for c in masked}
    t_client += time.perf_counter() - h
    h = time.perf_counter()
    server.unmask(reveals)
    t_server += time.perf_counter() - h
    return t_client / n, t_server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--numel", type=int, default=61_706)
    ap.add_argument("--dropout", type=float, default=0.3)
    args = ap.parse_args()
    print("clients  numel  dropout  client_s_per_client  server_s")
    for n in args.clients:
        c, s = one_round(n, args.numel, args.dropout)
        print(f"{n:7d}  {args.numel:5d}  {args.dropout:7.2f}  {c:19.4f}  {s:8.3f}")


if __name__ == "__main__":
    main()
