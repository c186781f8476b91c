"""What a prior over codes knows, and what damaged codes do to the sound: the codebook-prior experiment.

The seed's question: does a self-organising-map codebook make attention over its codes more robust, since its
codes have a neighbourhood? Everything here takes a codec (SOM or plain EMA codebooks), a prior over its codes
(:mod:`lib.model.prior`) and the codes of held-out clips, ``[L, F]`` int arrays:

    held_out_codes(codec, data_dir, split)     the codes of a held-out split's speech (or first group it has)
    prior_report(prior, clips)                 bits per code, top-1 / top-5 accuracy per level
    mistakes(prior, quantizer, clips)          where the top-1 guesses that are wrong land: grid and code distance
    top1_guesses(prior, clip)                  a clip's codes with one level replaced by the prior's guesses
    replace_codes(codes, share, how, q, rng)   a share of the codes swapped for a grid neighbour, the nearest
                                               other code, or a random code
    flip_bits(codes, alphabet, ber, rng)       bit errors in the packed payload (each code's log2 K bits)
    context_robustness(prior, clips, ...)      the prior's bits on clean targets when its context is damaged
    decoded_damage(codec, clean, damaged, sr)  the damaged codes decoded: mel distance to the clean decode, DNSMOS
    damage_table, trusted_damage               the same, averaged over clips, for every kind and amount of damage
    continuations(codec, prior, clips)         held-out prompts continued by the prior, decoded and scored

Grid positions come from `lib.model.som.layout_grid`: a SOM's grid, or for a plain codebook its codes in index
order on a near-square grid (a reference with no map behind it).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from lib.analysis.evaluation import GROUPS, report_group
from lib.analysis.metrics import dnsmos_unavailable, evaluate_all
from lib.data.datasets import held_out_clips
from lib.model.som import layout_grid

__all__ = ["REPLACEMENTS", "held_out_codes", "code_positions", "nearest_other", "prior_report", "mistakes",
           "top1_guesses", "replace_codes", "flip_bits", "context_robustness", "clean_reference", "decoded_damage",
           "damage_table", "trusted_damage", "continuations", "plot_damage", "plot_bit_errors", "plot_context"]

REPLACEMENTS = ("grid neighbour", "nearest code", "random code")


def held_out_codes(codec, data_dir, split: str, group: str = "speech") -> tuple[str, list[tuple[str, np.ndarray]]]:
    """``(group, [(name, codes [L, F])])``: the codes of every whole clip of ``split`` reported in ``group``
    (`lib.analysis.evaluation.GROUPS`), or, where the split has none, of the first group it has. A corpus without
    that split (a tiny one) gives the held-out clips the trainer validates on, with a warning."""
    try:
        clips = held_out_clips(data_dir, codec.sample_rate, n=10**6, seconds=None, split=split)
    except ValueError:
        warnings.warn(f"{data_dir}: no {split} split; the prior is judged on the trainer's held-out clips",
                      stacklevel=2)
        clips = held_out_clips(data_dir, codec.sample_rate, n=10**6, seconds=None)
    present = {report_group(k) for k in clips.kinds.values()}
    if group not in present:
        group = next(g for g in GROUPS if g in present)
    with torch.no_grad():
        return group, [(name, codec.encode(wav[None])[0].numpy()) for name, wav in clips.items()
                       if report_group(clips.kinds[name]) == group]


def code_positions(level) -> np.ndarray:
    """``[K, 2]`` (row, col) of every code of a quantizer level on its grid (`layout_grid`)."""
    rows, cols = layout_grid(level).shape
    k = np.arange(rows * cols)
    return np.stack([k // cols, k % cols], axis=1)


def nearest_other(level) -> np.ndarray:
    """``[K]``: for every code of a level, the index of the nearest other code in code space."""
    embed = level.embed.detach().float()
    d = torch.cdist(embed, embed)
    d.fill_diagonal_(math.inf)
    return d.argmin(dim=1).numpy()


def _windows(prior, clips: list[np.ndarray]):
    """Each clip ``[L, F]`` as pieces of at most the prior's context, with the frame before each: ``(codes [1, L, w],
    prev [1, L])`` tensors."""
    w = prior.config.context
    for c in clips:
        for s in range(0, c.shape[1], w):
            prev = c[:, s - 1] if s else np.full(c.shape[0], -1)
            yield torch.from_numpy(c[None, :, s:s + w].astype(np.int64)), torch.from_numpy(prev[None].astype(np.int64))


@torch.no_grad()
def _predict(prior, clips: list[np.ndarray], inputs: list[np.ndarray] | None = None):
    """Per level, the prior's log-probabilities of every frame of ``clips`` given ``inputs`` as its context (the
    clips themselves by default): ``([L] x [N, K_l] log-probs, [L, N] targets)`` over all frames."""
    prior.eval()
    inputs = clips if inputs is None else inputs
    logps, targets = [[] for _ in range(prior.n_levels)], []
    for (given, prev), (clean, _) in zip(_windows(prior, inputs), _windows(prior, clips)):
        for level, logits in enumerate(prior(given, prev)):
            logps[level].append(logits[0].log_softmax(-1))
        targets.append(clean[0])
    return [torch.cat(lp) for lp in logps], torch.cat(targets, dim=1)


def prior_report(prior, clips: list[np.ndarray], inputs: list[np.ndarray] | None = None) -> dict:
    """Bits per code (mean over levels), and per level its bits, top-1 and top-5 accuracy, on the held-out ``clips``
    (``inputs``: a damaged copy given to the prior as context instead; the targets stay ``clips``). ``saving``: the
    share below the packed payload's ``log2 K`` bits a code."""
    logps, targets = _predict(prior, clips, inputs)
    per = []
    for level, lp in enumerate(logps):
        t = targets[level]
        top = lp.topk(min(5, lp.shape[-1]), dim=-1).indices
        per.append({"level": level, "bits": float(-lp.gather(1, t[:, None]).mean() / math.log(2)),
                    "top1": float((top[:, 0] == t).float().mean()),
                    "top5": float((top == t[:, None]).any(1).float().mean())})
    bits = float(np.mean([p["bits"] for p in per]))
    packed = float(np.mean([math.log2(k) for k in prior.alphabet]))
    return {"bits_per_code": bits, "saving": 1 - bits / packed, "frames": int(targets.shape[1]), "levels": per}


