"""Fault injection: bad data, bad settings, bad codes, kills and a damaged checkpoint, and what each one does.

One table. Every row is a fault tried on the `tiny` preset (1 thread) and the outcome seen; "handled" means a
clear error naming the file or key, a skip with a warning naming the file, or a run that ends exactly as an
uninterrupted one. Three kinds of rows:

- bad inputs (issue 13's cases and the file kinds handled before it), tried in this process;
- random `kill -9` of `python -m lib.training` during a tiny run (checkpoint every step, and the default
  schedule), each resumed until the run finishes; final weights compared bit for bit and logs record by record
  (all fields but `time`) with an uninterrupted run;
- a latest checkpoint truncated after a kill, recovered from `checkpoint.prev.pt`.

    .venv/bin/python bench/faults.py              # about 3-5 minutes on 2 shared cores
    .venv/bin/python bench/faults.py --kills 2    # fewer kills per schedule
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
from common import REPO, machine_note, markdown_table, write_csv  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from lib.build import build_codec  # noqa: E402
from lib.config import ConfigError, load_config  # noqa: E402
from lib.data.audio import AudioError, check_audio  # noqa: E402
from lib.data.corpus import build_default_corpus  # noqa: E402
from lib.data.datasets import AudioFolder, StepBatches, build_manifest, held_out_clips  # noqa: E402
from lib.training.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from lib.training.trainer import Trainer, read_log  # noqa: E402

FAST = ["data.batch_size=2", "model.quantizer.n_q=2", "train.stft_n_ffts=[256, 128]", "data.valid_clips=1",
        "data.valid_seconds=0.5", "train.quantizer_warmup_steps=0", "train.lr_warmup_steps=0",
        "train.adv_warmup_steps=2", "train.val_every=100", "train.log_every=1"]
ROWS: list[dict] = []


def row(group: str, case: str, outcome: str, handled: bool) -> None:
    ROWS.append({"group": group, "case": case, "outcome": outcome, "handled": "yes" if handled else "NO"})
    print(f"  [{'ok' if handled else 'FAIL'}] {case}: {outcome}", flush=True)


def attempt(group: str, case: str, fn, expect: type[BaseException] | None = None, must_name: str = "") -> None:
    """Run ``fn``; handled = it raised ``expect`` naming ``must_name``, or (expect None) it returned a message."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - what it raised is the outcome
            text = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            row(group, case, text[:160], expect is not None and isinstance(err, expect) and must_name in str(err))
            return
    if expect is not None:
        row(group, case, f"no error ({result})"[:160], False)
        return
    named = [str(w.message) for w in seen if must_name in str(w.message)]
    handled, message = result if isinstance(result, tuple) else (True, result)
    row(group, case, (message + (f"; warned: {named[0]}" if named else ""))[:160], handled and (not must_name or bool(named)))


def tone(path: Path, seconds: float = 1.0, lead_silence: float = 0.0, subtype: str = "PCM_16") -> Path:
    t = np.arange(int(seconds * 24000)) / 24000
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.5 * np.sin(2 * np.pi * 220 * t) * (t >= lead_silence)).astype(np.float32), 24000, subtype=subtype)
    return path


