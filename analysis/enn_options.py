"""ENN options (issue 16): fidelity of the decoded average on real updates, and the FL accuracy table.

``python -m analysis.enn_options fidelity SCENARIO --out DIR [--variant NAME=R1,R2 ...]
[--loop-ratios R ...] [--loop-rounds 10] [--loop-variants NAME ...]`` simulates real updates of the scenario's model and
setup and writes

* ``fidelity.csv`` / ``.md``: per code variant (``gaussian``, ``side``, ``proxy``, ``proxy+side``,
  ``linear proxy+side``, ``layers``; see :data:`VARIANTS`) and ratio, the cosine and relative L2 error of the decoded average against the exact average
  of the same 9 real updates (mean over ``--rounds`` FedAvg rounds advanced by the exact mean,
  :func:`fedsim.enn.fidelity.collect_updates`), and the exact bytes per client;
* ``subspace.csv`` / ``.md`` (``--subspace-chunks``): the best linear code's cosine per round
  at ratios 4 and 8, with a principal basis fitted on the scored updates (oracle) or on 3
  rounds of proxy updates (:func:`subspace_table`);
* ``loop.csv`` / ``.md`` (``--loop-ratios``): the same setup with the codec **in the loop** (the
  model advances by the decoded average) for ``--loop-rounds`` rounds, each of
  ``--loop-variants`` (default ``linear proxy+side``) with and without error feedback: per round the cosine of the decoded average against the mean of the clients' raw
  updates, and of the running sum of decoded averages against the running sum of raw means.

``python -m analysis.enn_options accuracy DIR [DIR ...] --out DIR`` reads ``fedsim run`` folders
and writes ``accuracy.csv`` / ``.md``: final test accuracy, its gap to FedAvg, the best accuracy,
upload bytes per client and round, and the simulated time to the target accuracy per scheme.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
import torch

from analysis.tables import load_results, to_markdown
from fedsim.codecs.base import UpdateCodec
from fedsim.codecs.enn import EnnCodec, EnnCodecConfig
from fedsim.codecs.enn_layers import EnnLayerCodec
from fedsim.codecs.factory import make_codec
from fedsim.config import RunConfig
from fedsim.data import load_dataset
from fedsim.engine import build_initial_model
from fedsim.enn.fidelity import RealClients, collect_updates, fidelity_rows
from fedsim.enn.metrics import average_fidelity
from fedsim.scenario import load_scenario

#: Linear ENN: learned linear code, linear decoder (the ``*_lin`` schemes).
LINEAR = {"activation": "identity", "encoder_hidden": [], "residual_blocks": 0}
#: Code variants of the fidelity table: codec fields on top of the scenario's ENN settings.
VARIANTS: dict[str, dict] = {
    "gaussian": {},
    "side": {"side_info": True},
    "proxy": {"pretrain": {"data": "proxy"}},
    "proxy+side": {"side_info": True, "pretrain": {"data": "proxy"}},
    "linear proxy+side": {"side_info": True, "pretrain": {"data": "proxy"}, **LINEAR},
    "layers": {"structure": "layers"},
}


def base_run(scenario: str) -> RunConfig:
    """The scenario's ``fedavg`` run (the common setup every ENN scheme shares)."""
    runs = {r.scheme: r for r in load_scenario(scenario).runs}
    return runs["fedavg"]


def enn_codec(cfg: RunConfig, ratio: int, scale: float, fields: dict) -> UpdateCodec:
    """The ENN codec a scheme with these codec ``fields`` gets in ``cfg``'s run (same cache)."""
    doc = {"kind": "enn", "ratio": ratio, "scale": scale, **fields}
    data = load_dataset(cfg.data.dataset)
    model = build_initial_model(cfg, data)
    codec = make_codec(EnnCodecConfig.model_validate(doc), slots=cfg.clients_per_round(), model=model)
    assert isinstance(codec, (EnnCodec, EnnLayerCodec))
    return codec