def mistakes(prior, quantizer, clips: list[np.ndarray], level: int = 0) -> dict:
    """Where the prior's wrong top-1 guesses land at ``level``: their grid distance to the true code (Euclidean,
    in cells) and their code-space distance over the mean distance between two codes of the level (1: as far as
    two random codes). Both beside the same figures for random guesses."""
    logps, targets = _predict(prior, clips)
    guess, truth = logps[level].argmax(-1).numpy(), targets[level].numpy()
    wrong = guess != truth
    pos = code_positions(quantizer.levels[level]).astype(np.float64)
    embed = quantizer.levels[level].embed.detach().float()
    pairwise = float(torch.pdist(embed).mean())
    rng = np.random.default_rng(0)
    random_guess = rng.integers(0, len(pos), size=int(wrong.sum()))

    def grid(a, b):
        return float(np.linalg.norm(pos[a] - pos[b], axis=1).mean()) if len(a) else math.nan

    def code(a, b):
        return float((embed[a] - embed[b]).norm(dim=1).mean()) / pairwise if len(a) else math.nan

    g, t = guess[wrong], truth[wrong]
    return {"level": level, "top1": float(1 - wrong.mean()), "mistakes": int(wrong.sum()),
            "grid_distance": grid(g, t), "grid_distance_random": grid(random_guess, t),
            "code_distance": code(g, t), "code_distance_random": code(random_guess, t)}


