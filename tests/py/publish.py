"""WHIP publisher: synthetic moving video (VP8 or H264) and a sine (Opus) from aiortc.

Prints JSON lines: {"event": "published", ...} after the 201, {"event": "connected"}, then
{"event": "stats", ...} every second, and {"event": "done", ...} last. Runs for --seconds, or
until SIGTERM/SIGINT; then sends DELETE unless --no-delete.
"""

import argparse
import asyncio
import signal
import sys
import time

from aiortc import RTCPeerConnection

from common import (
    MovingVideoTrack,
    SineAudioTrack,
    emit,
    http,
    log,
    negotiate,
    prefer_codec,
    wait_connected,
)


async def main(args):
    pc = RTCPeerConnection()
    video = MovingVideoTrack(args.width, args.height)
    audio = SineAudioTrack()
    vt = pc.addTransceiver(video, direction="sendonly")
    prefer_codec(vt, "video", f"video/{args.codec}")
    if not args.no_audio:
        at = pc.addTransceiver(audio, direction="sendonly")
        prefer_codec(at, "audio", "audio/opus")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    res, location = await negotiate(pc, args.url, args.key)
    emit(
        event="published",
        status=res.status,
        location=location,
        etag=res.headers.get("etag"),
        body=res.body.decode(errors="replace") if res.status != 201 else None,
    )
    if res.status != 201:
        await pc.close()
        emit(event="done", ok=False, status=res.status)
        return 1

    try:
        await wait_connected(pc, args.connect_timeout)
    except (TimeoutError, ConnectionError) as err:
        emit(event="done", ok=False, error=str(err))
        await pc.close()
        return 1
    emit(event="connected")

    deadline = time.monotonic() + args.seconds
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
        emit(event="stats", frames_sent=video.frames, state=pc.connectionState)

    delete_status = None
    if not args.no_delete and location:
        delete_status = (await http("DELETE", location)).status
    await pc.close()
    emit(event="done", ok=True, frames_sent=video.frames, delete_status=delete_status)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True, help="WHIP endpoint, e.g. http://127.0.0.1:8080/whip/demo")
    p.add_argument("--key", help="stream key sent as Authorization: Bearer")
    p.add_argument("--codec", default="VP8", choices=["VP8", "H264"])
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--no-delete", action="store_true")
    sys.exit(asyncio.run(main(p.parse_args())))
