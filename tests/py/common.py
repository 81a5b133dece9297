"""Shared pieces of the aiortc test clients: WHIP/WHEP HTTP, synthetic media, JSON-lines output.

Every client prints one JSON object per line on stdout; the Rust harness reads them (the last
line is the client's result). Diagnostics go to stderr. Nothing here talks to anything but the
URLs it is given.
"""

import asyncio
import fractions
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
from av import AudioFrame, VideoFrame
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError


def emit(**fields):
    """Prints one JSON line on stdout and flushes it, so the harness sees it at once."""
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class HttpResult:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body


def _http_blocking(method, url, body=None, headers=None, timeout=10.0):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, dict(err.headers), err.read())


async def http(method, url, body=None, headers=None, timeout=10.0):
    """One HTTP request off the event loop (urllib keeps the client free of extra packages)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, lambda: _http_blocking(method, url, body, headers, timeout)
    )


def resolve(base, location):
    """Resolves a possibly relative Location against the URL the POST went to."""
    return urllib.parse.urljoin(base, location) if location else None


async def negotiate(pc, url, key=None):
    """Sends the local offer to a WHIP/WHEP endpoint; returns (HttpResult, absolute Location).

    aiortc gathers all candidates inside setLocalDescription, so the offer is complete and no
    trickle PATCH is needed (the same shape as OBS's WHIP client).
    """
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)
    headers = {"Content-Type": "application/sdp"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    res = await http("POST", url, pc.localDescription.sdp.encode(), headers)
    location = resolve(url, res.headers.get("location"))
    if res.status == 201:
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=res.body.decode(), type="answer")
        )
    return res, location


def prefer_codec(transceiver, kind, mime):
    """Restricts a transceiver to one codec (plus its RTX), e.g. video/VP8 or video/H264."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in caps if c.mimeType.lower() == mime.lower()]
    if not chosen:
        raise SystemExit(f"aiortc has no codec {mime}")
    rtx = [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
    transceiver.setCodecPreferences(chosen + rtx)


async def wait_connected(pc, timeout):
    """Waits for connectionState == connected; raises TimeoutError naming the last state."""
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise ConnectionError(f"peer connection {pc.connectionState}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not connected after {timeout}s: {pc.connectionState}")
        await asyncio.sleep(0.05)


class MovingVideoTrack(VideoStreamTrack):
    """Synthetic video: a bright bar sweeping across a gradient, with a frame counter in luma.

    Frames are built directly in yuv420p so no colour conversion runs per frame; the content
    changes every frame so an encoder cannot reduce the stream to skipped frames.
    """

    def __init__(self, width=640, height=480):
        super().__init__()
        self.width = width
        self.height = height
        x = np.linspace(16, 235, width, dtype=np.float32)
        y = np.linspace(0, 60, height, dtype=np.float32)[:, None]
        self._luma = np.clip(x[None, :] * 0.7 + y, 16, 235).astype(np.uint8)
        self._chroma = np.full((height // 2, width), 128, dtype=np.uint8)
        self.frames = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        luma = self._luma.copy()
        bar = (self.frames * 8) % self.width
        luma[:, bar : bar + 32] = 235
        row = (self.frames * 4) % self.height
        luma[row : row + 16, :] = 40
        frame = VideoFrame.from_ndarray(np.vstack([luma, self._chroma]), format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        self.frames += 1
        return frame


class SineAudioTrack(MediaStreamTrack):
    """Synthetic audio: a 440 Hz sine, 48 kHz mono s16, paced in real time (20 ms frames)."""

    kind = "audio"

    def __init__(self, freq=440.0, sample_rate=48000):
        super().__init__()
        self.sample_rate = sample_rate
        self.samples = int(AUDIO_PTIME * sample_rate)
        self.freq = freq
        self._start = None
        self._timestamp = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += self.samples
            wait = self._start + self._timestamp / self.sample_rate - time.time()
            await asyncio.sleep(wait)
        t = (np.arange(self.samples) + self._timestamp) / self.sample_rate
        pcm = (np.sin(2 * math.pi * self.freq * t) * 8000).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


class FrameCounter:
    """Consumes a received track, counting decoded frames and remembering the video size."""

    def __init__(self, track):
        self.track = track
        self.frames = 0
        self.width = 0
        self.height = 0
        self.first_at = None
        self.last_at = None
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            now = time.monotonic()
            self.first_at = self.first_at or now
            self.last_at = now
            if isinstance(frame, VideoFrame):
                self.width, self.height = frame.width, frame.height

    def snapshot(self):
        return {"frames": self.frames, "width": self.width, "height": self.height}