def top1_guesses(prior, clip: np.ndarray, level: int = 0) -> np.ndarray:
    """A copy of ``clip [L, F]`` whose ``level`` holds the prior's top-1 guess of every frame (given the true codes
    before it): what a decoder would play if it trusted the prior there, for :func:`decoded_damage`."""
    logps, _ = _predict(prior, [clip])
    out = clip.copy()
    out[level] = logps[level].argmax(-1).numpy()
    return out


def replace_codes(codes: np.ndarray, share: float, how: str, quantizer, rng: np.random.Generator,
                  levels: tuple[int, ...] | None = None) -> np.ndarray:
    """A copy of ``codes [L, F]`` with ``share`` of the codes of ``levels`` (all by default) replaced: by one of
    their 8 grid neighbours ("grid neighbour"), the nearest other code in code space ("nearest code"), or a
    random other code ("random code")."""
    if how not in REPLACEMENTS:
        raise ValueError(f"how must be one of {REPLACEMENTS}, got {how!r}")
    out = codes.copy()
    for level in range(codes.shape[0]) if levels is None else levels:
        vq = quantizer.levels[level]
        hit = np.flatnonzero(rng.random(codes.shape[1]) < share)
        c = codes[level, hit]
        if how == "random code":
            new = (c + rng.integers(1, vq.codebook_size, size=len(c))) % vq.codebook_size
        elif how == "nearest code":
            new = nearest_other(vq)[c]
        else:
            new = _grid_neighbours(c, layout_grid(vq).shape, rng)
        out[level, hit] = new
    return out


def _grid_neighbours(codes: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """For every code, one of its (up to 8) neighbours on a ``(rows, cols)`` grid, drawn uniformly."""
    rows, cols = shape
    steps = np.array([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc])
    r, q, new = codes // cols, codes % cols, codes.copy()
    todo = np.ones(len(codes), dtype=bool)
    while todo.any():  # a draw off the grid's edge is drawn again
        step = steps[rng.integers(0, len(steps), size=int(todo.sum()))]
        nr, nq = r[todo] + step[:, 0], q[todo] + step[:, 1]
        ok = (nr >= 0) & (nr < rows) & (nq >= 0) & (nq < cols)
        idx = np.flatnonzero(todo)[ok]
        new[idx], todo[idx] = nr[ok] * cols + nq[ok], False
    return new


def flip_bits(codes: np.ndarray, alphabet, ber: float, rng: np.random.Generator) -> np.ndarray:
    """``codes [L, F]`` after a channel that flips each bit of the packed payload (``log2 K_l`` bits a code) with
    probability ``ber``; a flipped index past ``K_l - 1`` (K not a power of 2) wraps around."""
    out = codes.copy()
    for level, k in enumerate(alphabet):
        bits = max(1, math.ceil(math.log2(k)))
        mask = np.zeros(codes.shape[1], dtype=np.int64)
        for b in range(bits):
            mask |= (rng.random(codes.shape[1]) < ber).astype(np.int64) << b
        out[level] = (codes[level] ^ mask) % k
    return out


def context_robustness(prior, quantizer, clips: list[np.ndarray], shares=(0.05, 0.1, 0.2, 0.4), seed: int = 0,
                       how=REPLACEMENTS) -> list[dict]:
    """The prior's bits per code on the clean held-out codes when ``share`` of the codes it is given as context
    are replaced (`replace_codes`): how much its attention over the codes suffers from near misses against random
    ones. Rows ``{how, share, bits_per_code, top1}`` (top-1 at level 0), the clean context as share 0."""
    clean = prior_report(prior, clips)
    rows = [{"how": h, "share": 0.0, "bits_per_code": clean["bits_per_code"], "top1": clean["levels"][0]["top1"]}
            for h in how]
    for h in how:
        rng = np.random.default_rng(seed)
        for share in shares:
            damaged = [replace_codes(c, share, h, quantizer, rng) for c in clips]
            r = prior_report(prior, clips, inputs=damaged)
            rows.append({"how": h, "share": share, "bits_per_code": r["bits_per_code"], "top1": r["levels"][0]["top1"]})
    return rows


@torch.no_grad()
def clean_reference(codec, clean: np.ndarray, sample_rate: int, dnsmos: bool = True) -> dict:
    """The clean codes ``[L, F]`` decoded (``audio``) and, with DNSMOS, their scores: what `decoded_damage`
    compares a damaged decode with, computed once per clip."""
    codec.eval()
    audio = codec.decode(torch.from_numpy(clean[None].astype(np.int64)))[0, 0]
    ref = {"audio": audio}
    if dnsmos and dnsmos_unavailable() is None:
        m = evaluate_all(audio, audio, sample_rate, perceptual=False, dnsmos=True)
        ref.update({"clean_dnsmos_ovrl": m["dnsmos_ovrl"], "clean_dnsmos_p808": m["dnsmos_p808"]})
    return ref


@torch.no_grad()
def decoded_damage(codec, clean: np.ndarray, damaged: np.ndarray, sample_rate: int, dnsmos: bool = True,
                   reference: dict | None = None) -> dict:
    """Decode clean and damaged codes ``[L, F]``: the damaged audio's mel distance and SI-SDR against the clean
    decode (what the damage alone did, the codec's own error aside), and the DNSMOS (OVRL, P.808) of both.
    ``reference``: `clean_reference` of ``clean``, where the caller already has it."""
    ref = reference or clean_reference(codec, clean, sample_rate, dnsmos)
    b = codec.decode(torch.from_numpy(damaged[None].astype(np.int64)))[0, 0]
    scored = "clean_dnsmos_ovrl" in ref
    m = evaluate_all(b, ref["audio"], sample_rate, perceptual=False, dnsmos=scored)
    row = {"mel_distance": m["mel_distance"], "si_sdr": m["si_sdr"]}
    if scored:
        row.update({"dnsmos_ovrl": m["dnsmos_ovrl"], "dnsmos_p808": m["dnsmos_p808"],
                    "clean_dnsmos_ovrl": ref["clean_dnsmos_ovrl"], "clean_dnsmos_p808": ref["clean_dnsmos_p808"]})
    return row


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}


