"""Plots of a results folder (seaborn): learning curves, communication, time to target, attacks.

Every function takes :class:`analysis.tables.Results`, writes one PNG and returns its path, or
None when the folder lacks what the plot needs. Curves show the mean over seeds with a band of
one standard deviation of the accuracy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from analysis.tables import UPLINK, Results, mbit

DPI = 120


def _curves(res: Results) -> pd.DataFrame:
    """Per (scheme, uplink, round): mean sim time, mean cumulative MB, accuracy mean and std."""
    r = res.rounds.sort_values(["run_id", "round"]).copy()
    r["MB"] = (r["bytes_up"] + r["bytes_down"] + r["bytes_keys"]) / 1e6
    r["cum_MB"] = r.groupby("run_id")["MB"].cumsum()
    r["uplink"] = r[UPLINK].map(mbit) if UPLINK in r else "as configured"
    r = r.dropna(subset=["test_accuracy"])
    return r.groupby(["scheme", "uplink", "round"], sort=False).agg(
        sim_time_s=("sim_time_end", "mean"), cum_MB=("cum_MB", "mean"),
        acc=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"),
        seeds=("seed", "nunique")).reset_index().fillna({"acc_std": 0.0})


def _uplink_order(values) -> list[str]:
    return sorted(set(values), key=lambda s: (not s[0].isdigit(), float(s.split()[0])
                                              if s[0].isdigit() else 0.0))


def accuracy_curves(res: Results, x: str, out: Path) -> Path:
    """Test accuracy vs simulated time (``x="sim_time_s"``) or cumulative MB (``x="cum_MB"``),
    one panel per uplink level, one line per scheme."""
    c = _curves(res)
    uplinks = _uplink_order(c["uplink"])
    schemes = list(dict.fromkeys(c["scheme"]))
    colors = dict(zip(schemes, sns.color_palette("colorblind", len(schemes))))
    fig, axes = plt.subplots(1, len(uplinks), figsize=(3.6 * len(uplinks) + 1.5, 3.6),
                             sharey=True, squeeze=False)
    for ax, up in zip(axes[0], uplinks):
        for scheme in schemes:
            g = c[(c["uplink"] == up) & (c["scheme"] == scheme)]
            ax.plot(g[x], g["acc"], marker="o", ms=3, color=colors[scheme], label=scheme)
            ax.fill_between(g[x], g["acc"] - g["acc_std"], g["acc"] + g["acc_std"],
                            color=colors[scheme], alpha=0.2, lw=0)
        ax.axhline(res.target, color="grey", ls=":", lw=1)
        ax.set_title(f"uplink {up}")
        ax.set_xlabel("simulated time (s)" if x == "sim_time_s" else "cumulative traffic (MB)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    seeds = int(c["seeds"].max())
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="scheme", loc="center right")
    what = "simulated time" if x == "sim_time_s" else "cumulative bytes (up + down + keys)"
    fig.suptitle(f"Test accuracy vs {what}: mean ± 1 sd over {seeds} seed(s); "
                 f"dotted: target {res.target:g}")
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
    return _save(fig, out)


def traffic_by_kind(res: Results, out: Path) -> Path | None:
    """Mean MB per round and scheme, split by message kind (from the messages table)."""
    m = res.messages
    if not len(m) or "kind" not in m:
        return None
    per_run = m[m["round"] > 0].groupby(["scheme", "run_id", "kind", "round"])["bytes"].sum()
    per_round = (per_run.groupby(["scheme", "kind"]).mean() / 1e6).rename("MB").reset_index()
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.barplot(per_round, x="scheme", y="MB", hue="kind", ax=ax, palette="colorblind")
    ax.set_ylabel("traffic per round (MB)")
    ax.set_xlabel("scheme")
    ax.set_title("Traffic per round by message kind (mean over rounds and runs)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="message kind", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return _save(fig, out)


def time_to_target(res: Results, out: Path) -> Path | None:
    """Simulated time to the target accuracy vs uplink speed, one line per scheme (log-log)."""
    s = res.summary
    if UPLINK not in s or s[UPLINK].nunique() < 2:
        return None
    s = s.assign(uplink_mbit=s[UPLINK].astype(float) / 1e6)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(s, x="uplink_mbit", y="time_to_target_s", hue="scheme", style="scheme",
                 markers=True, dashes=False, errorbar="sd", ax=ax, palette="colorblind")
    missed = s[s["time_to_target_s"].isna()].groupby("scheme").size()
    note = ("; never reached: " + ", ".join(f"{k} ({v} runs)" for k, v in missed.items())
            if len(missed) else "")
    ax.set(xscale="log", yscale="log", xlabel="client uplink (Mbit/s)",
           ylabel=f"time to {res.target:g} accuracy (s)")
    ax.set_title(f"Simulated time to target (mean ± sd over seeds){note}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="scheme")
    fig.tight_layout()
    return _save(fig, out)


def attack_success(res: Results, out: Path) -> Path | None:
    """Reconstruction quality (PSNR in dB, SSIM) per scheme and adversary, if attacks ran."""
    a = res.attacks
    metrics = [m for m in ("psnr_db", "ssim") if m in a]
    if not len(a) or not metrics or "adversary" not in a:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.barplot(a, x="scheme", y=metric, hue="adversary", ax=ax, palette="colorblind",
                    errorbar="sd")
        ax.set_ylabel("PSNR (dB), higher = attack more successful" if metric == "psnr_db"
                      else "SSIM (0-1), higher = attack more successful")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Gradient-inversion attack success (mean ± sd over attacked images)")
    fig.tight_layout()
    return _save(fig, out)


def privacy_tradeoff(table: pd.DataFrame, out: Path) -> Path | None:
    """Final accuracy against the server's median attack PSNR per scheme, bubble area ~ bytes per
    client per round (:func:`analysis.tables.privacy_table`)."""
    psnr = next((c for c in table.columns if c.startswith("median_psnr_")), None)
    if not len(table) or psnr is None:
        return None
    everyone = table.reset_index()
    t = everyone.dropna(subset=[psnr])  # schemes whose server could not attack are left out
    missing = sorted(set(everyone["scheme"]) - set(t["scheme"]))
    if not len(t):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sizes = 30 + 1500 * t["bytes_per_client_round"] / t["bytes_per_client_round"].max()
    palette = sns.color_palette("colorblind", len(t))
    for (_, row), size, color in zip(t.iterrows(), sizes, palette):
        ax.scatter(row[psnr], row["final_accuracy"], s=size, color=color, alpha=0.55,
                   edgecolors="k",
                   label=f"{row['scheme']}: {row['bytes_per_client_round'] / 1e3:,.0f} kB")
    legend = ax.legend(title="scheme: bytes per client per round", fontsize=7, title_fontsize=8,
                       loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=0.4)
    for handle in legend.legend_handles:
        handle.set_sizes([40])
    ax.set(xlabel="median attack PSNR under the honest-but-curious server (dB; lower = safer)",
           ylabel="final test accuracy")
    ax.set_title("Privacy, accuracy and traffic (bubble area: bytes per client per round)"
                 + (f"\nnot attacked, so not shown: {', '.join(missing)}" if missing else ""),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


__all__ = ["accuracy_curves", "attack_success", "privacy_tradeoff", "time_to_target",
           "traffic_by_kind"]
