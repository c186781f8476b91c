"""The rate-distortion figure and its one-sentence reading, from the rows of `lib.analysis.evaluation.metrics_table`.

    rows = metrics_table(ladder, sample_rate)
    fig = rate_distortion_figure(rows, title="...")   # each metric against kb/s (log axis), mean over clips
    print(rate_distortion_comment(rows))              # what each extra codec level buys, against Opus
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
from matplotlib.lines import Line2D

from lib.analysis.evaluation import METRICS, SPEECH_METRICS, _by_system
from lib.analysis.metrics import METRIC_DIRECTION, METRIC_UNITS

__all__ = ["rate_distortion_comment", "rate_distortion_figure", "METRIC_TITLES"]


def _codec_sentence(means: list[dict], opus: list[dict], metric: str) -> str:
    """What the codec's extra levels buy in `metric` on one group's clips, and where it stands against Opus."""
    lower = METRIC_DIRECTION[metric] == "lower"
    name = METRIC_TITLES[metric]
    first, last = means[0], means[-1]
    gain = (first[metric] - last[metric]) if lower else (last[metric] - first[metric])
    if len(means) == 1:
        text = f"the codec has one rung: {name} {first[metric]:.3f}."
    elif gain <= 0.02 * max(abs(first[metric]), 1e-9):
        text = (f"levels beyond the first do not help: {name} is {first[metric]:.3f} with {first['n_q']} level(s) "
                f"and {last[metric]:.3f} with {last['n_q']}, so the extra bits are wasted (the deeper levels learned "
                f"little).")
    else:
        text = (f"every extra level improves {name} by {gain / (last['n_q'] - first['n_q']):.3f} on average "
                f"({first[metric]:.3f} with {first['n_q']} -> {last[metric]:.3f} with {last['n_q']} levels).")
    if opus and math.isfinite(opus[0][metric]):
        o = opus[0]
        better = (last[metric] < o[metric]) if lower else (last[metric] > o[metric])
        text += (f" At {last['bitrate'] / 1000:.1f} kb/s the codec is {'better' if better else 'worse'} than Opus at "
                 f"{o['bitrate'] / 1000:.1f} kb/s ({last[metric]:.3f} vs {o[metric]:.3f}).")
    return text


def rate_distortion_comment(rows: list[dict], metric: str = "mel_distance", speech_metric: str = "dnsmos_ovrl") -> str:
    """Computed sentences on the rate-distortion figure, one per group of clips (speech, other sounds, ...): what
    each extra codec level buys, and where the codec stands against the lowest-rate Opus; in `speech_metric` for
    the speech groups where it was computed (perceived quality), in `metric` otherwise."""
    means = list(_by_system(rows).values())
    sentences = []
    for group in dict.fromkeys(m["group"] for m in means):
        codec = sorted((m for m in means if m["group"] == group and m["family"] == "codec"), key=lambda m: m["n_q"])
        opus = sorted((m for m in means if m["group"] == group and m["family"] == "opus"), key=lambda m: m["bitrate"])
        chosen = speech_metric if codec and group.endswith("speech") and math.isfinite(codec[-1][speech_metric]) \
            else metric
        if codec and math.isfinite(codec[-1][chosen]):
            sentences.append(f"{group.capitalize()} ({codec[0]['n_clips']} clips): "
                             + _codec_sentence(codec, opus, chosen))
    return " ".join(sentences) or "No codec rows."


FAMILY_STYLE = {  # colour and marker per family, shared by every panel
    "codec": ("tab:blue", "o"),
    "opus": ("tab:orange", "s"),
    "vorbis": ("tab:green", "D"),
    "mulaw": ("tab:purple", "^"),
    "anchor": ("0.4", None),
    "reference": ("black", None),
}
GROUP_STYLE = {"speech": ("-", "full"), "synthetic speech": ("--", "none"), "other sounds": (":", "none"),
               "unlabelled": ("-", "full")}  # line style and marker fill per group of clips
METRIC_TITLES = {
    "si_sdr": "SI-SDR",
    "mel_distance": "mel distance",
    "stft_distance": "STFT distance",
    "pesq_wb": "PESQ wide-band (speech)",
    "stoi": "STOI (speech)",
    "dnsmos_ovrl": "DNSMOS overall, P.835 (speech)",
    "dnsmos_p808": "DNSMOS P.808 (speech)",
}


def _family_label(systems: list[str]) -> str:
    """"opus 6 kbps", "opus 8 kbps" -> "opus 6, 8 kbps"; a single system keeps its name."""
    words = [s.split(" ") for s in systems]
    if len(systems) > 1 and all(len(w) == 3 and w[0] == words[0][0] and w[2] == words[0][2] for w in words):
        return f"{words[0][0]} {', '.join(w[1] for w in words)} {words[0][2]} (target rates)"
    return ", ".join(systems)


def _draw_group(ax, means: list[dict], metric: str, group: str, label_n_q: bool) -> None:
    """One group's codec line, baseline markers and anchor line in one metric's panel."""
    ls, fill = GROUP_STYLE[group]
    codec = sorted((m for m in means if m["family"] == "codec"), key=lambda m: m["bitrate"])
    if codec:
        xs = [m["bitrate"] / 1000 for m in codec]
        ax.plot(xs, [m[metric] for m in codec], marker="o", ls=ls, fillstyle=fill, color="tab:blue", lw=2)
        for x, m in zip(xs, codec if label_n_q else []):
            ax.annotate(str(m["n_q"]), (x, m[metric]), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=8, color="tab:blue")
    families: dict[str, list[dict]] = {}
    for m in means:
        if m["family"] in ("anchor", "reference") or (m["family"] != "codec" and math.isnan(m["bitrate"])):
            if math.isfinite(m[metric]):  # no bitrate: a level to read the others against
                ax.axhline(m[metric], color=FAMILY_STYLE.get(m["family"], FAMILY_STYLE["anchor"])[0], ls=ls, lw=1)
        elif m["family"] != "codec":
            families.setdefault(m["family"], []).append(m)
    for family, members in families.items():
        members.sort(key=lambda m: m["bitrate"])
        color, marker = FAMILY_STYLE.get(family, ("0.3", "o"))
        # A faint line only ties together the rates of one codec; the markers are the data.
        ax.plot([m["bitrate"] / 1000 for m in members], [m[metric] for m in members], marker=marker, color=color,
                ms=8, fillstyle=fill, ls=ls if len(members) > 1 else "none", lw=0.8)


def _legend(ax, means: list[dict], groups: list[str]) -> None:
    """The legend panel: systems by colour and marker, groups of clips by line style and marker fill."""
    ax.axis("off")
    systems: dict[str, list[str]] = {}
    for m in means:
        systems.setdefault(m["family"], []).append(m["system"])
    handles = []
    for family, names in systems.items():
        color, marker = FAMILY_STYLE.get(family, ("0.3", "o"))
        names = list(dict.fromkeys(names))
        label = ("codec (labels: n_q)" if family == "codec" else "original (its DNSMOS: the ceiling)"
                 if family == "reference" else f"{names[0]} (anchor, no bitrate)" if marker is None
                 else _family_label(names))
        handles.append(Line2D([], [], color=color, marker=marker, ls="-" if marker is None else "none", label=label))
    first = ax.legend(handles=handles, loc="upper center", frameon=False, title="systems")
    ax.add_artist(first)
    clips = [Line2D([], [], color="0.2", marker="o", ls=GROUP_STYLE[g][0], fillstyle=GROUP_STYLE[g][1],
                    label=f"{g} ({max(m['n_clips'] for m in means if m['group'] == g)})") for g in groups]
    ax.legend(handles=clips, loc="lower center", frameon=False, title="clips (how many), mean over each")


def rate_distortion_figure(rows: list[dict], title: str | None = None) -> plt.Figure:
    """Each metric against bitrate (kb/s, log axis), averaged over the clips of each group (speech, synthetic
    speech, other sounds: `lib.analysis.evaluation.GROUPS`).

    The codec is one line through its n_q ladder per group (points labelled with n_q); each baseline is a marker;
    the anchor, which has no bitrate, is a horizontal line. Colours are systems, line styles groups of clips; the
    speech metrics leave out the other sounds. The last panel holds the legends. Returns the figure.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    means = list(_by_system(rows).values())
    groups = list(dict.fromkeys(m["group"] for m in means))
    n_rows = 2
    n_cols = math.ceil((len(METRICS) + 1) / n_rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.4 * n_cols, 3.8 * n_rows), squeeze=False)
    for ax, metric in zip(axes.flat, METRICS):
        ax.set_title(METRIC_TITLES[metric])
        shown = [g for g in groups if not (metric in SPEECH_METRICS and g == "other sounds")]
        if not any(math.isfinite(m[metric]) for m in means if m["group"] in shown):  # e.g. perceptual=False
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for i, group in enumerate(shown):
            _draw_group(ax, [m for m in means if m["group"] == group], metric, group, label_n_q=i == 0)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.margins(x=0.08, y=0.12)  # room for the n_q labels
        ax.set_xlabel("bitrate (kb/s, log scale)")
        ax.set_ylabel(f"{METRIC_UNITS[metric]}, {METRIC_DIRECTION[metric]} is better")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(METRICS) + 1:]:
        ax.axis("off")
    _legend(axes.flat[len(METRICS)], means, groups)
    n_clips = sum(max(m["n_clips"] for m in means if m["group"] == g) for g in groups)
    fig.suptitle(title or f"Rate-distortion: mean over {n_clips} clip{'s' * (n_clips != 1)}")
    fig.tight_layout()
    return fig