def bad_inputs(work: Path, corpus: Path) -> None:
    g = "bad input"
    d = work / "files"
    tone(d / "good.wav")
    (d / "empty.wav").write_bytes(b"")
    (d / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(200))
    (d / "song.m4a").write_bytes(os.urandom(300))
    x = np.full(2400, 0.1, np.float32)
    x[5] = np.nan
    sf.write(d / "nan.wav", x, 24000, subtype="FLOAT")
    sf.write(d / "silent.wav", np.zeros(2400, np.float32), 24000)
    x[5] = 1e30
    sf.write(d / "huge.wav", x, 24000, subtype="FLOAT")
    for name in ("empty", "corrupt", "nan", "silent", "huge"):
        attempt(g, f"{name} audio file", lambda n=name: check_audio(d / f"{n}.wav"), AudioError, f"{name}.wav")
    attempt(g, "unsupported format (.m4a)", lambda: check_audio(d / "song.m4a"), AudioError, "song.m4a")
    os.symlink(d / "gone.wav", d / "dangling.wav")
    os.symlink(d / "loop.wav", d / "loop.wav")
    attempt(g, "dangling and looping symlinks in the data folder",
            lambda: f"manifest: {sorted((e.path, e.status) for e in build_manifest(d, progress=False) if not e.ok)[:2]}",
            must_name="loop.wav")

    # Files broken after the manifest was built (size and mtime kept).
    m = work / "changed"
    for i in range(3):
        tone(m / f"c{i}.wav", subtype="FLOAT")
    build_manifest(m, fractions=(1.0, 0.0, 0.0), progress=False)
    raw = (m / "c1.wav").read_bytes()
    for name, data in (("c1.wav", raw[:len(raw) - 96000] + np.full(24000, np.nan, "<f4").tobytes()),
                       ("c2.wav", b"\0" * len(raw))):
        st = (m / name).stat()
        (m / name).write_bytes(data)
        os.utime(m / name, ns=(st.st_atime_ns, st.st_mtime_ns))
    batches = StepBatches(AudioFolder(m, "train", cache=False), 3, 2400, seed=0)
    attempt(g, "file turned to NaN / garbage after the manifest",
            lambda: f"{len([batches[s] for s in range(8)])} batches drawn", must_name="c1.wav")

    h = work / "heldout"
    tone(h / "a.wav", seconds=6, lead_silence=4.5)
    tone(h / "b.wav", seconds=2)
    build_manifest(h, fractions=(0.0, 1.0, 0.0), progress=False)
    attempt(g, "held-out clip silent for its first valid_seconds",
            lambda: f"held-out clips: {list(held_out_clips(h, 24000, n=2, seconds=4.0))}", must_name="a.wav")

    def trainer(run, over=(), **kw):
        return Trainer(load_config("tiny", FAST + list(over)), corpus, run, progress=False, device="cpu", **kw)

    def nan_steps():
        tr = trainer(work / "nan_run", ["train.ckpt_every=3"])
        original, calls = tr.generator_losses, []

        def sometimes_nan(wav, adversarial):
            calls.append(1)
            out, losses = original(wav, adversarial)
            if len(calls) % 3 == 2:
                losses["mel"] = losses["mel"] * float("nan")
            return out, losses
        tr.generator_losses = sometimes_nan
        tr.fit(6)
        last = load_checkpoint(work / "nan_run" / "checkpoint.pt")["step"]
        return last == 6, f"{tr.skipped} skipped steps; ran to step {tr.step} of 6, last checkpoint at {last}"
    attempt(g, "non-finite steps during training", nan_steps)

    trainer(work / "fresh").fit(1)
    attempt(g, "fresh start on an existing run",
            lambda: (trainer(work / "fresh", resume=False) and (work / "fresh.old1").is_dir(), "started afresh"),
            must_name="moved to")
    (work / "afile").write_text("x")
    attempt(g, "figures folder not writable", lambda: trainer(work / "r2", outputs=[work / "afile" / "figures"]),
            ValueError, "afile")

    def resume_changes():
        trainer(work / "lr", ["train.lr_schedule=constant"]).fit(1)
        tr = trainer(work / "lr", ["train.lr=0.0005", "train.ema_decay=0.9", "train.lr_schedule=constant"])
        tr.fit(2)
        same = all(torch.equal(p, q) for p, q in zip(tr.ema.parameters(), tr.codec.parameters()))
        ok = tr.opt_g.param_groups[0]["lr"] == 0.0005
        return ok, f"lr {tr.opt_g.param_groups[0]['lr']:g} applied; EMA from the checkpoint's weights (then {same=})"
    attempt(g, "resume with a new train.lr and train.ema_decay", resume_changes, must_name="EMA")

    for override in ("train.grad_clip=-1", "train.grad_clip=.nan", "data.valid_clips=0", "data.batch_size=0",
                     "data.valid_seconds=0", "train.betas=[0.5]", "train.lr=-1", "train.steps.x=1"):
        attempt(g, f"setting {override}", lambda o=override: load_config("tiny", [o]), ConfigError, override.split("=")[0].split(".x")[0])

    codec = build_codec(load_config("tiny")).eval()
    wav = torch.randn(1, 1, 24123) * 0.1
    codes = codec.encode(wav)
    nan = wav.clone()
    nan[0, 0, 9] = float("nan")
    attempt(g, "codec: NaN audio to encode", lambda: codec.encode(nan), ValueError, "NaN")
    attempt(g, "codec: negative codes", lambda: codec.decode(codes - 5), ValueError, "codes")
    attempt(g, "codec: codes past the codebook", lambda: codec.decode(codes + 64), ValueError, "codes")
    attempt(g, "codec: decode(length=-5)", lambda: codec.decode(codes, length=-5), ValueError, "length")
    attempt(g, "codec: uint8 / int16 codes",
            lambda: (torch.equal(codec.decode(codes.to(torch.uint8)), codec.decode(codes.to(torch.int16))),
                     "decoded (widened to int64)"))
    attempt(g, "codec: float64 / float16 input, float64 codec",
            lambda: (torch.equal(codec.encode(wav.double()), codes)
                     and build_codec(load_config("tiny")).double().eval().encode(wav.double()).shape == codes.shape,
                     "cast to the codec's dtype; float64 codec quantizes"))

    def flush():
        codec.reset_stream()
        parts = [codec.stream_encode(wav[..., i:i + 1000], final=i + 1000 >= wav.shape[-1])
                 for i in range(0, wav.shape[-1], 1000)]
        codec.reset_stream()
        streamed = torch.cat(parts, -1)
        return torch.equal(streamed, codes), f"{streamed.shape[-1]} frames streamed, {codes.shape[-1]} offline"
    attempt(g, "stream of 24123 samples (last frame partial)", flush)

    def long_input(minutes: float = 2.0):
        x = torch.randn(1, 1, int(minutes * 60 * 24000)) * 0.1
        t0 = time.time()
        with torch.no_grad():
            y = codec.decode(codec.encode(x))
        return y.shape[-1] >= x.shape[-1], f"{minutes:g} min encoded + decoded in chunks in {time.time() - t0:.1f} s"
    attempt(g, "long input (bounded memory, streaming path)", long_input)

    ck = work / "ckpt"
    trainer(ck, ["train.ckpt_every=1"]).fit(1)
    (work / "zero.pt").write_bytes(b"")
    (work / "cut.pt").write_bytes((ck / "checkpoint.pt").read_bytes()[:5000])
    attempt(g, "zero-byte checkpoint", lambda: load_checkpoint(work / "zero.pt"), CheckpointError, "0 bytes")
    attempt(g, "truncated checkpoint", lambda: load_checkpoint(work / "cut.pt"), CheckpointError, "cut.pt")
    attempt(g, "resume with other discriminators", lambda: trainer(ck, ["train.discriminators=[stft]"]),
            CheckpointError, "train.discriminators")
    evil = work / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"config": {}, "model": Evil()}, evil)
    attempt(g, "checkpoint with a malicious pickle", lambda: load_checkpoint(evil), CheckpointError, "evil.pt")


