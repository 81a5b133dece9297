// In-page WHIP/WHEP client used by the e2e tests (driven through driver.mjs).
//
// Every peer connection gets an id; the driver calls window.wg.<fn>(args) and gets plain JSON
// back. Sessions are kept in `sessions` so stats and DELETE can find them later.
'use strict';

const sessions = new Map();
let nextId = 1;

function absolute(location, base) {
  return location ? new URL(location, base).href : null;
}

function waitGatheringComplete(pc, timeoutMs) {
  // WHIP/WHEP without trickle: send the offer with the host candidates in it. Chromium finishes
  // host gathering quickly; the timeout only bounds a stuck gatherer (the edge is ICE-lite and
  // learns the address from our checks anyway).
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    };
    const t = setTimeout(resolve, timeoutMs);
    pc.addEventListener('icegatheringstatechange', done);
  });
}

function preferCodec(transceiver, kind, codec) {
  if (!codec) return;
  const caps = RTCRtpReceiver.getCapabilities(kind).codecs;
  const want = `${kind}/${codec}`.toLowerCase();
  const chosen = caps.filter((c) => c.mimeType.toLowerCase() === want);
  if (chosen.length === 0) throw new Error(`browser has no codec ${want}`);
  const rest = caps.filter((c) => c.mimeType.toLowerCase() === `${kind}/rtx`);
  transceiver.setCodecPreferences(chosen.concat(rest));
}

async function signal(pc, url, token) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await waitGatheringComplete(pc, 3000);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
  const body = await resp.text();
  const result = {
    status: resp.status,
    location: absolute(resp.headers.get('location'), resp.url || url),
    etag: resp.headers.get('etag'),
    link: resp.headers.get('link'),
    contentType: resp.headers.get('content-type'),
  };
  if (resp.status === 201) {
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
  } else {
    result.body = body;
  }
  return result;
}

function mediaElement(id, stream, muted) {
  const el = document.createElement('video');
  el.id = `media-${id}`;
  el.autoplay = true;
  el.playsInline = true;
  el.muted = muted;
  el.width = 160;
  el.height = 120;
  el.srcObject = stream;
  document.getElementById('media').appendChild(el);
  // --autoplay-policy=no-user-gesture-required lets an unmuted element play; audio energy
  // (totalAudioEnergy) is only measured while the audio track is actually played out.
  el.play().catch((e) => console.warn(`play() on ${el.id}: ${e}`));
  return el;
}

async function publish({ url, token, width = 640, height = 480, fps = 30, audio = true, videoCodec }) {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: { exact: width }, height: { exact: height }, frameRate: { ideal: fps } },
    audio,
  });
  const pc = new RTCPeerConnection();
  const id = nextId++;
  for (const track of stream.getTracks()) {
    if (track.kind === 'video') track.contentHint = 'detail';
    const tr = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    if (track.kind === 'video') {
      preferCodec(tr, 'video', videoCodec);
      // Keep the published size fixed: the viewers assert frameWidth/frameHeight, and on a
      // busy 2-core machine the default 'balanced' preference would scale the picture down.
      const params = tr.sender.getParameters();
      params.degradationPreference = 'maintain-resolution';
      await tr.sender.setParameters(params).catch((e) => console.warn(`setParameters: ${e}`));
    }
  }
  const result = await signal(pc, url, token);
  sessions.set(id, { id, pc, stream, role: 'publish', location: result.location });
  if (result.status !== 201) {
    pc.close();
    stream.getTracks().forEach((t) => t.stop());
  }
  return { id, ...result };
}

async function watchOne({ url, token, videoCodec, muted = false }) {
  const pc = new RTCPeerConnection();
  const id = nextId++;
  const vt = pc.addTransceiver('video', { direction: 'recvonly' });
  preferCodec(vt, 'video', videoCodec);
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new MediaStream();
  let element = null;
  pc.addEventListener('track', (ev) => {
    stream.addTrack(ev.track);
    if (!element) element = mediaElement(id, stream, muted);
  });
  const result = await signal(pc, url, token);
  sessions.set(id, { id, pc, stream, role: 'watch', location: result.location });
  if (result.status !== 201) pc.close();
  return { id, ...result };
}