def damage_table(codec, clips: list[np.ndarray], shares=(0.05, 0.1, 0.2), bit_error_rates=(1e-3, 1e-2, 3e-2),
                 seed: int = 0, dnsmos: bool = True) -> list[dict]:
    """`decoded_damage` averaged over ``clips`` for every replacement at every share of the codes, and for every
    bit error rate of the packed payload: rows ``{damage, amount, mel_distance, si_sdr, [dnsmos_*]}``."""
    q = codec.quantizer
    alphabet = [level.codebook_size for level in q.levels]
    refs = [clean_reference(codec, c, codec.sample_rate, dnsmos) for c in clips]  # once per clip, not per setting
    rows = []
    for how in REPLACEMENTS:
        for share in shares:
            rng = np.random.default_rng(seed)
            hits = [decoded_damage(codec, c, replace_codes(c, share, how, q, rng), codec.sample_rate, dnsmos, r)
                    for c, r in zip(clips, refs)]
            rows.append({"damage": how, "amount": share, **_mean(hits)})
    for ber in bit_error_rates:
        rng = np.random.default_rng(seed)
        hits = [decoded_damage(codec, c, flip_bits(c, alphabet, ber, rng), codec.sample_rate, dnsmos, r)
                for c, r in zip(clips, refs)]
        rows.append({"damage": "bit errors", "amount": ber, **_mean(hits)})
    return rows


def trusted_damage(codec, prior, clips: list[np.ndarray], dnsmos: bool = True) -> dict:
    """`decoded_damage` averaged over ``clips`` when level 0 holds the prior's top-1 guesses (`top1_guesses`)."""
    return _mean([decoded_damage(codec, c, top1_guesses(prior, c), codec.sample_rate, dnsmos) for c in clips])