# ----------------------------------------------------------------------------- kills


def train_cmd(corpus: Path, run: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "lib.training", "--preset", "tiny", "--data", str(corpus), "--run-dir", str(run),
            "--set", *FAST, *extra]


def final_state(run: Path) -> tuple[dict, list[dict]]:
    state = load_checkpoint(run / "checkpoint.pt")
    log = [{k: v for k, v in r.items() if k != "time"} for r in read_log(run / "log.jsonl")]
    return state, log


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a["model"][m][k], b["model"][m][k]) for m in a["model"] for k in a["model"][m]) \
        and a["step"] == b["step"]


def run_to_end(cmd: list[str], kill_after: float | None, rng: random.Random) -> tuple[int, bool]:
    """Run ``cmd``; kill -9 it after ``kill_after`` s when given. Returns (exit code, whether it was killed)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return proc.returncode, True
    err = proc.communicate()[1]
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return proc.returncode, False


def kills(work: Path, corpus: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    for label, extra in (("checkpoint every step", ["train.ckpt_every=1"]), ("default schedule", [])):
        ref = work / f"ref-{len(extra)}"
        t0 = time.time()
        code, _ = run_to_end(train_cmd(corpus, ref, extra), None, rng)
        duration = time.time() - t0
        ref_state, ref_log = final_state(ref)
        run = work / f"killed-{len(extra)}"
        killed = crashes = 0
        while killed < n:
            code, was_killed = run_to_end(train_cmd(corpus, run, extra), rng.uniform(0.3, 1.0) * duration, rng)
            killed += was_killed
            crashes += (not was_killed and code != 0)
            if not was_killed and code == 0:  # finished before the kill: start a new run to kill again
                final = final_state(run)
                ok = same_weights(ref_state, final[0]) and final[1] == ref_log
                if not ok:
                    break
                run.rename(work / f"done-{time.time_ns()}")
        code, _ = run_to_end(train_cmd(corpus, run, extra), None, rng)
        crashes += code != 0
        state, log = final_state(run)
        steps = state["step"]
        ok_w, ok_l = same_weights(ref_state, state), log == ref_log
        row(f"kill -9 ({label})", f"{killed} random kills, each resumed; {steps} steps",
            f"crashes {crashes}; final weights {'bit-identical' if ok_w else 'DIFFER'}; logs "
            f"{'identical' if ok_l else 'DIFFER'} ({len(log)} records)", ok_w and ok_l and crashes == 0)
    # A latest checkpoint damaged outside the atomic write (after a kill): resume from checkpoint.prev.pt.
    ref_state, ref_log = final_state(work / "ref-0")
    run = work / "damaged"
    proc = subprocess.Popen(train_cmd(corpus, run, ["train.ckpt_every=5"]), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and not any(r["step"] >= 21 for r in read_log(run / "log.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    code, _ = run_to_end(train_cmd(corpus, run, ["train.ckpt_every=5"]), None, rng)
    state, log = final_state(run)
    ok = code == 0 and same_weights(ref_state, state) and log == ref_log
    row("damaged checkpoint", "latest checkpoint truncated to a third after a kill at step 21",
        f"resumed from checkpoint.prev.pt; final weights {'bit-identical' if same_weights(ref_state, state) else 'DIFFER'},"
        f" logs {'identical' if log == ref_log else 'DIFFER'}", ok)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=4, help="random kill -9 per schedule (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_faults_") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        build_default_corpus(corpus, minutes=0.3, sources="synthetic", progress=False)
        print("bad inputs", flush=True)
        bad_inputs(work, corpus)
        print("kills", flush=True)
        kills(work, corpus, args.kills, args.seed)
    print()
    print(markdown_table(ROWS, ["group", "case", "outcome", "handled"]))
    handled = sum(r["handled"] == "yes" for r in ROWS)
    print(f"\n{handled} of {len(ROWS)} cases handled. {machine_note()}")
    print(f"CSV: {write_csv(ROWS, 'faults')}")
    return 0 if handled == len(ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
