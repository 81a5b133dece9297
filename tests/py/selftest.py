"""Loopback self-test of the synthetic publisher, with no server: two aiortc peers in-process.

Checks that the tracks in common.py encode and decode at the requested size, so an e2e failure
can be told apart from a broken test client. Prints one JSON line: {"ok": ..., "video": ...}.
"""

import argparse
import asyncio
import sys
import time

from aiortc import RTCPeerConnection

from common import FrameCounter, MovingVideoTrack, SineAudioTrack, emit, prefer_codec


async def main(args):
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    counters = {}

    @receiver.on("track")
    def on_track(track):
        counters[track.kind] = FrameCounter(track)

    vt = sender.addTransceiver(MovingVideoTrack(args.width, args.height), direction="sendonly")
    prefer_codec(vt, "video", f"video/{args.codec}")
    sender.addTransceiver(SineAudioTrack(), direction="sendonly")

    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)

    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        video = counters.get("video")
        audio = counters.get("audio")
        if video and audio and video.frames >= args.frames and audio.frames > 0:
            break
        await asyncio.sleep(0.1)

    result = {k: c.snapshot() for k, c in counters.items()}
    video = result.get("video", {})
    ok = (
        video.get("frames", 0) >= args.frames
        and (video.get("width"), video.get("height")) == (args.width, args.height)
        and result.get("audio", {}).get("frames", 0) > 0
    )
    await sender.close()
    await receiver.close()
    emit(ok=ok, codec=args.codec, **result)
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--codec", default="VP8", choices=["VP8", "H264"])
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--seconds", type=float, default=20.0)
    sys.exit(asyncio.run(main(p.parse_args())))
