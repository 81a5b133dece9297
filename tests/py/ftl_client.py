"""An FTL client that speaks what ftl-sdk's `ftl_app` speaks, for the end-to-end tests.

Like `ftl_app -i HOST -s "<channel>-<key>" -v video.h264 -a audio.opus`, it streams an Annex-B
H.264 file and an Ogg Opus file (both made here by ffmpeg) as RTP over UDP after the TCP control
handshake (HMAC challenge, CONNECT with HMAC-SHA512 of the key, attributes, `.`), pings every
5 s, and sends DISCONNECT at the end. One JSON line on stdout reports what happened.

usage: ftl_client.py HOST CONTROL_PORT CHANNEL KEY SECONDS
"""

import hashlib
import hmac
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time

MTU_PAYLOAD = 1200


def emit(**fields):
    print(json.dumps(fields), flush=True)


class Control:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n\r\n")

    def reply(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed the control channel")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def make_media(seconds, workdir):
    video = os.path.join(workdir, "video.h264")
    audio = os.path.join(workdir, "audio.opus")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
         "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "60",
         "-x264-params", "aud=1", "-pix_fmt", "yuv420p", "-f", "h264", video],
        check=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-ac", "2", "-c:a", "libopus", "-b:a", "64k", "-frame_duration", "20", audio],
        check=True)
    return video, audio


def access_units(path):
    """Annex-B → list of access units, each a list of NAL units (AUD delimits units)."""
    data = open(path, "rb").read()
    nals, i = [], 0
    starts = []
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[s:e].rstrip(b"\x00")
        if nal:
            nals.append(nal)
    units, cur = [], []
    for nal in nals:
        if nal[0] & 0x1F == 9:  # access unit delimiter
            if cur:
                units.append(cur)
            cur = []
            continue
        cur.append(nal)
    if cur:
        units.append(cur)
    return units


def opus_packets(path):
    """Ogg Opus → Opus packets (header packets skipped)."""
    data, pos, packets, pending = open(path, "rb").read(), 0, [], b""
    while pos + 27 <= len(data) and data[pos:pos + 4] == b"OggS":
        nseg = data[pos + 26]
        table = data[pos + 27:pos + 27 + nseg]
        body = pos + 27 + nseg
        for lacing in table:
            pending += data[body:body + lacing]
            body += lacing
            if lacing < 255:
                packets.append(pending)
                pending = b""
        pos = body
    return [p for p in packets if not p.startswith(b"OpusHead") and not p.startswith(b"OpusTags")]


def rtp(pt, seq, ts, ssrc, payload, marker):
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def h264_payloads(nal):
    if len(nal) <= MTU_PAYLOAD:
        return [nal]
    header, body = nal[0], nal[1:]
    out, first = [], True
    while body:
        part, body = body[:MTU_PAYLOAD], body[MTU_PAYLOAD:]
        fu_header = (header & 0x1F) | (0x80 if first else 0) | (0x40 if not body else 0)
        out.append(bytes([(header & 0xE0) | 28, fu_header]) + part)
        first = False
    return out


def main():
    host, port, channel, key, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    work = tempfile.mkdtemp(prefix="ftl-")
    video, audio = make_media(seconds, work)
    units, opus = access_units(video), opus_packets(audio)

    ctl = Control(host, port)
    ctl.send("HMAC")
    r = ctl.reply()
    if not r.startswith("200 "):
        emit(ok=False, stage="hmac", reply=r)
        return
    challenge = bytes.fromhex(r[4:].strip())
    digest = hmac.new(key.encode(), challenge, hashlib.sha512).hexdigest()
    ctl.send(f"CONNECT {channel} ${digest}")
    r = ctl.reply()
    if r.strip() != "200":
        emit(ok=False, stage="connect", reply=r)
        return
    vssrc, assrc = channel, channel + 1
    for line in ["ProtocolVersion: 0.9", "VendorName: waveguide-tests", "VendorVersion: 0.1",
                 "Video: true", "VideoCodec: H264", "VideoHeight: 360", "VideoWidth: 640",
                 "VideoPayloadType: 96", f"VideoIngestSSRC: {vssrc}", "Audio: true",
                 "AudioCodec: OPUS", "AudioPayloadType: 97", f"AudioIngestSSRC: {assrc}"]:
        ctl.send(line)
    ctl.send(".")
    r = ctl.reply()
    if not r.startswith("200 hi. Use UDP port "):
        emit(ok=False, stage="attributes", reply=r)
        return
    media_port = int(r.rsplit(" ", 1)[1])

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect((host, media_port))
    udp.setblocking(False)
    vseq, aseq = random.randint(0, 65535), random.randint(0, 65535)
    start = time.monotonic()
    next_ping, pongs, nacks, sent = start, 0, 0, 0
    vi = ai = 0
    while vi < len(units) or ai < len(opus):
        now = time.monotonic() - start
        vt = vi / 30.0 if vi < len(units) else float("inf")
        at = ai * 0.02 if ai < len(opus) else float("inf")
        due = min(vt, at)
        if due > now:
            time.sleep(min(due - now, 0.005))
        elif vt <= at:
            nals = units[vi]
            for n, nal in enumerate(nals):
                parts = h264_payloads(nal)
                for m, p in enumerate(parts):
                    last = n == len(nals) - 1 and m == len(parts) - 1
                    udp.send(rtp(96, vseq, vi * 3000, vssrc, p, last))
                    vseq += 1
                    sent += 1
            vi += 1
        else:
            udp.send(rtp(97, aseq, ai * 960, assrc, opus[ai], False))
            aseq += 1
            ai += 1
            sent += 1
        if time.monotonic() >= next_ping:
            # Media ping (PT 250) must come back; the control PING must get 201.
            udp.send(rtp(250, 0, 0, vssrc, b"", True)[:12])
            ctl.send(f"PING {channel}")
            next_ping += 5
        try:
            while True:
                d = udp.recv(2048)
                if len(d) >= 2 and d[1] & 0x7F == 122:
                    pongs += 1
                elif len(d) >= 2 and d[1] == 205:
                    nacks += 1
        except (BlockingIOError, ConnectionRefusedError):
            pass
    ctl.sock.settimeout(2)
    replies = []
    try:
        while True:
            replies.append(ctl.reply())
            if len(replies) >= seconds // 5:
                break
    except Exception:
        pass
    ctl.send("DISCONNECT")
    emit(ok=True, packets=sent, pongs=pongs, nacks=nacks, ping_replies=replies)


if __name__ == "__main__":
    main()