async function watch({ url, token, count = 1, videoCodec, muted = false }) {
  // Sequential on purpose: N offers at once would make N ICE agents race on a 2-core machine.
  const out = [];
  for (let i = 0; i < count; i++) out.push(await watchOne({ url, token, videoCodec, muted }));
  return out;
}

async function waitConnected({ ids, timeoutMs = 15000 }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = ids.map((id) => sessions.get(id)?.pc.connectionState ?? 'missing');
    if (states.every((s) => s === 'connected')) return states;
    if (states.some((s) => s === 'failed' || s === 'closed' || s === 'missing')) {
      throw new Error(`peer connection states: ${JSON.stringify(states)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`not connected after ${timeoutMs} ms: ${JSON.stringify(states)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function statsOf(id) {
  const s = sessions.get(id);
  if (!s) throw new Error(`no session ${id}`);
  const report = await s.pc.getStats();
  const out = {
    id,
    role: s.role,
    connectionState: s.pc.connectionState,
    iceConnectionState: s.pc.iceConnectionState,
    video: null,
    audio: null,
  };
  const codecs = new Map();
  report.forEach((r) => { if (r.type === 'codec') codecs.set(r.id, r.mimeType); });
  report.forEach((r) => {
    if (r.type === 'inbound-rtp') {
      const common = {
        codec: codecs.get(r.codecId) ?? null,
        packetsReceived: r.packetsReceived ?? 0,
        packetsLost: r.packetsLost ?? 0,
        bytesReceived: r.bytesReceived ?? 0,
        nackCount: r.nackCount ?? 0,
      };
      if (r.kind === 'video') {
        out.video = {
          ...common,
          framesDecoded: r.framesDecoded ?? 0,
          framesReceived: r.framesReceived ?? 0,
          framesDropped: r.framesDropped ?? 0,
          keyFramesDecoded: r.keyFramesDecoded ?? 0,
          frameWidth: r.frameWidth ?? 0,
          frameHeight: r.frameHeight ?? 0,
          freezeCount: r.freezeCount ?? 0,
          pliCount: r.pliCount ?? 0,
        };
      } else if (r.kind === 'audio') {
        out.audio = {
          ...common,
          totalAudioEnergy: r.totalAudioEnergy ?? 0,
          totalSamplesReceived: r.totalSamplesReceived ?? 0,
          concealedSamples: r.concealedSamples ?? 0,
        };
      }
    } else if (r.type === 'outbound-rtp') {
      const key = r.kind === 'video' ? 'outVideo' : 'outAudio';
      out[key] = {
        codec: codecs.get(r.codecId) ?? null,
        packetsSent: r.packetsSent ?? 0,
        framesEncoded: r.framesEncoded ?? 0,
        frameWidth: r.frameWidth ?? 0,
        frameHeight: r.frameHeight ?? 0,
      };
    }
  });
  return out;
}

async function stats({ ids }) {
  const list = ids ?? [...sessions.keys()];
  return Promise.all(list.map(statsOf));
}

async function remove({ id, close = true }) {
  const s = sessions.get(id);
  if (!s) throw new Error(`no session ${id}`);
  let status = null;
  if (s.location) {
    const resp = await fetch(s.location, { method: 'DELETE' });
    status = resp.status;
  }
  if (close) {
    s.pc.close();
    s.stream.getTracks().forEach((t) => t.stop());
  }
  return { id, status };
}

async function fetchJson({ url }) {
  const resp = await fetch(url);
  return { status: resp.status, body: await resp.text() };
}

// Loopback self-test with no server: a fake-camera sender and a receiver in this page.
async function loopback({ width = 640, height = 480, seconds = 10 }) {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: { exact: width }, height: { exact: height } },
    audio: true,
  });
  const a = new RTCPeerConnection();
  const b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const id = nextId++;
  const remote = new MediaStream();
  let element = null;
  b.ontrack = (e) => {
    remote.addTrack(e.track);
    if (!element) element = mediaElement(id, remote, false);
  };
  stream.getTracks().forEach((t) => a.addTransceiver(t, { direction: 'sendonly' }));
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  sessions.set(id, { id, pc: b, stream, role: 'loopback', location: null });
  const deadline = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < deadline) {
    last = await statsOf(id);
    if (last.video?.framesDecoded > 10 && last.audio?.totalAudioEnergy > 0) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  a.close();
  b.close();
  return last;
}

window.wg = { publish, watch, waitConnected, stats, remove, fetchJson, loopback };
