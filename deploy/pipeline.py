"""Frame decoding with the PyAV contract, serial or pipelined over two cores.

    decoder = FrameDecoder(model, height, width, pipelined=True, output=to_frame)
    for packet in packets:
        for result in decoder.decode(packet):   # may hold a frame back
            ...                                 # result.frame = to_frame(result.reconstruction)
    for result in decoder.flush():              # the frames still held
        ...
    decoder.timings                             # seconds per stage, accumulated

A frame's decoding has two halves that need different inputs (DESIGN, "Data flow"): entropy
decoding (`decode_latent`: streams, the previous frame's *latent*, never pixels) and synthesis
(`synthesize`: the latent and the previous frame's pixels). Pipelined, the entropy decoding of
frame t+1 runs on a worker thread while the caller's thread synthesises frame t; the native coder
and torch release the GIL, so the two run on two cores. Each half keeps its own reference (the
worker the previous latent, the caller the previous reconstruction), both in decoding order, so the
pipelined decoder yields exactly the frames of the serial one (tested), errors included: a damaged
packet yields an error result and breaks both reference chains until the next I-frame.

`model` is whatever runs the frames: the shipped model or a deployed copy (`nvc.codec.deployed_model`:
int8 synthesis, integer entropy parameters); the decoder does not need to know which.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import torch

from nvc.container import DamagedPacket, FramePacket, FrameType
from nvc.entropy.coder import SubstreamForm, stream_format
from nvc.errors import NvcError
from nvc.model import DecodedLatent, Reconstruction


@dataclass(frozen=True)
class DecodedFrame:
    """One packet's outcome: its reconstruction, or the error that stopped it."""

    index: int
    reconstruction: Reconstruction | None
    error: NvcError | None = None
    frame: Any = None  # `output(reconstruction)` when the decoder was given an `output` function


STAGES = ("entropy", "synthesis", "output", "entropy_wait")


class FrameDecoder:
    """Packets in decoding order -> `DecodedFrame`s in the same order (see the module docstring).

    `output`, if given, turns each reconstruction into the caller's frame (crop, colour conversion)
    on the caller's thread; its result is `DecodedFrame.frame`. `substream_form`: the form of the
    file's rANS substreams (its header's `substream_form`).

    `timings` (dict[str, float]): seconds spent so far in each stage, summed over frames, wall clock:
    "entropy" (`decode_latent`: entropy parameters and symbol decoding, with the motion field; on
    the worker thread when pipelined), "synthesis" (`synthesize`: motion compensation and g_s),
    "output" (the `output` function), and "entropy_wait" (pipelined: time the caller's thread waited
    for the worker; entropy decoding not hidden behind synthesis). Demuxing (reading packets) is the
    caller's. Serial, the stages add up to the decoding time; pipelined, about synthesis + output +
    entropy_wait. `frames` counts the frames finished.
    """

    def __init__(self, model, height: int, width: int, pipelined: bool = False,
                 output: Callable[[Reconstruction], Any] | None = None,
                 substream_form: int = SubstreamForm.TRIMMED):
        self.model = model
        self.substream_form = substream_form
        self.height, self.width = height, width  # the padded (coded) luma size
        self.output = output
        self.timings: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        self._pool = None
        if pipelined:
            # One intra-op thread for each of the two decoding threads, set once: the float entropy
            # path and synthesis run single-threaded (for exact results), and a process-wide thread
            # count flipped by one thread while the other computes would break that.
            torch.set_num_threads(1)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="nvc-entropy")
        self._latent_ref: tuple[int, Reconstruction] | None = None  # entropy side: latents only, no pixels
        self._pixel_ref: tuple[int, Reconstruction] | None = None  # synthesis side
        self._pending: Future | None = None

    def _frame_model(self, kind: FrameType):
        return self.model.intra if kind == FrameType.I else self.model.inter

    def _entropy(self, packet: FramePacket | DamagedPacket) -> tuple[FramePacket, DecodedLatent]:
        """Entropy decoding of one packet against the previous latent (worker thread when pipelined)."""
        try:
            if isinstance(packet, DamagedPacket):
                raise NvcError(str(packet))
            index = packet.frame_index
            ref = None
            if packet.frame_type == FrameType.P:
                if self.model.inter is None:
                    raise NvcError(f"frame {index} is a P-frame, but this model codes I-frames only")
                if self._latent_ref is None or self._latent_ref[0] != index - 1:
                    raise NvcError(f"frame {index} is a P-frame and its reference, frame {index - 1}, was not decoded")
                ref = self._latent_ref[1]
            if not 0 <= packet.quality < self.model.config.quality_levels:
                raise NvcError(f"invalid quality {packet.quality} in frame {index}")
            t0 = time.perf_counter()
            try:
                frame_model = self._frame_model(packet.frame_type)
                with stream_format(self.substream_form):
                    latent = frame_model.decode_latent(list(packet.streams), ref, self.height, self.width)
                if hasattr(frame_model, "prepare_synthesis"):  # a deployed model's latent-side synthesis work
                    latent = frame_model.prepare_synthesis(latent, packet.quality)
            except NvcError as e:  # a stream the model found malformed
                raise NvcError(f"{e} in frame {index}") from None
            except (ValueError, RuntimeError, IndexError) as e:
                raise NvcError(f"corrupt latent data in frame {index}: {e}") from None
            finally:
                self.timings["entropy"] += time.perf_counter() - t0
        except NvcError:
            self._latent_ref = None
            raise
        self._latent_ref = (index, Reconstruction(None, latent.y_hat, z_hat=latent.z_hat))
        return packet, latent

    def _synthesis(self, entropy: Future | tuple, index: int) -> list[DecodedFrame]:
        t0 = time.perf_counter()
        try:
            packet, latent = entropy.result() if isinstance(entropy, Future) else entropy
        except NvcError as e:
            self._pixel_ref = None
            self.frames += 1
            return [DecodedFrame(index, None, e)]
        finally:
            self.timings["entropy_wait"] += time.perf_counter() - t0
        ref = None
        if packet.frame_type == FrameType.P:
            if self._pixel_ref is None or self._pixel_ref[0] != index - 1:  # cannot happen: the latent chain held
                raise RuntimeError(f"frame {index}: synthesis reference out of step with entropy decoding")
            ref = self._pixel_ref[1]
        t0 = time.perf_counter()
        rec = self._frame_model(packet.frame_type).synthesize(latent, ref, packet.quality)
        self._pixel_ref = (index, rec)
        t1 = time.perf_counter()
        frame = self.output(rec) if self.output is not None else None
        self.timings["synthesis"] += t1 - t0
        self.timings["output"] += time.perf_counter() - t1
        self.frames += 1
        return [DecodedFrame(index, rec, frame=frame)]

    def decode(self, packet: FramePacket | DamagedPacket) -> list[DecodedFrame]:
        """Start decoding `packet`; returns the frames finished meanwhile (pipelined: the previous one)."""
        if self._pool is None:
            try:
                entropy = self._entropy(packet)
            except NvcError as e:
                self._pixel_ref = None
                self.frames += 1
                return [DecodedFrame(packet.frame_index, None, e)]
            return self._synthesis(entropy, packet.frame_index)
        started = (self._pool.submit(self._entropy, packet), packet.frame_index)  # queued after the previous one
        out = self.flush()  # synthesis of the previous frame, while the worker decodes this packet
        self._pending = started
        return out

    def flush(self) -> list[DecodedFrame]:
        """The frame still held back, if any."""
        if self._pending is None:
            return []
        (future, index), self._pending = self._pending, None
        return self._synthesis(future, index)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
