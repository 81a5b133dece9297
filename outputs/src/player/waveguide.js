// Waveguide's built-in player: the stream list, WHEP playback and WHIP publishing.
//
// Plain JavaScript with no build step; the only third-party code is hls.js, vendored and served
// by the edge at /assets/hls.min.js for the LL-HLS fallback. Every page loads this one file and
// `<body data-page>` picks its entry point. Text from the server (stream names above all) is put
// into the page with textContent only, and into URLs with encodeURIComponent only.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  function setStatus(text, kind = '') {
    const el = $('status');
    el.textContent = text;
    el.dataset.kind = kind;
  }

  const streamUrl = (prefix, name) => prefix + '/' + encodeURIComponent(name);

  class HttpError extends Error {
    constructor(status, body) {
      super(`HTTP ${status}${body ? ': ' + body.slice(0, 200) : ''}`);
      this.status = status;
    }
  }

  // ---- WHIP / WHEP -------------------------------------------------------------------------

  // Resolves when ICE gathering is complete, or after `timeoutMs`. The server is ICE-lite: it
  // learns the browser's address from the browser's connectivity checks, so an offer sent
  // before gathering ends still connects. The wait only makes the offer more complete.
  function gatheringComplete(pc, timeoutMs) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      };
      const check = () => pc.iceGatheringState === 'complete' && done();
      const timer = setTimeout(done, timeoutMs);
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  // One WHIP or WHEP exchange (RFC 9725 / WHEP draft): POST the offer, apply the answer and
  // return the absolute URL of the session resource, which is DELETEd to end the session.
  async function negotiate(pc, url, headers) {
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, 1000);
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...headers },
      body: pc.localDescription.sdp,
    });
    const body = await res.text();
    if (!res.ok) throw new HttpError(res.status, body.trim());
    const location = res.headers.get('Location');
    // Relative to the URL that answered: the orchestrator may have redirected the POST.
    const resource = location ? new URL(location, res.url).href : null;
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    return resource;
  }

  // `keepalive` lets the request outlive the page when it is sent from `pagehide`.
  function endSession(resource, headers = {}) {
    if (!resource) return;
    fetch(resource, { method: 'DELETE', headers, keepalive: true }).catch(() => {});
  }

  // ---- statistics --------------------------------------------------------------------------

  // Turns getStats() into what a person reads. Rates are measured against a baseline that
  // moves at most every 500 ms, so callers sampling at different paces (the stats line every
  // second, a test whenever it likes) do not make each other's rates noisy.
  function statsSampler(pc, type) {
    let base = new Map();
    let baseTime = 0;
    return async () => {
      const report = await pc.getStats();
      const now = performance.now();
      const s = {
        state: pc.connectionState, width: 0, height: 0, fps: 0, videoCodec: '', audioCodec: '',
        bitrateBps: 0, videoBitrateBps: 0, audioBitrateBps: 0, packets: 0, packetsLost: 0,
        framesDecoded: 0, framesDropped: 0,
      };
      const next = new Map();
      report.forEach((r) => {
        if (r.type !== type) return;
        const bytes = (type === 'inbound-rtp' ? r.bytesReceived : r.bytesSent) || 0;
        next.set(r.id, { bytes, t: r.timestamp });
        const prev = base.get(r.id);
        const rate = prev && r.timestamp > prev.t ? ((bytes - prev.bytes) * 8000) / (r.timestamp - prev.t) : 0;
        const codec = (report.get(r.codecId) || {}).mimeType || '';
        s.packets += (type === 'inbound-rtp' ? r.packetsReceived : r.packetsSent) || 0;
        s.packetsLost += r.packetsLost || 0;
        if (r.kind === 'video') {
          s.width = r.frameWidth || 0;
          s.height = r.frameHeight || 0;
          s.fps = r.framesPerSecond || 0;
          s.framesDecoded += r.framesDecoded || 0;
          s.framesDropped += r.framesDropped || 0;
          s.videoCodec = codec.replace(/^video\//, '');
          s.videoBitrateBps += rate;
        } else if (r.kind === 'audio') {
          s.audioCodec = codec.replace(/^audio\//, '');
          s.audioBitrateBps += rate;
        }
      });
      s.bitrateBps = s.videoBitrateBps + s.audioBitrateBps;
      if (now - baseTime >= 500) {
        base = next;
        baseTime = now;
      }
      return s;
    };
  }

  function formatBitrate(bps) {
    if (bps >= 1e6) return (bps / 1e6).toFixed(1) + ' Mbps';
    return Math.round(bps / 1e3) + ' kbps';
  }

  function formatStats(s) {
    const parts = [];
    if (s.width) parts.push(`${s.width}×${s.height}`);
    if (s.fps) parts.push(`${Math.round(s.fps)} fps`);
    parts.push(formatBitrate(s.bitrateBps));
    const codecs = [s.videoCodec, s.audioCodec].filter(Boolean).join(' + ');
    if (codecs) parts.push(codecs);
    return parts.join(' · ');
  }

  // Refreshes the stats line every second while `session.sample` is set.
  function showStats(session) {
    setInterval(async () => {
      const line = $('stats');
      if (!session.sample) {
        line.textContent = '';
        return;
      }
      try {
        line.textContent = formatStats(await session.sample());
      } catch {
        line.textContent = ''; // getStats() on a closed connection
      }
    }, 1000);
  }

  function exposeForTests(session) {
    window.waveguide = {
      get pc() { return session.pc; },
      get resource() { return session.resource; },
      // 'webrtc' or 'hls': what plays now.
      get mode() { return session.mode; },
      // The hls.js instance while LL-HLS plays (its `latency` is seconds behind live).
      get hls() { return session.hls; },
      stats: () => (session.sample ? session.sample() : Promise.resolve(null)),
    };
  }

  // ---- GET / : the stream list --------------------------------------------------------------

  function formatUptime(secs) {
    const s = Math.max(0, Math.floor(Number(secs) || 0));
    const h = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(h ? 2 : 1, '0');
    const ss = String(s % 60).padStart(2, '0');
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function describeStream(s) {
    const tracks = (Array.isArray(s.tracks) ? s.tracks : []).map((t) => {
      const rate = Number(t.bitrate_bps) > 0 ? ' ' + formatBitrate(Number(t.bitrate_bps)) : '';
      return String(t.codec || t.kind || '?') + rate;
    });
    const viewers = Number(s.viewers) || 0;
    return [
      String(s.protocol || '').toUpperCase(),
      tracks.join(', '),
      `${viewers} ${viewers === 1 ? 'viewer' : 'viewers'}`,
      'up ' + formatUptime(s.uptime_secs),
    ].filter(Boolean).join(' · ');
  }

  function renderStreams(streams) {
    const items = streams
      .filter((s) => s && typeof s.name === 'string')
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((s) => {
        const link = document.createElement('a');
        link.href = streamUrl('/watch', s.name);
        link.textContent = s.name;
        const meta = document.createElement('span');
        meta.className = 'meta';
        meta.textContent = describeStream(s);
        const li = document.createElement('li');
        li.append(link, meta);
        return li;
      });
    $('streams').replaceChildren(...items);
    $('empty').hidden = items.length > 0;
    setStatus(items.length === 1 ? '1 stream live' : `${items.length} streams live`);
  }

  function indexPage() {
    $('whip-url').textContent = location.origin + '/whip';
    $('rtmp-url').textContent = `rtmp://${location.hostname}/live/<stream key>`;
    const refresh = async () => {
      // A background tab does not poll; it refreshes as soon as it is shown again.
      if (!document.hidden) {
        try {
          const res = await fetch('/api/v1/streams', { cache: 'no-store', headers: { Accept: 'application/json' } });
          if (!res.ok) throw new HttpError(res.status, '');
          const streams = await res.json();
          if (!Array.isArray(streams)) throw new Error('unexpected answer');
          renderStreams(streams);
        } catch (err) {
          setStatus('Could not load the stream list (' + err.message + '). Retrying…', 'error');
        }
      }
      setTimeout(refresh, 2000);
    };
    refresh();
  }

  // ---- GET /watch/{stream} : WHEP playback --------------------------------------------------

  // Plays with sound when the browser allows it; otherwise plays muted and offers a button,
  // since most browsers block unmuted autoplay until the person has interacted with the site.
  async function startPlayback(video) {
    const unmute = $('unmute');
    try {
      await video.play();
    } catch (err) {
      if (err.name !== 'NotAllowedError') return; // AbortError: a newer source replaced this one
      video.muted = true;
      unmute.hidden = false;
      await video.play().catch(() => {});
    }
  }

  // The base URL of WHEP POSTs (`GET /player.json`): the cluster's orchestrator, or '' for
  // this node. Asked once; if the node is gone by then, this node it is.
  let whepBasePromise = null;
  function whepBase() {
    if (!whepBasePromise) {
      whepBasePromise = fetch('/player.json', { cache: 'no-store' })
        .then((r) => (r.ok ? r.json() : {}))
        .then((c) => (typeof c.whep_base === 'string' ? c.whep_base.replace(/\/+$/, '') : ''))
        .catch(() => '');
    }
    return whepBasePromise;
  }

  // Seconds without a single packet before a connected viewer re-joins.
  const STALL_SECS = 4;
  // Seconds after the first WHEP answer without a connection (no UDP here) before LL-HLS.
  const FALLBACK_SECS = 4;

  // The stream's REST notices on this node ([] when it does not hold the stream).
  const streamNotices = (name) => fetch(streamUrl('/api/v1/streams', name), { cache: 'no-store' })
    .then((r) => (r.ok ? r.json() : {}))
    .then((s) => (Array.isArray(s.notices) ? s.notices.map(String) : []))
    .catch(() => []);

  // Plays `/hls/{name}/index.m3u8` in `video` with hls.js (or natively where the browser plays
  // HLS itself, as Safari does). Reloads after a fatal error.
  function playHls(video, name, session) {
    const url = streamUrl('/hls', name) + '/index.m3u8';
    session.mode = 'hls';
    document.body.dataset.playback = 'hls';
    $('mode').textContent = 'LL-HLS';
    video.srcObject = null;
    const Hls = window.Hls;
    if (!Hls || !Hls.isSupported()) {
      if (video.canPlayType('application/vnd.apple.mpegurl')) {
        video.src = url;
        setStatus('Live (HLS)', 'live');
        startPlayback(video);
      } else {
        setStatus('This browser plays neither WebRTC nor HLS.', 'error');
      }
      return;
    }
    const start = () => {
      // No blob: workers (CSP). After a stall, catch up (≤ 1.15x) rather than add 1 s of latency.
      const hls = new Hls({ lowLatencyMode: true, enableWorker: false, backBufferLength: 30,
        liveSyncOnStallIncrease: 0.1, maxLiveSyncPlaybackRate: 1.15 });
      session.hls = hls;
      hls.on(Hls.Events.MANIFEST_PARSED, () => {
        setStatus('Live (HLS)', 'live');
        startPlayback(video);
      });
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (!data.fatal || session.hls !== hls) return;
        hls.destroy();
        session.hls = null;
        setStatus('HLS: ' + (data.details || 'error') + '. Retrying…', 'error');
        setTimeout(start, 2000);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    };
    setStatus('Connecting (HLS)…');
    start();
  }

  function watchPage() {
    const prefix = '/watch/';
    const raw = location.pathname.slice(prefix.length);
    let name = raw;
    try {
      name = decodeURIComponent(raw);
    } catch {
      // Not valid percent-encoding: the raw segment is the best guess at the name.
    }
    document.title = name + ' — Waveguide';
    $('name').textContent = name;
    const video = $('video');
    const unmute = $('unmute');
    unmute.addEventListener('click', () => {
      video.muted = false;
      unmute.hidden = true;
      video.play().catch(() => {});
    });
    video.addEventListener('volumechange', () => {
      if (!video.muted) unmute.hidden = true;
    });

    const session = { pc: null, resource: null, sample: null, mode: 'webrtc', hls: null };
    let retryTimer = null;
    let backoffMs = 1000;
    // noHls: the notice saying why the stream cannot play over HLS (VP8), else null.
    let noHls = null, answered = false, connectedOnce = false;
    exposeForTests(session);
    showStats(session);

    const close = () => {
      clearTimeout(retryTimer);
      endSession(session.resource);
      if (session.pc) session.pc.close();
      Object.assign(session, { pc: null, resource: null, sample: null });
    };

    const retry = (text, delayMs) => {
      close();
      if (session.mode !== 'webrtc') return;
      setStatus(text, 'error');
      retryTimer = setTimeout(connect, delayMs);
    };

    const connect = async () => {
      close();
      const pc = new RTCPeerConnection();
      session.pc = pc;
      session.sample = statsSampler(pc, 'inbound-rtp');
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      const media = new MediaStream();
      pc.addEventListener('track', (e) => {
        if (session.pc !== pc) return;
        media.addTrack(e.track);
        if (video.srcObject !== media) {
          video.srcObject = media;
          startPlayback(video);
        }
      });
      let disconnectTimer = null;
      pc.addEventListener('connectionstatechange', () => {
        if (session.pc !== pc) return;
        clearTimeout(disconnectTimer);
        switch (pc.connectionState) {
          case 'connected':
            connectedOnce = true;
            backoffMs = 1000;
            setStatus('Live', 'live');
            break;
          case 'disconnected':
            // ICE often recovers from a short outage by itself; give it a few seconds, not more: an
            // edge that died will not come back, and the orchestrator has another one.
            setStatus('Connection interrupted…', 'error');
            disconnectTimer = setTimeout(() => {
              if (session.pc === pc && pc.connectionState === 'disconnected') retry('Reconnecting…', 0);
            }, 3000);
            break;
          case 'failed':
          case 'closed':
            retry('Connection lost. Reconnecting…', 1000);
            break;
        }
      });
      setStatus('Connecting…');
      try {
        // Through the orchestrator when the node is in a cluster: a viewer whose edge goes
        // away comes back on another one.
        const base = await whepBase();
        const resource = await negotiate(pc, base + streamUrl('/whep', name), {});
        if (session.pc !== pc) {
          endSession(resource); // closed while the POST was in flight
          return;
        }
        session.resource = resource;
        if (!answered) {
          answered = true;
          setTimeout(() => {
            if (connectedOnce || session.mode !== 'webrtc') return;
            if (noHls) setStatus('WebRTC cannot connect from this network, and ' + noHls, 'error');
            else fallBack();
          }, FALLBACK_SECS * 1000);
        }
      } catch (err) {
        if (session.pc !== pc) return;
        if (err.status === 404) {
          retry('This stream is not live. Waiting for it to start…', 3000);
        } else if (err.status === 401 || err.status === 403) {
          close();
          setStatus('Not allowed to watch this stream (' + err.message + ').', 'error');
        } else {
          retry('Could not connect (' + err.message + '). Retrying…', backoffMs);
          backoffMs = Math.min(backoffMs * 2, 15000);
        }
      }
    };

    // A session that stops receiving while ICE still looks fine (its edge ended it, or died a
    // moment ago) is re-joined through the orchestrator after a few quiet seconds, long before
    // ICE would call it failed.
    let quietSecs = 0;
    let lastPackets = -1;
    const stallCheck = setInterval(async () => {
      const pc = session.pc;
      if (!pc || pc.connectionState !== 'connected' || !session.sample) {
        quietSecs = 0;
        lastPackets = -1;
        return;
      }
      let packets = lastPackets;
      try {
        packets = (await session.sample()).packets;
      } catch {
        // getStats() on a connection closed meanwhile: the state handler takes over.
      }
      quietSecs = packets === lastPackets ? quietSecs + 1 : 0;
      lastPackets = packets;
      if (quietSecs >= STALL_SECS && session.pc === pc) {
        quietSecs = 0;
        lastPackets = -1;
        retry('No media. Reconnecting…', 0);
      }
    }, 1000);

    // LL-HLS from the start with `?hls=1` or for a stream with B-frames (WebRTC viewers get its
    // I/P frames only; MSE reorders); else WebRTC, falling back to LL-HLS if it cannot connect.
    const fallBack = () => {
      if (session.mode === 'hls') return;
      clearInterval(stallCheck);
      close();
      session.mode = 'hls';
      playHls(video, name, session);
    };
    $('mode').textContent = 'WebRTC';
    document.body.dataset.playback = 'webrtc';
    window.addEventListener('pagehide', close);
    window.addEventListener('pageshow', (e) => e.persisted && session.mode === 'webrtc' && connect());
    streamNotices(name).then((notices) => {
      noHls = notices.find((n) => n.startsWith('no HLS rendition')) || null;
      const hls = new URLSearchParams(location.search).get('hls') === '1';
      if (hls && noHls) {
        setStatus(noHls[0].toUpperCase() + noHls.slice(1), 'error');
      } else if (hls || (!noHls && notices.some((n) => n.includes('B-frames')))) {
        fallBack();
      } else {
        connect();
      }
    });
  }

  // ---- GET /publish : WHIP from the camera --------------------------------------------------

  // The edge forwards video untouched, and OBS, ffmpeg and FTL publishers send H.264, so H.264
  // is what every viewer already decodes (in hardware, and on Safari). Preferred, not forced:
  // the server still answers with whichever offered codec it supports.
  function preferH264(transceiver) {
    if (!transceiver.setCodecPreferences || !RTCRtpSender.getCapabilities) return;
    const caps = RTCRtpSender.getCapabilities('video');
    if (!caps) return;
    const rank = (c) => {
      if (c.mimeType.toLowerCase() !== 'video/h264') return 2;
      return /packetization-mode=1/.test(c.sdpFmtpLine || '') ? 0 : 1;
    };
    transceiver.setCodecPreferences([...caps.codecs].sort((a, b) => rank(a) - rank(b)));
  }

  function publishPage() {
    const form = $('form');
    const nameInput = $('stream-name');
    const keyInput = $('stream-key');
    const startButton = $('start');
    const stopButton = $('stop');
    const preview = $('preview');
    const session = { pc: null, resource: null, sample: null, media: null, headers: {} };
    exposeForTests(session);
    showStats(session);
    nameInput.value = new URLSearchParams(location.search).get('stream') || '';

    const setLive = (live) => {
      startButton.disabled = live;
      stopButton.disabled = !live;
      nameInput.disabled = live;
      keyInput.disabled = live;
    };

    const stop = () => {
      endSession(session.resource, session.headers);
      if (session.pc) session.pc.close();
      if (session.media) session.media.getTracks().forEach((t) => t.stop());
      preview.srcObject = null;
      Object.assign(session, { pc: null, resource: null, sample: null, media: null, headers: {} });
      $('live').hidden = true;
      setLive(false);
    };

    const start = async () => {
      const name = nameInput.value.trim();
      const key = keyInput.value.trim();
      setLive(true);
      if (!navigator.mediaDevices) {
        setStatus('This browser offers the camera only to https:// pages and to localhost.', 'error');
        setLive(false);
        return;
      }
      setStatus('Asking for the camera and microphone…');
      try {
        session.media = await navigator.mediaDevices.getUserMedia({
          video: { width: 1280, height: 720 },
          audio: true,
        });
      } catch (err) {
        setStatus('No camera or microphone: ' + err.message, 'error');
        stop();
        return;
      }
      preview.srcObject = session.media;

      const pc = new RTCPeerConnection();
      session.pc = pc;
      session.sample = statsSampler(pc, 'outbound-rtp');
      session.headers = key ? { Authorization: 'Bearer ' + key } : {};
      for (const track of session.media.getTracks()) {
        const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [session.media] });
        if (track.kind === 'video') preferH264(transceiver);
      }
      pc.addEventListener('connectionstatechange', () => {
        if (session.pc !== pc) return;
        if (pc.connectionState === 'connected') setStatus('Live', 'live');
        if (pc.connectionState === 'failed') {
          stop();
          setStatus('The connection to the server failed.', 'error');
        }
      });

      setStatus('Connecting…');
      try {
        const resource = await negotiate(pc, name ? streamUrl('/whip', name) : '/whip', session.headers);
        if (session.pc !== pc) {
          endSession(resource, session.headers);
          return;
        }
        session.resource = resource;
      } catch (err) {
        if (session.pc !== pc) return;
        stop();
        const why = err.status === 401 || err.status === 403 ? 'the stream key was refused' : err.message;
        setStatus('Could not go live: ' + why + '.', 'error');
        return;
      }
      // Without a name the server names the stream after the key; the list shows it.
      const link = $('watch-link');
      link.href = name ? streamUrl('/watch', name) : '/';
      link.textContent = name ? new URL(link.href, location.href).href : 'the stream list';
      $('live').hidden = false;
    };

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      start();
    });
    stopButton.addEventListener('click', () => {
      stop();
      setStatus('Not live.');
    });
    window.addEventListener('pagehide', stop);
  }

  const pages = { index: indexPage, watch: watchPage, publish: publishPage };
  const page = pages[document.body.dataset.page];
  if (page) page();
})();
