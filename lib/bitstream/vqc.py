"""The ``.vqc`` file: a trained codec's codes for one signal, packed or range-coded, behind a checked header.

Layout (all integers little-endian)::

    offset size  field
    0      4     magic b"\\x89VQC"
    4      2     format version: 1, or 2 for a payload coded with a prior (older programs then refuse it by name)
    6      2     header size in bytes, this CRC included
    8      1     payload mode: 0 packed, 1 entropy-coded (lib.bitstream.entropy), 2 prior-coded (version 2 only)
    9      1     quantizer: 0 residual VQ, 1 FSQ (a level's code is the mixed-radix index of its digits)
    10     1     L, the number of quantizer levels used
    11     1     audio channels of the codec
    12     4     codec sample rate (Hz)
    16     4     hop: samples per frame
    20     4     frames per block (a multiple of 8)
    24     4     sample rate of the source file (information only)
    28     2     channels of the source file (information only)
    30     2     R, the number of FSQ radices (0 for residual VQ)
    32     8     frames F = ceil(length / hop)
    40     8     length: samples at the codec rate before padding to whole frames
    48     8     payload size in bytes
    56     4     CRC-32 of the payload
    60     16    SHA-256 prefix of the codec weights (lib.bitstream.vqc.weights_hash)
    76     16    SHA-256 prefix of the entropy model: the context models, or the prior (zeros when packed)
    92     4L    alphabet size K_l of each level (codebook size; product of the radices for FSQ)
    ..     2R    FSQ radices, e.g. 8 5 5 5
    ..     2+n   UTF-8 path of the checkpoint that wrote the file (a hint for decompress), length first
    ..     4     CRC-32 of all header bytes before it

The payload holds F frames in blocks of ``block`` frames (the last one shorter). *Packed*: one bit stream, frame
after frame, level after level, each code in ``ceil(log2 K_l)`` bits MSB first, zero bits to the last byte, so
the payload is ``ceil(F * sum_l ceil(log2 K_l) / 8)`` bytes: the nominal bitrate. *Entropy-coded*: per block a
uint32 word count and that many uint32 words of a range coder (``constriction``), codes ordered level by level
within the block, under the model of ``lib.bitstream.entropy`` whose hash the header carries. *Prior-coded*: the
same, codes frame after frame, under the prior of ``lib.bitstream.prior_coding`` whose hash the header carries.

What decompress returns: the codes in the file are exactly ``codec.encode(x, n_q)`` (the codec's streaming
encoder gives the same codes as the offline one), and the audio is :func:`reference_decode` of them: the codec's
streaming decoder fed ``block`` frames at a time, trimmed to ``length``. That equals ``codec.decode(codes)``
up to float32 rounding (about 1e-7: convolutions over different lengths round differently) and is what bounded
memory costs; ``offline=True`` decodes the whole file in one ``codec.decode`` call instead, which is then
sample for sample ``codec.decode(codec.encode(x))`` (same machine and thread count).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from lib.atomic import atomic_path

__all__ = ["MAGIC", "VERSION", "MODES", "DEFAULT_BLOCK_FRAMES", "VqcError", "Header", "alphabet_sizes", "weights_hash",
           "bits_per_level", "pack_codes", "unpack_codes", "check_output", "atomic_output", "read_header",
           "encode_to_file", "iter_codes", "decode_audio", "reference_decode", "check_codec", "check_model"]

MAGIC = b"\x89VQC"
VERSION = 2  # the newest format version this program writes and reads (it reads every version from 1)
MODES = ("packed", "entropy", "prior")
_MODE_VERSION = {"packed": 1, "entropy": 1, "prior": 2}  # a file is written with the first version that has its mode
QUANTIZERS = ("rvq", "fsq")
DEFAULT_BLOCK_FRAMES = 512
_FIXED = struct.Struct("<4sHH BBBB IIII HH QQQ I 16s16s")
_CRC = struct.Struct("<I")
_MAX_PATH = 4096


class VqcError(ValueError):
    """A ``.vqc`` file (or an output path) that cannot be used; ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")


