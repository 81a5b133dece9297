"""WHEP viewer: receives video and audio with aiortc and counts decoded frames.

Prints JSON lines: {"event": "watching", ...} after the 201, {"event": "connected"}, then
{"event": "stats", "video": {...}, "audio": {...}} every --interval seconds, and
{"event": "done", ...} last. Runs for --seconds or until SIGTERM; then sends DELETE.
"""

import argparse
import asyncio
import signal
import sys
import time

from aiortc import RTCPeerConnection

from common import FrameCounter, emit, http, negotiate, wait_connected


async def main(args):
    pc = RTCPeerConnection()
    counters = {}

    @pc.on("track")
    def on_track(track):
        counters[track.kind] = FrameCounter(track)

    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    res, location = await negotiate(pc, args.url, args.token)
    emit(event="watching", status=res.status, location=location,
         body=res.body.decode(errors="replace") if res.status != 201 else None)
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

    def snapshot():
        return {k: c.snapshot() for k, c in counters.items()}

    deadline = time.monotonic() + args.seconds
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(stop.wait(), timeout=args.interval)
        except asyncio.TimeoutError:
            pass
        emit(event="stats", state=pc.connectionState, **snapshot())

    delete_status = None
    if location:
        delete_status = (await http("DELETE", location)).status
    await pc.close()
    emit(event="done", ok=True, delete_status=delete_status, **snapshot())
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True, help="WHEP endpoint, e.g. http://127.0.0.1:8080/whep/demo")
    p.add_argument("--token", help="optional viewer token (Authorization: Bearer)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--connect-timeout", type=float, default=10.0)
    sys.exit(asyncio.run(main(p.parse_args())))
