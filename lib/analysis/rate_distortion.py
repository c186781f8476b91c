"""The rate-distortion figure and its one-sentence reading, from the rows of `lib.analysis.evaluation.metrics_table`.

    rows = metrics_table(ladder, sample_rate)
    fig = rate_distortion_figure(rows, title="...")   # each metric against kb/s (log axis), mean over clips
    print(rate_distortion_comment(rows))              # what each extra codec level buys, against Opus
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker

from lib.analysis.evaluation import METRICS, _by_system
from lib.analysis.metrics import METRIC_DIRECTION, METRIC_UNITS

__all__ = ["rate_distortion_comment", "rate_distortion_figure", "METRIC_TITLES"]


def rate_distortion_comment(rows: list[dict], metric: str = "mel_distance") -> str:
    """One computed sentence on the rate-distortion figure: what each extra codec level buys in `metric`, and
    where the codec stands against the lowest-rate Opus."""
    means = _by_system(rows)
    codec = sorted((m for m in means.values() if m["family"] == "codec"), key=lambda m: m["n_q"])
    if not codec:
        return "No codec rows."
    lower = METRIC_DIRECTION[metric] == "lower"
    name = METRIC_TITLES[metric]
    first, last = codec[0], codec[-1]
    gain = (first[metric] - last[metric]) if lower else (last[metric] - first[metric])
    spread = max(abs(first[metric]), 1e-9)
    if len(codec) == 1:
        text = f"The codec has one rung: {name} {first[metric]:.3f}."
    elif gain <= 0.02 * spread:
        text = (f"Levels beyond the first do not help: {name} is {first[metric]:.3f} with {first['n_q']} level(s) and "
                f"{last[metric]:.3f} with {last['n_q']}, so the extra bits are wasted (the deeper levels learned little).")
    else:
        per_level = gain / (last["n_q"] - first["n_q"])
        text = (f"Every extra level improves {name} by {per_level:.3f} on average "
                f"({first[metric]:.3f} with {first['n_q']} -> {last[metric]:.3f} with {last['n_q']} levels).")
    opus = sorted((m for m in means.values() if m["family"] == "opus"), key=lambda m: m["bitrate"])
    if opus:
        o = opus[0]
        better = (last[metric] < o[metric]) if lower else (last[metric] > o[metric])
        text += (f" At {last['bitrate'] / 1000:.1f} kb/s the codec is {'better' if better else 'worse'} than Opus at "
                 f"{o['bitrate'] / 1000:.1f} kb/s ({last[metric]:.3f} vs {o[metric]:.3f}).")
    return text


FAMILY_STYLE = {  # colour and marker per family, shared by every panel
    "opus": ("tab:orange", "s"),
    "vorbis": ("tab:green", "D"),
    "mulaw": ("tab:purple", "^"),
}
METRIC_TITLES = {
    "si_sdr": "SI-SDR",
    "mel_distance": "mel distance",
    "stft_distance": "STFT distance",
    "pesq_wb": "PESQ wide-band (a speech metric)",
    "stoi": "STOI (meant for speech)",
}


def _family_label(systems: list[str]) -> str:
    """"opus 6 kbps", "opus 8 kbps" -> "opus 6, 8 kbps"; a single system keeps its name."""
    words = [s.split(" ") for s in systems]
    if len(systems) > 1 and all(len(w) == 3 and w[0] == words[0][0] and w[2] == words[0][2] for w in words):
        return f"{words[0][0]} {', '.join(w[1] for w in words)} {words[0][2]} (target rates)"
    return ", ".join(systems)


def rate_distortion_figure(rows: list[dict], title: str | None = None) -> plt.Figure:
    """Each metric against bitrate (kb/s, log axis), averaged over clips.

    The codec is one line through its n_q ladder (points labelled with n_q); each baseline is a marker; the
    anchor, which has no bitrate, is a dashed horizontal line. Panels: SI-SDR, mel, STFT, PESQ, STOI; the
    sixth holds the legend. Returns the figure.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    means = _by_system(rows)
    n_clips = max(m["n_clips"] for m in means.values())
    codec = sorted((m for m in means.values() if m["family"] == "codec"), key=lambda m: m["bitrate"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, metric in zip(axes.flat, METRICS):
        ax.set_title(METRIC_TITLES[metric])
        if not any(math.isfinite(m[metric]) for m in means.values()):  # e.g. perceptual=False: no PESQ/STOI
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if codec:
            xs = [m["bitrate"] / 1000 for m in codec]
            ax.plot(xs, [m[metric] for m in codec], "o-", color="tab:blue", lw=2, label="codec (labels: n_q)")
            for x, m in zip(xs, codec):
                ax.annotate(str(m["n_q"]), (x, m[metric]), textcoords="offset points", xytext=(0, 7),
                            ha="center", fontsize=8, color="tab:blue")
        baselines: dict[str, list[tuple[str, dict]]] = {}
        for system, m in means.items():
            if m["family"] == "anchor" or (m["family"] != "codec" and math.isnan(m["bitrate"])):
                ax.axhline(m[metric], color="0.4", ls="--", lw=1, label=f"{system} (anchor, no bitrate)")
            elif m["family"] != "codec":
                baselines.setdefault(m["family"], []).append((system, m))
        for family, members in baselines.items():
            members.sort(key=lambda item: item[1]["bitrate"])
            color, marker = FAMILY_STYLE.get(family, ("0.3", "o"))
            # A faint dotted line only ties together the rates of one codec; the markers are the data.
            ax.plot([m["bitrate"] / 1000 for _, m in members], [m[metric] for _, m in members], marker=marker,
                    color=color, ms=8, ls=":" if len(members) > 1 else "none", lw=1,
                    label=_family_label([system for system, _ in members]))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.margins(x=0.08, y=0.12)  # room for the n_q labels
        ax.set_xlabel("bitrate (kb/s, log scale)")
        ax.set_ylabel(f"{METRIC_UNITS[metric]}, {METRIC_DIRECTION[metric]} is better")
        ax.grid(alpha=0.3, which="both")
    legend_ax = axes.flat[-1]
    legend_ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    legend_ax.legend(handles, labels, loc="center", frameon=False, title="systems (mean over clips)")
    fig.suptitle(title or f"Rate-distortion: mean over {n_clips} clip{'s' * (n_clips != 1)}")
    fig.tight_layout()
    return fig