# ---------------------------------------------------------------------------------------------- header

@dataclass
class Header:
    mode: str
    sample_rate: int
    hop: int
    channels: int
    alphabet: tuple[int, ...]
    n_frames: int = 0
    length: int = 0
    block_frames: int = DEFAULT_BLOCK_FRAMES
    quantizer: str = "rvq"
    radices: tuple[int, ...] = ()
    source_rate: int = 0
    source_channels: int = 0
    weights_hash: bytes = bytes(16)
    model_hash: bytes = bytes(16)
    payload_size: int = 0
    payload_crc: int = 0
    checkpoint: str = ""
    version: int = field(default=0, compare=False)  # the file's format version (0: not read from a file)

    @property
    def n_levels(self) -> int:
        return len(self.alphabet)

    @property
    def bits(self) -> list[int]:
        return bits_per_level(self.alphabet)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def duration(self) -> float:
        return self.length / self.sample_rate

    @property
    def nominal_bitrate(self) -> float:
        """Bits per second of the packed payload: ``sum_l ceil(log2 K_l) * frame_rate``."""
        return sum(self.bits) * self.frame_rate

    @property
    def payload_bitrate(self) -> float:
        return 8 * self.payload_size / self.duration if self.length else 0.0

    @property
    def size(self) -> int:
        return len(self.to_bytes())

    def to_bytes(self) -> bytes:
        path = self.checkpoint.encode("utf-8")[:_MAX_PATH]
        body = _FIXED.pack(MAGIC, _MODE_VERSION[self.mode], 0, MODES.index(self.mode), QUANTIZERS.index(self.quantizer),
                           self.n_levels, self.channels, self.sample_rate, self.hop, self.block_frames,
                           self.source_rate, self.source_channels, len(self.radices), self.n_frames, self.length,
                           self.payload_size, self.payload_crc, self.weights_hash, self.model_hash)
        body += struct.pack(f"<{self.n_levels}I{len(self.radices)}HH", *self.alphabet, *self.radices, len(path))
        body += path
        body = body[:6] + struct.pack("<H", len(body) + _CRC.size) + body[8:]
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, path: str | os.PathLike = "<bytes>") -> "Header":
        """Parse and check a whole header (``data`` may hold more bytes after it)."""
        if len(data) < 8:
            if MAGIC.startswith(data[:4]) and data:
                raise VqcError(path, f"truncated: {len(data)} bytes, shorter than a .vqc header")
            raise VqcError(path, "not a .vqc file (empty)" if not data else
                           f"not a .vqc file (it starts with {data[:4]!r}, expected {MAGIC!r})")
        magic, version, size = struct.unpack_from("<4sHH", data)
        if magic != MAGIC:
            raise VqcError(path, f"not a .vqc file (it starts with {magic!r}, expected {MAGIC!r})")
        if not 1 <= version <= VERSION:
            raise VqcError(path, f"format version {version}; this program reads versions 1 to {VERSION}")
        if size < _FIXED.size + 2 + _CRC.size:
            raise VqcError(path, f"corrupted header (declared size {size} bytes)")
        if len(data) < size:
            raise VqcError(path, f"truncated: {len(data)} bytes, shorter than its {size}-byte header")
        if zlib.crc32(data[:size - _CRC.size]) != _CRC.unpack_from(data, size - _CRC.size)[0]:
            raise VqcError(path, "corrupted header (checksum mismatch)")
        (_, _, _, mode, quant, n_levels, channels, sr, hop, block, src_rate, src_ch, n_rad, n_frames, length,
         payload_size, payload_crc, w_hash, m_hash) = _FIXED.unpack_from(data)
        try:
            if mode >= len(MODES) or _MODE_VERSION[MODES[mode]] > version:
                raise ValueError(f"payload mode {mode} in a version {version} file")
            off = _FIXED.size
            alphabet = struct.unpack_from(f"<{n_levels}I", data, off)
            off += 4 * n_levels
            radices = struct.unpack_from(f"<{n_rad}H", data, off)
            off += 2 * n_rad
            (n_path,) = struct.unpack_from("<H", data, off)
            checkpoint = data[off + 2:off + 2 + n_path].decode("utf-8")
            if off + 2 + n_path + _CRC.size != size:
                raise ValueError("field sizes do not add up to the header size")
            header = cls(MODES[mode], sr, hop, channels, tuple(alphabet), n_frames, length, block, QUANTIZERS[quant],
                         tuple(radices), src_rate, src_ch, w_hash, m_hash, payload_size, payload_crc, checkpoint,
                         version)
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
            raise VqcError(path, f"corrupted header ({e})") from None
        problem = header._inconsistency()
        if problem:
            raise VqcError(path, f"corrupted header ({problem})")
        return header

    def _inconsistency(self) -> str:
        if not self.alphabet or min(self.alphabet) < 1:
            return f"alphabet sizes {self.alphabet}"
        if self.radices and any(int(np.prod(self.radices)) != k for k in self.alphabet):
            return f"FSQ radices {self.radices} do not multiply to the alphabet sizes {self.alphabet}"
        if min(self.sample_rate, self.hop, self.channels) < 1 or self.block_frames < 8 or self.block_frames % 8:
            return (f"sample rate {self.sample_rate}, hop {self.hop}, channels {self.channels}, "
                    f"block {self.block_frames}")
        if self.n_frames != -(-self.length // self.hop):
            return f"{self.n_frames} frames for {self.length} samples at hop {self.hop}"
        if self.mode == "packed" and self.payload_size != (self.n_frames * sum(self.bits) + 7) // 8:
            return f"packed payload of {self.payload_size} bytes for {self.n_frames} frames"
        return ""


def read_header(path: str | os.PathLike, check_payload: bool = True) -> Header:
    """The header of ``path``, checked; with ``check_payload`` also the file size and the payload's CRC."""
    path = Path(path)
    if not path.is_file():
        raise VqcError(path, "does not exist" if not path.exists() else "is not a regular file")
    with open(path, "rb") as f:
        head = f.read(8)
        size = struct.unpack_from("<H", head, 6)[0] if len(head) == 8 and head[:4] == MAGIC else 0
        header = Header.from_bytes(head + f.read(max(size - 8, 0)), path)
        if not check_payload:
            return header
        actual = path.stat().st_size - header.size
        if actual < header.payload_size:
            raise VqcError(path, f"truncated: payload has {actual} of {header.payload_size} bytes")
        if actual > header.payload_size:
            raise VqcError(path, f"corrupted: {actual - header.payload_size} unexpected bytes after the payload")
        crc = 0
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    if crc != header.payload_crc:
        raise VqcError(path, "corrupted payload (checksum mismatch)")
    return header


# ---------------------------------------------------------------------------------------------- codec facts

def alphabet_sizes(codec) -> list[int]:
    """Alphabet size of every quantizer level (``quantizer.alphabet_sizes`` if it has one, else codebook sizes)."""
    q = codec.quantizer
    if q is None or getattr(codec, "continuous", False):
        raise ValueError("this model is continuous (no quantizer): it has no codes to store")
    if hasattr(q, "alphabet_sizes"):
        return [int(k) for k in q.alphabet_sizes]
    return [int(q.codebook_size)] * int(q.n_q)


def weights_hash(codec: torch.nn.Module) -> bytes:
    """16-byte SHA-256 prefix of the codec's ``state_dict`` (names, dtypes, shapes and values, name order)."""
    h = hashlib.sha256()
    for name, t in sorted(codec.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[:16]


def check_codec(header: Header, codec, vqc_path, checkpoint) -> None:
    """The codec must be the one that wrote the file (same weights hash)."""
    mine = weights_hash(codec)
    if mine != header.weights_hash:
        made = f" (it was written with {header.checkpoint})" if header.checkpoint else ""
        raise VqcError(vqc_path, f"was encoded with codec weights {header.weights_hash.hex()}{made}, but checkpoint "
                                 f"{checkpoint} holds weights {mine.hex()}; decode it with the checkpoint that made it")
    if list(header.alphabet) != alphabet_sizes(codec)[:header.n_levels] or header.hop != codec.hop_length:
        raise VqcError(vqc_path, f"its alphabet {header.alphabet} / hop {header.hop} do not match checkpoint "
                                 f"{checkpoint}")


def check_model(header: Header, model, vqc_path, model_path) -> None:
    """An entropy- or prior-coded file needs the very model (context models or prior) it was coded with."""
    what, option = ("prior", "--prior") if header.mode == "prior" else ("entropy model", "--entropy-model")
    if model is None:
        raise VqcError(vqc_path, f"is {header.mode}-coded but no {what} was given (expected one beside the "
                                 f"checkpoint, or pass {option})")
    if model.weights_hash != header.weights_hash:
        raise VqcError(vqc_path, f"was coded for codec weights {header.weights_hash.hex()}, but {model_path} was "
                                 f"made for codec weights {model.weights_hash.hex()}; use the {what} it was coded with")
    if model.digest() != header.model_hash:
        raise VqcError(vqc_path, f"was coded with {what} {header.model_hash.hex()}, but {model_path} is "
                                 f"{what} {model.digest().hex()}; use the {what} it was written with")


# ---------------------------------------------------------------------------------------------- packing

def bits_per_level(alphabet) -> list[int]:
    """``ceil(log2 K)`` per level (0 bits for an alphabet of one)."""
    return [(int(k) - 1).bit_length() for k in alphabet]


def pack_codes(codes: np.ndarray, bits: list[int]) -> bytes:
    """Codes ``[L, n]`` -> bytes: frame by frame, level by level, ``bits[l]`` bits MSB first."""
    cols = [(codes[l].astype(np.int64)[:, None] >> np.arange(b - 1, -1, -1)) & 1 for l, b in enumerate(bits) if b]
    if not cols or codes.shape[1] == 0:
        return b""
    return np.packbits(np.concatenate(cols, axis=1).astype(np.uint8).ravel()).tobytes()


def unpack_codes(data: bytes, n: int, bits: list[int]) -> np.ndarray:
    """Inverse of :func:`pack_codes` for ``n`` frames: ``[L, n]`` int64."""
    total = sum(bits)
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n * total)
    matrix = flat.reshape(n, total).astype(np.int64)
    out, col = np.zeros((len(bits), n), dtype=np.int64), 0
    for l, b in enumerate(bits):
        if b:
            out[l] = matrix[:, col:col + b] @ (1 << np.arange(b - 1, -1, -1))
            col += b
    return out


# ---------------------------------------------------------------------------------------------- output files

def check_output(path: str | os.PathLike) -> Path:
    """Raise a VqcError naming ``path`` if it cannot be an output file (a folder, or its folder is missing or not
    a folder); :func:`atomic_output` also reports a folder it may not write to."""
    path = Path(path)
    if path.is_dir():
        raise VqcError(path, "cannot write the output: it is a folder")
    if not path.parent.exists():
        raise VqcError(path, f"cannot write the output: folder {path.parent} does not exist")
    if not path.parent.is_dir():
        raise VqcError(path, f"cannot write the output: {path.parent} is not a folder")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it to ``path``, on any error delete it, so that no
    partial output is ever left behind. Fails first with a VqcError when ``path`` cannot be written."""
    path = check_output(path)
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_path(path, suffix=".part"))
        except OSError as e:  # the temp file could not be created: the folder is not writable
            raise VqcError(path, f"cannot write the output: {e.strerror or e}") from None
        yield tmp


# ---------------------------------------------------------------------------------------------- encoding

class _BlockWriter:
    """Collects codes ``[L, n]`` and writes whole blocks of the payload."""

    def __init__(self, f, header: Header, model):
        self.f, self.header = f, header
        self.coder = model.block_coder() if header.mode != "packed" else None  # a prior's state runs across blocks
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.prev: np.ndarray | None = None
        self.crc = self.size = self.frames = 0

    def add(self, codes: np.ndarray, final: bool = False) -> None:
        self.pending.append(codes)
        self.n_pending += codes.shape[1]
        block = self.header.block_frames
        if self.n_pending >= block or (final and self.n_pending):
            allc = np.concatenate(self.pending, axis=1)
            cut = allc.shape[1] - allc.shape[1] % block if not final else allc.shape[1]
            for start in range(0, cut, block):
                self._write(allc[:, start:start + block])
            self.pending, self.n_pending = [allc[:, cut:]], allc.shape[1] - cut

    def _write(self, codes: np.ndarray) -> None:
        if self.header.mode == "packed":
            data = pack_codes(codes, self.header.bits)
        else:
            words = self.coder.encode_block(codes, self.prev).astype("<u4")
            data = struct.pack("<I", len(words)) + words.tobytes()
        self.prev = codes[:, -1]
        self.f.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.frames += codes.shape[1]


@torch.inference_mode()
def encode_to_file(codec, chunks: Iterable[torch.Tensor], path: str | os.PathLike, *, n_q: int | None = None,
                   mode: str = "packed", model=None, block_frames: int = DEFAULT_BLOCK_FRAMES, source_rate: int = 0,
                   source_channels: int = 0, checkpoint: str = "", progress=None) -> Header:
    """Stream ``chunks`` (``[C, t]`` float tensors at the codec's rate, any sizes) through the codec's streaming
    encoder into the ``.vqc`` file ``path`` (written atomically). ``progress(samples)`` is called per chunk."""
    full = alphabet_sizes(codec)
    n_q = len(full) if n_q is None else int(n_q)
    if not 1 <= n_q <= len(full):
        raise ValueError(f"n_q must be in [1, {len(full)}], got {n_q}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if block_frames < 8 or block_frames % 8:
        raise ValueError(f"block_frames must be a positive multiple of 8, got {block_frames}")
    radices = tuple(int(r) for r in getattr(codec.quantizer, "radices", ()))
    header = Header(mode, int(codec.sample_rate), codec.hop_length, codec.channels, tuple(full[:n_q]),
                    block_frames=block_frames, quantizer="fsq" if radices else "rvq", radices=radices,
                    source_rate=int(source_rate), source_channels=int(source_channels),
                    weights_hash=weights_hash(codec), checkpoint=str(checkpoint))
    if mode != "packed":
        what = "prior" if mode == "prior" else "entropy model"
        if model is None or tuple(model.alphabet[:n_q]) != header.alphabet:
            raise ValueError(f"mode={mode!r} needs the {what} of the codec's levels {header.alphabet}, got "
                             f"{model.alphabet if model is not None else 'none'}")
        if model.weights_hash != header.weights_hash:
            raise VqcError(path, f"the {what} was fitted for codec weights {model.weights_hash.hex()}, "
                                 f"not these ({header.weights_hash.hex()}); refit it (python -m lib fit-{mode})")
        header.model_hash = model.digest()
    device = next(codec.parameters()).device
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(header.to_bytes())
        writer = _BlockWriter(f, header, model)
        codec.reset_stream()
        try:
            for chunk in chunks:
                header.length += chunk.shape[-1]
                codes = codec.stream_encode(chunk.unsqueeze(0).to(device, torch.float32), n_q=n_q)[0]
                writer.add(codes.cpu().numpy())
                if progress is not None:
                    progress(chunk.shape[-1])
            pad = torch.zeros(1, codec.channels, -header.length % codec.hop_length, device=device)
            writer.add(codec.stream_encode(pad, n_q=n_q)[0].cpu().numpy(), final=True)
        finally:
            codec.reset_stream()
        header.n_frames, header.payload_size, header.payload_crc = writer.frames, writer.size, writer.crc
        f.seek(0)
        f.write(header.to_bytes())
    return header


# ---------------------------------------------------------------------------------------------- decoding

def iter_codes(path: str | os.PathLike, header: Header, model=None) -> Iterator[np.ndarray]:
    """The payload of ``path`` as blocks of codes ``[L, n]`` (``read_header`` checked it already)."""
    if header.mode != "packed" and model is None:
        raise VqcError(path, f"is {header.mode}-coded: the model it was coded with is needed to read it")
    bits, prev = header.bits, None
    coder = model.block_coder() if header.mode != "packed" else None
    with open(path, "rb") as f:
        f.seek(header.size)
        remaining, left = header.n_frames, header.payload_size
        while remaining:
            n = min(header.block_frames, remaining)
            if header.mode == "packed":
                size = (n * sum(bits) + 7) // 8
                codes = unpack_codes(_read(f, size, left, path), n, bits)
                bad = [l for l, k in enumerate(header.alphabet) if codes[l].max(initial=0) >= k]
                if bad:
                    raise VqcError(path, f"corrupted payload (level {bad[0]} holds a code outside its alphabet)")
            else:
                (count,) = struct.unpack("<I", _read(f, 4, left, path))
                size = 4 + 4 * count
                words = np.frombuffer(_read(f, 4 * count, left - 4, path), dtype="<u4")
                try:
                    codes = coder.decode_block(words, header.n_levels, n, prev)
                except (ValueError, RuntimeError, OverflowError) as e:
                    raise VqcError(path, f"corrupted payload (range decoder: {e})") from None
            left -= size
            remaining -= n
            prev = codes[:, -1]
            yield codes
    if left:
        raise VqcError(path, f"corrupted payload ({left} bytes left after the last frame)")


def _read(f, size: int, left: int, path) -> bytes:
    data = f.read(size) if size <= left else b""
    if len(data) != size:
        raise VqcError(path, "corrupted payload (a block runs past the end of the payload)")
    return data


def _stream_blocks(codec, blocks: Iterable[np.ndarray], length: int) -> Iterator[torch.Tensor]:
    """The codec's streaming decoder over blocks of codes ``[L, n]``; yields audio ``[C, n * hop]`` (CPU,
    the last block trimmed so that ``length`` samples come out in all)."""
    device, done = next(codec.parameters()).device, 0
    codec.reset_stream()
    try:
        with torch.inference_mode():
            for codes in blocks:
                y = codec.stream_decode(torch.as_tensor(codes, dtype=torch.long, device=device).unsqueeze(0))[0]
                y = y[..., :max(length - done, 0)].cpu()
                done += y.shape[-1]
                yield y
            # A decoder with look-ahead (the iSTFT overlap-add) still holds the last samples.
            y = codec.stream_flush()[0][..., :max(length - done, 0)].cpu()
            if y.shape[-1]:
                yield y
    finally:
        codec.reset_stream()


def reference_decode(codec, codes: torch.Tensor | np.ndarray, length: int,
                     block_frames: int = DEFAULT_BLOCK_FRAMES) -> torch.Tensor:
    """What decompress returns for ``codes`` ``[L, F]``: the streaming decoder fed ``block_frames`` frames at a
    time, trimmed to ``length`` samples, ``[C, length]``."""
    codes = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes)
    blocks = (codes[:, s:s + block_frames] for s in range(0, codes.shape[1], block_frames))
    return torch.cat(list(_stream_blocks(codec, blocks, length)), dim=-1)


def decode_audio(codec, path: str | os.PathLike, header: Header, model=None,
                 offline: bool = False) -> Iterator[torch.Tensor]:
    """Audio ``[C, n]`` of a checked ``.vqc`` file, block by block (see the module docstring for what it equals);
    ``offline`` decodes all codes in one ``codec.decode`` call (memory grows with the file's length)."""
    blocks = iter_codes(path, header, model)
    if not offline:
        yield from _stream_blocks(codec, blocks, header.length)
        return
    codes = torch.as_tensor(np.concatenate(list(blocks), axis=1), device=next(codec.parameters()).device)
    with torch.inference_mode():
        yield codec.decode(codes.unsqueeze(0), length=header.length)[0].cpu()
