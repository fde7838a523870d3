// kitbash dashboard: a plain Centrifugo client of the bridge (the vendored SDK), no second API.
// Channels: fleet (daemons, streams, archive, the hottest queries), physics, changes,
// reflex:crossings, reflex:hat (docs/PROTOCOL.md).
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const SDK = globalThis.Centrifuge && (globalThis.Centrifuge.Centrifuge || globalThis.Centrifuge);
  const HISTORY_MS = 5 * 60 * 1000;
  const PILLARS = [
    ['mass', ''], ['momentum', ''], ['friction', 'trades/vol'],
    ['entropy', 'bits'], ['nash_dist', 'σ'], ['alpha_coefficient', 'α'],
  ];
  const state = {
    conn: 'connecting', gapAt: 0, fleet: null, prevStreams: null, rates: {},
    symbols: new Map(), selected: null, crossings: [], hat: null, hatLog: [],
    docs: new Map(), selectedDoc: null, updates: 0, resonance: new Map(), fleetAt: 0,
  };
  globalThis.kitbash = state; // read by the browser test

  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
  const num = (x, d = 3) => (typeof x === 'number' && isFinite(x) ? x.toFixed(d) : '—');
  const ago = (ms) => (ms < 1000 ? `${Math.max(0, ms | 0)} ms` : ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 60000).toFixed(1)} min`);
  const regimeClass = (r) => (r === 'Gaussian' ? 'ok' : r === 'Critical' ? 'bad' : 'warn');

  let scheduled = false;
  function render() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; draw(); });
  }

  function setConn(s) { state.conn = s; render(); }

  function drawConn() {
    const el = $('conn');
    let text = state.conn, cls = 'warn';
    if (state.conn === 'connected') {
      cls = 'ok';
      if (Date.now() - state.gapAt < 10000) { text = 'recovered with a gap: state reloaded'; cls = 'warn'; }
    } else if (state.conn === 'disconnected') cls = 'bad';
    el.textContent = text;
    el.className = 'badge ' + cls;
  }

  function drawFleet() {
    const f = state.fleet;
    if (!f) return;
    const now = Date.now();
    const age = now - f.at_ms;
    // Alive as the bridge judged it when it took the view (three heartbeats); a view that
    // stopped coming makes every row "unknown", not dead: the page cannot tell.
    const stale = age > 3 * (f.period_ms || 1000) + 1000;
    $('fleetage').textContent = stale ? `fleet view ${ago(age)} old` : '';
    $('daemons').innerHTML = f.daemons.map((d) => {
      const beat = d.last_beat_ms_ago + age;
      const st = stale ? 'unknown' : !d.alive ? 'not alive' : d.ready ? 'ready' : 'not ready';
      const cls = stale ? 'warn' : !d.alive ? 'bad' : d.ready ? '' : 'warn';
      return `<tr class="${cls}" data-kind="${esc(d.kind)}" data-state="${st}"><td>${esc(d.kind)}</td><td title="${esc(d.instance)}">${esc(d.instance)}</td><td>${esc(d.host || '')}</td><td>${st}</td><td>${ago(beat)} ago</td><td>${esc(d.admin || '')}</td></tr>`;
    }).join('');
    // Partitioned streams (ticks:0…7, entity:0…7) are one row: their sums, the partitions in
    // the row's title (they are leased, not read by groups; `kitbash status` has each).
    const rows = [];
    const parts = new Map();
    for (const s of f.streams) {
      const m = /^(.+):(\d+)$/.exec(s.stream);
      if (!m) { rows.push({ name: s.stream, list: [s] }); continue; }
      if (!parts.has(m[1])) { parts.set(m[1], { name: m[1], list: [] }); rows.push(parts.get(m[1])); }
      parts.get(m[1]).list.push(s);
    }
    $('streams').innerHTML = rows.map((r) => {
      const sum = (k) => r.list.reduce((a, s) => a + (s[k] || 0), 0);
      const groups = r.list.flatMap((s) => s.groups).map((g) => `${esc(g.name)} ${g.lag == null ? '?' : g.lag} / ${g.pending}`).join(', ');
      const rates = r.list.map((s) => state.rates[s.stream]).filter((x) => x != null);
      const rate = rates.length ? rates.reduce((a, b) => a + b, 0) : null;
      const alarm = r.list.some((s) => s.dead_letter_alarm);
      const full = r.list.filter((s) => s.at_bound);
      const len = `${sum('length')}${full.length ? ` <span class="badge warn" title="${esc(full.map((s) => `${s.stream} at its bound of ${s.bound} entries: older entries are trimmed`).join('; '))}">at bound</span>` : ''}`;
      const label = r.list.length > 1 ? `${esc(r.name)} <span class="muted">×${r.list.length} partitions</span>` : esc(r.name);
      const title = r.list.length > 1 ? r.list.map((s) => `${s.stream}: ${s.length}`).join(', ') : '';
      return `<tr class="${alarm ? 'warn' : ''}" data-stream="${esc(r.name)}" title="${esc(title)}"><td>${label}</td><td data-length>${len}</td><td>${rate == null ? '—' : rate.toFixed(0) + ' /s'}</td><td>${groups || '<span class="muted">none</span>'}</td><td>${sum('dead_letters')}${alarm ? ' ⚠' : ''}</td></tr>`;
    }).join('');
    const r = f.reflex || {};
    $('reflexstats').textContent = `ghost activations ${r.ghost_activations ?? '—'} · lookup p95 ${r.lookup_p95_ms ?? '—'} ms · p99 ${r.lookup_p99_ms ?? '—'} ms · queries ${r.queries ?? '—'}`;
    drawArchive(f);
  }

  const bytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : n < 1073741824 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1073741824).toFixed(2)} GiB`);

  // The archive's progress: the figures its instances report (files, rows, bytes, newest
  // archived id per stream) and the `archive` group of each stream (what is left to archive).
  function drawArchive(f) {
    const per = new Map();
    for (const d of f.daemons) {
      if (d.kind !== 'archive' || !d.alive) continue;
      for (const [k, v] of Object.entries(d.stats || {})) {
        const dot = k.indexOf('.');
        if (dot < 0) continue;
        const stream = k.slice(dot + 1);
        if (!per.has(stream)) per.set(stream, {});
        per.get(stream)[k.slice(0, dot)] = v;
      }
    }
    for (const s of f.streams) {
      const g = s.groups.find((x) => x.name === 'archive');
      if (!g) continue;
      if (!per.has(s.stream)) per.set(s.stream, {});
      per.get(s.stream).group = g;
    }
    $('archivebox').hidden = per.size === 0;
    const now = Date.now();
    $('archive').innerHTML = [...per.entries()].sort().map(([stream, a]) => {
      const g = a.group;
      const behind = g && ((g.lag ?? 0) + g.pending);
      const cls = g && g.lag == null ? 'warn' : '';
      return `<tr class="${cls}" data-archive="${esc(stream)}" data-rows="${a.rows ?? ''}"><td>${esc(stream)}</td><td>${a.files ?? '—'}</td><td>${a.rows ?? '—'}</td><td>${a.bytes == null ? '—' : bytes(a.bytes)}</td><td>${a.archived_ms ? ago(now - a.archived_ms) + ' ago' : '—'}</td><td>${g ? `${g.lag == null ? '?' : g.lag} / ${g.pending}${behind === 0 ? ' (caught up)' : ''}` : '<span class="muted">no group</span>'}</td></tr>`;
    }).join('');
  }

  // Resonance of each hot query over the last minutes, one point per fleet view.
  function onHot(r, at) {
    for (const q of r.hot || []) {
      let h = state.resonance.get(q.id);
      if (!h) { h = []; state.resonance.set(q.id, h); }
      if (!h.length || h[h.length - 1].v !== q.resonance || at - h[h.length - 1].t > 5000) h.push({ t: at, v: q.resonance });
      while (h.length && (h[0].t < at - HISTORY_MS || h.length > 600)) h.shift();
    }
    if (state.resonance.size > 200) {
      const keep = new Set((r.hot || []).map((q) => q.id));
      for (const k of state.resonance.keys()) if (!keep.has(k)) state.resonance.delete(k);
    }
  }

  function drawHot() {
    const f = state.fleet;
    const r = f && f.reflex;
    if (!r) return;
    const next = r.next_cycle_at_ms;
    const f0 = (r.decay_period_ms / 1000).toFixed(r.decay_period_ms < 10000 ? 1 : 0);
    $('decayclock').textContent = `· decay cycle ${r.cycle}, every ${f0} s${next ? ` · next in ${ago(Math.max(0, next - (f.at_ms + (Date.now() - state.fleetAt))))}` : ''}`;
    $('hot').innerHTML = (r.hot || []).map((q) => {
      const hot = q.resonance > r.threshold;
      const ghost = q.ghost.length ? q.ghost.map((g) => `<span class="badge">${g}</span>`).join(' ') : '<span class="muted">none</span>';
      return `<tr data-hot="${esc(q.id)}" data-resonance="${q.resonance}"><td title="${esc(q.id)}">${esc(q.text ?? q.id)}</td><td>${num(q.resonance)}<span class="bar" style="width:${Math.round(Math.min(1, q.resonance) * 60)}px" aria-hidden="true"></span></td><td class="hide-narrow"><canvas class="spark" data-spark="${esc(q.id)}" role="img" aria-label="resonance of ${esc(q.text ?? q.id)} over the last minutes"></canvas></td><td>${hot ? `<span class="badge ok">above ${r.threshold}</span>` : `<span class="badge">below ${r.threshold}</span>`}</td><td>${ghost}</td></tr>`;
    }).join('');
    for (const c of document.querySelectorAll('canvas[data-spark]')) {
      const h = state.resonance.get(c.dataset.spark) || [];
      drawChart(c, h.map((p) => ({ t: p.t, v: p.v })), 'v');
    }
  }

  function drawChart(canvas, points, key) {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, w, h);
    const vals = points.map((p) => p[key]).filter((v) => typeof v === 'number' && isFinite(v));
    if (vals.length < 2) return;
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (hi === lo) { hi += 1; lo -= 1; }
    const t0 = points[0].t, t1 = points[points.length - 1].t || t0 + 1;
    ctx.strokeStyle = '#5aa9ff';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let first = true;
    for (const p of points) {
      const v = p[key];
      if (typeof v !== 'number' || !isFinite(v)) continue;
      const x = ((p.t - t0) / Math.max(1, t1 - t0)) * (w - 2) + 1;
      const y = h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
      if (first) { ctx.moveTo(x, y); first = false; } else ctx.lineTo(x, y);
    }
    ctx.stroke();
  }

  function drawPhysics() {
    const sel = $('symbol');
    const names = [...state.symbols.keys()].sort();
    if (sel.options.length !== names.length) {
      const cur = state.selected;
      sel.innerHTML = names.map((n) => `<option${n === cur ? ' selected' : ''}>${esc(n)}</option>`).join('');
    }
    if (!state.selected && names.length) state.selected = names.includes('SPY') ? 'SPY' : names[0];
    if (sel.value !== state.selected && state.selected) sel.value = state.selected;
    const s = state.symbols.get(state.selected);
    const charts = $('charts');
    if (!charts.children.length) {
      charts.innerHTML = PILLARS.map(([k, u]) => `<div class="chart"><div class="label"><span>${k}${u ? ' (' + u + ')' : ''}</span><span data-value="${k}">—</span></div><canvas data-key="${k}" role="img" aria-label="${k} over the last minutes"></canvas></div>`).join('');
    }
    if (s) {
      const v = s.latest.vector;
      $('regime').textContent = v.regime;
      $('regime').className = 'badge ' + regimeClass(v.regime);
      $('price').textContent = `price ${num(s.latest.price, 2)} · entry ${s.latest.id}`;
      for (const c of charts.querySelectorAll('canvas')) drawChart(c, s.history, c.dataset.key);
      for (const el of charts.querySelectorAll('[data-value]')) el.textContent = num(v[el.dataset.value], 4);
    }
    drawSymbolTable();
  }

  const ROW = 22;
  function drawSymbolTable() {
    const box = $('symtable');
    const f = $('filter').value.trim().toUpperCase();
    const all = [...state.symbols.values()].filter((s) => !f || s.latest.symbol.toUpperCase().includes(f))
      .sort((a, b) => (a.latest.symbol < b.latest.symbol ? -1 : 1));
    $('symcount').textContent = `${all.length} symbols`;
    // Only the rows in view are drawn (1,000 symbols stay cheap); spacers keep the scroll height.
    const first = Math.max(0, Math.floor(box.scrollTop / ROW) - 5);
    const count = Math.ceil(box.clientHeight / ROW) + 10;
    const rows = all.slice(first, first + count).map((s) => {
      const r = s.latest, v = r.vector;
      return `<tr tabindex="0" data-symbol="${esc(r.symbol)}" data-alpha="${v.alpha_coefficient}" class="${r.symbol === state.selected ? 'sel' : ''}"><td>${esc(r.symbol)}</td><td>${num(r.price, 2)}</td><td>${num(v.mass)}</td><td>${num(v.momentum)}</td><td>${num(v.friction)}</td><td>${num(v.entropy)}</td><td>${num(v.nash_dist)}</td><td>${num(v.alpha_coefficient)}</td><td><span class="badge ${regimeClass(v.regime)}">${esc(v.regime)}</span></td></tr>`;
    });
    const top = `<tr style="height:${first * ROW}px" aria-hidden="true"></tr>`;
    const bottom = `<tr style="height:${Math.max(0, all.length - first - count) * ROW}px" aria-hidden="true"></tr>`;
    $('symbols').innerHTML = top + rows.join('') + bottom;
  }

  function drawReflex() {
    $('hat').textContent = state.hat ? state.hat.hat || 'none' : '—';
    $('hatlog').textContent = state.hatLog.slice(-3).map((h) => `${h.from || 'none'} → ${h.to || 'none'} at ${new Date(h.at).toLocaleTimeString()}`).join(' · ');
    const now = Date.now();
    $('crossings').innerHTML = state.crossings.slice(-15).reverse().map((c) => `<tr><td title="${esc(c.hash)}">${esc(c.text)}</td><td>${num(c.resonance)}</td><td>${c.cycle}</td><td>${ago(now - c.at)}</td></tr>`).join('');
  }

  function diff(a, b) {
    if (b == null) return '(deleted)';
    if (a == null || typeof a !== 'object' || typeof b !== 'object') return JSON.stringify(b, null, 2);
    const out = [];
    for (const k of Object.keys(b)) {
      if (!(k in a)) out.push(`+ ${k}: ${JSON.stringify(b[k])}`);
      else if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push(`~ ${k}: ${JSON.stringify(a[k])} → ${JSON.stringify(b[k])}`);
    }
    for (const k of Object.keys(a)) if (!(k in b)) out.push(`- ${k}`);
    return out.length ? out.join('\n') : '(no change in the document)';
  }

  function drawDocs() {
    const now = Date.now();
    const docs = [...state.docs.values()].sort((x, y) => y.at - x.at);
    $('docs').innerHTML = docs.slice(0, 30).map((d) => `<tr tabindex="0" data-doc="${esc(d.key)}" data-version="${d.version}" class="${d.key === state.selectedDoc ? 'sel' : ''}"><td>${esc(d.key)}</td><td>${d.version}</td><td>${esc(d.op)}</td><td>${ago(now - d.at)} ago</td></tr>`).join('');
    const d = state.docs.get(state.selectedDoc);
    if (d) {
      $('docsel').textContent = `${d.key} v${d.version} (${d.op})`;
      $('diff').textContent = diff(d.prev, d.data);
    }
  }

  function draw() {
    drawConn(); drawFleet(); drawPhysics(); drawReflex(); drawHot(); drawDocs();
    $('clock').textContent = new Date().toLocaleTimeString();
  }

  function onFleet(f) {
    if (state.fleet) {
      const dt = (f.at_ms - state.fleet.at_ms) / 1000;
      if (dt > 0) for (const s of f.streams) {
        const p = state.fleet.streams.find((x) => x.stream === s.stream);
        if (p) state.rates[s.stream] = Math.max(0, (s.entries_added - p.entries_added) / dt);
      }
    }
    state.fleet = f;
    state.fleetAt = Date.now();
    if (f.reflex) onHot(f.reflex, f.at_ms);
  }

  function onPhysics(r) {
    let s = state.symbols.get(r.symbol);
    if (!s) { s = { latest: r, history: [] }; state.symbols.set(r.symbol, s); }
    s.latest = r;
    const t = Date.now();
    s.history.push(Object.assign({ t }, r.vector));
    while (s.history.length && (s.history[0].t < t - HISTORY_MS || s.history.length > 3000)) s.history.shift();
    state.updates++;
  }

  function onChange(c) {
    const prev = state.docs.get(c.key);
    state.docs.set(c.key, { key: c.key, version: c.version, op: c.op, data: c.data, prev: prev ? prev.data : null, at: Date.now() });
    if (!state.selectedDoc) state.selectedDoc = c.key;
  }

  function onHat(h) {
    if (state.hat && state.hat.hat !== h.hat) state.hatLog.push({ from: state.hat.hat, to: h.hat, at: Date.now() });
    state.hat = h;
  }

  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${document.body.dataset.wsPath}`;
  const c = new SDK(url, { minReconnectDelay: 200, maxReconnectDelay: 3000 });
  c.on('connecting', () => setConn('reconnecting…'));
  c.on('connected', () => setConn('connected'));
  c.on('disconnected', () => setConn('disconnected'));
  const handlers = { fleet: onFleet, physics: onPhysics, changes: onChange, 'reflex:crossings': (x) => { state.crossings.push(Object.assign({ at: Date.now() }, x)); if (state.crossings.length > 200) state.crossings.shift(); }, 'reflex:hat': onHat };
  for (const [ch, fn] of Object.entries(handlers)) {
    const sub = c.newSubscription(ch);
    sub.on('publication', (ctx) => { fn(ctx.data); render(); });
    sub.on('subscribed', (ctx) => { if (ctx.wasRecovering && !ctx.recovered) { state.gapAt = Date.now(); render(); } });
    sub.subscribe();
  }
  c.connect();

  $('symbol').addEventListener('change', (e) => { state.selected = e.target.value; render(); });
  $('filter').addEventListener('input', render);
  $('symtable').addEventListener('scroll', render);
  const pick = (e, attr, fn) => { const tr = e.target.closest(`tr[${attr}]`); if (tr) fn(tr.getAttribute(attr)); };
  $('symbols').addEventListener('click', (e) => pick(e, 'data-symbol', (s) => { state.selected = s; render(); }));
  $('symbols').addEventListener('keydown', (e) => { if (e.key === 'Enter') pick(e, 'data-symbol', (s) => { state.selected = s; render(); }); });
  $('docs').addEventListener('click', (e) => pick(e, 'data-doc', (d) => { state.selectedDoc = d; render(); }));
  $('docs').addEventListener('keydown', (e) => { if (e.key === 'Enter') pick(e, 'data-doc', (d) => { state.selectedDoc = d; render(); }); });
  setInterval(render, 1000);
})();