def fidelity_table(cfg: RunConfig, plan: dict[str, list[int]], scale: float,
                   rounds: int) -> pd.DataFrame:
    """One row per (variant, ratio) of ``plan``: mean cosine / relative error over ``rounds``
    real rounds."""
    updates = collect_updates(cfg, rounds)
    starts = [RealClients(cfg).initial()]  # the global model each round starts from
    for ups in updates[:-1]:
        starts.append(starts[-1] + ups.mean(0))
    raw = pd.concat([fidelity_rows(updates, {ratio: enn_codec(cfg, ratio, scale, VARIANTS[name])},
                                   name, starts)
                     for name, ratios in plan.items() for ratio in ratios], ignore_index=True)
    raw = raw.rename(columns={"model": "variant"})
    out = raw.groupby(["variant", "ratio"], sort=False).agg(
        cosine=("cosine", "mean"), cosine_min=("cosine", "min"), rel_error=("rel_error", "mean"),
        bytes_per_client=("bytes_per_client", "first"), fp32_bytes=("fp32_bytes", "first"),
        rounds=("round", "count")).reset_index()
    out["byte_ratio"] = out["fp32_bytes"] / out["bytes_per_client"]
    out["linear_cosine"] = [math.sqrt(1 / r) for r in out["ratio"]]
    return out