@torch.no_grad()
def continuations(codec, prior, clips: list[tuple[str, np.ndarray]], seconds: float = 2.0, n: int = 2,
                  temperature: float = 0.9, top_k: int | None = 50) -> list[dict]:
    """The first ``seconds`` of up to ``n`` clips (long enough) continued by the prior for as long again:
    ``{name, audio [C, T] (prompt and continuation), dnsmos_ovrl of the continuation alone (NaN without DNSMOS),
    codec_dnsmos_ovrl of the clip's own next seconds through the codec}``."""
    from lib.model.prior import sample_continuation

    frames = int(seconds * codec.frame_rate)
    scored = dnsmos_unavailable() is None
    out = []
    for i, (name, codes) in enumerate([c for c in clips if c[1].shape[1] >= 2 * frames][:n]):
        made = sample_continuation(prior, torch.from_numpy(codes[:, :frames]), frames, temperature, top_k, seed=i)
        audio = codec.decode(made[None])[0]
        real = codec.decode(torch.from_numpy(codes[None, :, :2 * frames].astype(np.int64)))[0]
        tail = slice(frames * codec.hop_length, None)
        ovrl = [evaluate_all(x[0, tail], x[0, tail], codec.sample_rate, perceptual=False, dnsmos=True)["dnsmos_ovrl"]
                if scored else math.nan for x in (audio, real)]
        out.append({"name": name, "audio": audio, "dnsmos_ovrl": ovrl[0], "codec_dnsmos_ovrl": ovrl[1]})
    return out


# ---------------------------------------------------------------------------------------------- figures

_LINES = ("-", "--", ":")  # one line style per codec


def plot_damage(ax, rows: list[dict], metric: str = "mel_distance", ylabel: str = "mel distance to the clean decode"):
    """Decoded damage against the share of codes replaced, one colour per replacement, one line style per codec.
    ``rows``: ``{codec, damage, amount, <metric>}`` (bit-error rows are left to their own panel)."""
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    for codec, ls in zip(codecs, _LINES):
        for j, how in enumerate(REPLACEMENTS):
            pts = [r for r in rows if r["codec"] == codec and r["damage"] == how]
            ax.plot([100 * r["amount"] for r in pts], [r[metric] for r in pts], marker="o", ls=ls, color=f"C{j}",
                    label=f"{codec}: {how}")
    ax.set(title=f"Codes replaced: {ylabel.split(' (')[0]}", xlabel="codes replaced (%)", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_bit_errors(ax, rows: list[dict], metric: str = "mel_distance",
                    ylabel: str = "mel distance to the clean decode"):
    """Decoded damage against the bit error rate of the packed payload, one line per codec (log x axis)."""
    for codec, ls in zip(dict.fromkeys(r["codec"] for r in rows), _LINES):
        pts = [r for r in rows if r["codec"] == codec and r["damage"] == "bit errors"]
        ax.plot([r["amount"] for r in pts], [r[metric] for r in pts], marker="s", ls=ls, color="C3", label=codec)
    ax.set_xscale("log")
    ax.set(title="Bit errors in the packed payload", xlabel="bit error rate", ylabel=ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def plot_context(ax, rows: list[dict]):
    """The prior's bits per clean code against the share of its context replaced, per replacement and codec.
    ``rows``: `context_robustness` rows with a ``codec`` key."""
    for codec, ls in zip(dict.fromkeys(r["codec"] for r in rows), _LINES):
        for j, how in enumerate(REPLACEMENTS):
            pts = [r for r in rows if r["codec"] == codec and r["how"] == how]
            ax.plot([100 * r["share"] for r in pts], [r["bits_per_code"] for r in pts], marker="o", ls=ls,
                    color=f"C{j}", label=f"{codec}: {how}")
    ax.set(title="The prior with a damaged context", xlabel="context codes replaced (%)", ylabel="bits per clean code")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