def subspace_table(cfg: RunConfig, chunks: list[int], ratios: list[int], rounds: int,
                   proxy_rounds: int) -> pd.DataFrame:
    """Cosine of the best linear code's decoded average (projection on ``n / ratio`` principal
    directions of RMS-normalised chunks), per real round, for two bases: ``oracle`` (fitted on
    the scored mean-update chunks themselves; optimistic) and ``proxy`` (fitted on the mean
    updates of ``proxy_rounds`` proxy FedAvg rounds, :mod:`fedsim.enn.proxy`)."""
    from fedsim.enn.proxy import EnnProxyConfig, proxy_updates

    real = [u.mean(0) for u in collect_updates(cfg, rounds)]
    model = build_initial_model(cfg, load_dataset(cfg.data.dataset))
    proxy = [u.mean(0) for u in proxy_updates(model, EnnProxyConfig(rounds=proxy_rounds),
                                             cfg.clients_per_round())]
    def split(vectors: list[torch.Tensor], n: int) -> torch.Tensor:
        p = vectors[0].numel()
        padded = torch.zeros(len(vectors), -(-p // n) * n)
        padded[:, :p] = torch.stack(vectors)
        return padded.view(len(vectors), -1, n)

    rows = []
    for n in chunks:
        scored = split(real, n)
        for basis_name, src in (("oracle", scored), ("proxy", split(proxy, n))):
            flat = src.reshape(-1, n)
            norms = flat.norm(dim=1, keepdim=True)
            unit = flat[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
            _, _, v = torch.linalg.svd(unit.double(), full_matrices=False)
            for ratio in ratios:
                b = v[: n // ratio].float()
                for rnd, x in enumerate(scored, start=1):
                    cos = average_fidelity((x @ b.T) @ b, x)["cosine"]
                    rows.append({"chunk": n, "ratio": ratio, "basis": basis_name, "round": rnd,
                                 "cosine": cos})
    return pd.DataFrame(rows)


def loop_table(cfg: RunConfig, ratio: int, scale: float, fields: dict, rounds: int,
               label: str) -> pd.DataFrame:
    """Per round, decoded-average fidelity with the codec in the loop (``fields`` as in a scheme).

    Columns: ``cosine`` / ``rel_error`` against the mean of the raw updates of the round,
    ``cum_cosine`` / ``cum_rel_error`` of the running sums, and ``ef_rel_error`` (mean over the
    round's clients of ``||x - d|| / ||x||``; NaN without error feedback).
    """
    codec = enn_codec(cfg, ratio, scale, fields)
    clients = RealClients(cfg)
    flat = clients.initial()
    encoders: dict[int, object] = {}
    cum_true, cum_dec = torch.zeros_like(flat), torch.zeros_like(flat)
    rows = []
    for rnd in range(1, rounds + 1):
        codec.round_payload(rnd, flat)
        chosen, ups = clients.train_round(rnd, flat)
        payloads, efs = [], []
        for slot, (cid, up) in enumerate(zip(chosen, ups)):
            enc = encoders.setdefault(cid, codec.for_client(cid)).encode(
                up, seed=0, slot=slot, rnd=rnd)
            payloads.append(enc.payload)
            efs.append(enc.metrics.get("ef_rel_error", math.nan))
        k = len(ups)
        decoded = codec.aggregate(payloads, [1.0 / k] * k, list(range(k)), numel=flat.numel())
        true = ups.mean(0)
        cum_true, cum_dec = cum_true + true, cum_dec + decoded
        fid, cum = average_fidelity(decoded, true), average_fidelity(cum_dec, cum_true)
        rows.append({"variant": label, "ratio": ratio, "round": rnd, **fid,
                     "cum_cosine": cum["cosine"], "cum_rel_error": cum["rel_error"],
                     "ef_rel_error": sum(efs) / k})
        flat = flat + decoded
    return pd.DataFrame(rows)


def accuracy_table(dirs: list[str]) -> pd.DataFrame:
    """One row per scheme of the ``fedsim run`` folders ``dirs`` (FedAvg gap from its row)."""
    rows = []
    for d in dirs:
        res = load_results(d)
        for _, s in res.summary.iterrows():
            r = res.rounds[res.rounds["scheme"] == s["scheme"]].sort_values("round")
            acc = r.dropna(subset=["test_accuracy"])
            last = r[r["round"] > 0]
            rows.append({"scheme": s["scheme"], "final_accuracy": float(acc["test_accuracy"].iloc[-1]),
                         "best_accuracy": float(acc["test_accuracy"].max()),
                         "bytes_up_per_round": int(last["bytes_up"].iloc[-1]),
                         "time_to_target_s": s.get("time_to_target_s", math.nan),
                         "rounds": int(last["round"].max())})
    out = pd.DataFrame(rows)
    fedavg = out.loc[out["scheme"] == "fedavg", "final_accuracy"]
    if len(fedavg):
        out["gap_pp"] = 100 * (out["final_accuracy"] - float(fedavg.iloc[0]))
    return out


def _write(table: pd.DataFrame, out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{stem}.csv", index=False)
    md = to_markdown(table)
    (out / f"{stem}.md").write_text(md + "\n")
    print(md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.enn_options", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fidelity")
    f.add_argument("scenario")
    f.add_argument("--out", required=True)
    f.add_argument("--variant", action="append", default=[], metavar="NAME=R1,R2",
                   help=f"variant and ratios, repeatable; names: {', '.join(VARIANTS)}")
    f.add_argument("--rounds", type=int, default=3)
    f.add_argument("--scale", type=float, default=265.0)
    f.add_argument("--loop-ratios", type=int, nargs="*", default=[])
    f.add_argument("--subspace-chunks", type=int, nargs="*", default=[],
                   help="chunk lengths for the best-linear-code (oracle / proxy PCA) table")
    f.add_argument("--loop-rounds", type=int, default=10)
    f.add_argument("--loop-variants", nargs="*", default=["linear proxy+side"],
                   choices=list(VARIANTS), help="variants run in the loop (with and without EF)")
    a = sub.add_parser("accuracy")
    a.add_argument("dirs", nargs="+")
    a.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "accuracy":
        _write(accuracy_table(args.dirs), Path(args.out), "accuracy")
        return 0
    cfg = base_run(args.scenario)
    plan = {name: [int(r) for r in ratios.split(",")]
            for name, ratios in (v.split("=") for v in args.variant)}
    if plan:
        _write(fidelity_table(cfg, plan, args.scale, args.rounds), Path(args.out), "fidelity")
    if args.subspace_chunks:
        _write(subspace_table(cfg, args.subspace_chunks, [4, 8], args.rounds, 3), Path(args.out),
               "subspace")
    loops = []
    for ratio in args.loop_ratios:
        for name in args.loop_variants:
            fields = VARIANTS[name]
            for label, ef in ((name, False), (f"{name}+ef", True)):
                loops.append(loop_table(cfg, ratio, args.scale, {**fields, "error_feedback": ef},
                                        args.loop_rounds, label))
    if loops:
        _write(pd.concat(loops, ignore_index=True), Path(args.out), "loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
