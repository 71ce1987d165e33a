/* neuronatlas atlas: one script for the served app (data from /api) and the static export (data
   from data/*.js files that call NA.put, since browsers refuse fetch() on file://). In the export,
   search / filter / sort / paging run here and mirror neuronatlas/atlas/queries.py exactly. */
(function () {
  'use strict';
  const CFG = window.NA_CONFIG || { mode: 'static' };
  const SERVER = CFG.mode === 'server';
  const METRICS = ['score', 'pearson', 'cosine'];
  const METRIC_NAMES = { score: 'label score', pearson: 'simulation r', cosine: 'truth cosine',
    exact: 'exact', top5: 'top-5' };
  const UNIT_SORTS = ['unit', 'std', 'mean', 'max'].concat(METRICS);
  const app = document.getElementById('app');

  // -- small helpers ---------------------------------------------------------------------------
  function esc(s) {
    return String(s == null ? '' : s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;',
      '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }
  function fmt(v, digits) {
    if (v == null || Number.isNaN(v)) return '–';
    if (typeof v !== 'number') return esc(v);
    const a = Math.abs(v);
    if (v !== 0 && (a >= 1e4 || a < 1e-3)) return v.toExponential(2);
    return Number(v.toPrecision(digits || 3)).toString();
  }
  function pct(v) { return v == null ? '–' : (100 * v).toFixed(1) + '%'; }
  function clean(params) {
    const out = {};
    for (const [k, v] of Object.entries(params || {})) if (v !== '' && v != null) out[k] = v;
    return out;
  }
  function href(path, params) {
    const qs = new URLSearchParams(clean(params)).toString();
    const p = path + (qs ? '?' + qs : '');
    return SERVER ? p : '#' + p;
  }
  function unitHref(unit) { return href('/unit/' + encodeURIComponent(unit)); }
  function go(path, params, replace) {
    const url = href(path, params);
    if (SERVER) { history[replace ? 'replaceState' : 'pushState']({}, '', url); render(); }
    else if (replace) { history.replaceState({}, '', url); render(); }
    else location.hash = url.slice(1);
  }
  function route() {
    let path, search;
    if (SERVER) { path = location.pathname; search = location.search; }
    else {
      const h = location.hash.slice(1) || '/';
      const q = h.indexOf('?');
      path = q < 0 ? h : h.slice(0, q); search = q < 0 ? '' : h.slice(q);
    }
    const params = Object.fromEntries(new URLSearchParams(search));
    if (path.startsWith('/unit/')) return { page: 'unit', unit: decodeURIComponent(path.slice(6)), params };
    if (path === '/units') return { page: 'units', params };
    if (path === '/compare') return { page: 'compare', params };
    if (path === '/' || path === '' || path.endsWith('/index.html')) return { page: 'overview', params };
    return { page: 'notfound', path, params };
  }
  class NotFound extends Error { constructor(m) { super(m); this.status = 404; } }
  class BadQuery extends Error { constructor(m) { super(m); this.status = 400; } }

  // -- data: the server's API ---------------------------------------------------------------------
  function serverApi() {
    async function get(url) {
      const r = await fetch(url);
      const j = await r.json();
      if (!r.ok) throw r.status === 404 ? new NotFound(j.error) : new BadQuery(j.error || r.statusText);
      return j;
    }
    const qs = p => new URLSearchParams(clean(p)).toString();
    return {
      overview: () => get('/api/overview'),
      units: p => get('/api/units?' + qs(p)),
      unit: u => get('/api/unit/' + encodeURIComponent(u)),
      compare: p => get('/api/compare?' + qs(p)),
    };
  }

  // -- data: the static export (queries.py in JavaScript) -----------------------------------------
  const store = {};
  window.NA = { put: (key, value) => { store[key] = value; } };
  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = src; s.onload = resolve;
      s.onerror = () => reject(new Error('cannot load ' + src));
      document.head.appendChild(s);
    });
  }
  async function need(key, src) { if (!(key in store)) await loadScript(src); return store[key]; }

  function tokens(text) { // the unicode61 rule of index.py:tokens
    return String(text).toLowerCase().normalize('NFD').replace(/\p{M}/gu, '')
      .match(/[\p{L}\p{N}]+/gu) || [];
  }
  function staticApi() {
    let rows = null, byUnit = null;
    async function allRows() {
      if (rows) return rows;
      const ov = await need('overview', 'data/overview.js');
      const parts = await Promise.all(Array.from({ length: ov.export.row_chunks },
        (_, i) => need('rows-' + i, 'data/rows-' + i + '.js')));
      rows = [].concat(...parts);
      byUnit = new Map();
      for (const r of rows) {
        byUnit.set(r.unit, r);
        r.tok = {};
        for (const [m, t] of Object.entries(r.text || {})) r.tok[m] = tokens(t);
      }
      return rows;
    }
    function matches(r, words, methods) {
      return methods.some(m => r.tok[m] && words.every(w => r.tok[m].some(t => t.startsWith(w))));
    }
    function matchesOf(r, words, method) { // the labels that contain a searched word (queries.py)
      const out = [];
      for (const m of Object.keys(r.text || {}).sort()) {
        if (method && m !== method) continue;
        r.text[m].split(' | ').forEach((label, rank) => {
          if (tokens(label).some(t => words.some(w => t.startsWith(w)))) out.push({ method: m, rank, label });
        });
      }
      return out;
    }
    function sortRows(list, key, order) {
      const dir = order === 'desc' ? -1 : 1;
      return list.sort((a, b) => {
        const x = key(a), y = key(b);
        const nx = x == null, ny = y == null;
        if (nx !== ny) return nx ? 1 : -1;
        if (!nx && x !== y) return (x < y ? -1 : 1) * dir;
        return a.uid - b.uid;
      });
    }
    function page(list, p) {
      const per = p.per_page, total = list.length;
      return { total, page: p.page, per_page: per, pages: Math.max(1, Math.ceil(total / per)),
        rows: list.slice((p.page - 1) * per, p.page * per) };
    }
    function num(v, d) { if (v == null || v === '') return d; const n = Number(v); if (Number.isNaN(n)) throw new BadQuery('not a number: ' + v); return n; }
    function unitQuery(p) {
      const q = { q: p.q || '', layer: p.layer || '', method: p.method || '', metric: p.metric || 'score',
        min: num(p.min, null), max: num(p.max, null), sort: p.sort || 'unit', order: p.order || 'asc',
        page: num(p.page, 1), per_page: num(p.per_page, 50) };
      if (!METRICS.includes(q.metric)) throw new BadQuery('metric must be one of ' + METRICS.join(', '));
      if (!UNIT_SORTS.includes(q.sort)) throw new BadQuery('sort must be one of ' + UNIT_SORTS.join(', '));
      if ((q.min != null || q.max != null || METRICS.includes(q.sort)) && !q.method)
        throw new BadQuery('filtering or sorting by a score needs a method: choose one');
      return q;
    }
    return {
      overview: () => need('overview', 'data/overview.js'),
      async units(p) {
        const q = unitQuery(p), ov = await need('overview', 'data/overview.js');
        let list = await allRows();
        const words = tokens(q.q);
        const methods = q.method ? [q.method] : ov.methods.map(m => m.name);
        const val = r => (r.labels[q.method] || {})[q.metric];
        list = list.filter(r => (!q.method || r.labels[q.method]) && (!q.layer || r.layer === q.layer)
          && (!words.length || matches(r, words, methods))
          && (q.min == null || (val(r) != null && val(r) >= q.min))
          && (q.max == null || (val(r) != null && val(r) <= q.max)));
        const key = q.sort === 'unit' ? (r => r.uid) : METRICS.includes(q.sort)
          ? (r => (r.labels[q.method] || {})[q.sort]) : (r => r[q.sort]);
        const res = Object.assign({ query: q }, page(sortRows(list, key, q.order), q));
        if (words.length) res.rows = res.rows.map(r => Object.assign({}, r, { matches: matchesOf(r, words, q.method) }));
        return res;
      },
      async unit(u) {
        await allRows();
        const r = byUnit.get(u);
        if (!r) throw new NotFound('unit ' + JSON.stringify(u) + ' is not in this run');
        const ov = store.overview;
        const c = Math.floor(r.uid / ov.export.detail_chunk);
        return (await need('detail-' + c, 'data/detail-' + c + '.js'))[u];
      },
      async compare(p) {
        const a = p.a, b = p.b, m = p.metric || 'score', only = p.only || 'all';
        if (a === b) throw new BadQuery('choose two different methods to compare');
        const words = tokens(p.q || '');
        const norm = s => String(s).toLowerCase().split(/\s+/).filter(Boolean).join(' ');
        let list = (await allRows()).filter(r => r.labels[a] && r.labels[b]
          && (!p.layer || r.layer === p.layer) && (!words.length || matches(r, words, [a, b])));
        const same = r => norm(r.labels[a].label) === norm(r.labels[b].label);
        const perLayer = new Map();
        for (const r of list) {
          const e = perLayer.get(r.layer) || { layer: r.layer, n_units: 0, s: 0 };
          e.n_units++; e.s += same(r) ? 1 : 0; perLayer.set(r.layer, e);
        }
        const n = list.length, nSame = list.filter(same).length;
        const scatter = list.filter(r => r.labels[a][m] != null && r.labels[b][m] != null).slice(0, 2000)
          .map(r => ({ unit: r.unit, x: r.labels[a][m], y: r.labels[b][m], same: same(r) }));
        if (only !== 'all') list = list.filter(r => same(r) === (only === 'same'));
        const key = p.sort === 'a' ? (r => r.labels[a][m]) : p.sort === 'b' ? (r => r.labels[b][m]) : (r => r.uid);
        const q = { page: num(p.page, 1), per_page: num(p.per_page, 50) };
        const res = page(sortRows(list, key, p.order || 'asc'), q);
        res.rows = res.rows.map(r => ({ unit: r.unit, layer: r.layer, same: same(r), a: r.labels[a], b: r.labels[b] }));
        return Object.assign(res, { n_units: n, same: n ? nSame / n : null, scatter,
          per_layer: [...perLayer.values()].map(e => ({ layer: e.layer, n_units: e.n_units, same: e.s / e.n_units })) });
      },
    };
  }
  const api = SERVER ? serverApi() : staticApi();
  window.NA.api = api; // for tests: the same queries the pages use

  // -- charts (inline SVG) ------------------------------------------------------------------------
  const PALETTE = ['#4c6ef5', '#f08c00', '#2f9e44', '#c2255c', '#7048e8', '#1098ad', '#e8590c'];
  function barChart(groups, series, title, fmtv) {
    // groups: [{name, values: {series: v}}]
    const W = 560, H = 210, L = 46, B = 46, T = 22;
    const vals = groups.flatMap(g => series.map(s => g.values[s])).filter(v => v != null);
    if (!vals.length) return '';
    const lo = Math.min(0, ...vals), hi = Math.max(...vals, lo + 1e-9);
    const y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    const gw = (W - L - 10) / groups.length, bw = Math.min(28, (gw - 10) / series.length);
    let s = `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`;
    s += `<text x="${L}" y="14" class="ctitle">${esc(title)}</text>`;
    for (const t of [lo, (lo + hi) / 2, hi]) s += `<line x1="${L}" x2="${W - 10}" y1="${y(t)}" y2="${y(t)}" class="grid"/><text x="${L - 6}" y="${y(t) + 4}" class="tick" text-anchor="end">${fmt(t, 2)}</text>`;
    groups.forEach((g, gi) => {
      const x0 = L + gi * gw + (gw - bw * series.length) / 2;
      series.forEach((se, si) => {
        const v = g.values[se]; if (v == null) return;
        const top = Math.min(y(v), y(0)), h = Math.abs(y(v) - y(0));
        s += `<rect x="${x0 + si * bw}" y="${top}" width="${bw - 3}" height="${Math.max(h, 1)}" fill="${PALETTE[si % PALETTE.length]}"><title>${esc(se)} · ${esc(g.name)}: ${(fmtv || fmt)(v)}</title></rect>`;
      });
      const name = g.name.length > 22 ? '…' + g.name.slice(-21) : g.name;
      s += `<text x="${L + gi * gw + gw / 2}" y="${H - B + 16}" class="tick" text-anchor="middle">${esc(name)}</text>`;
    });
    series.forEach((se, si) => { s += `<rect x="${L + si * 130}" y="${H - 16}" width="10" height="10" fill="${PALETTE[si % PALETTE.length]}"/><text x="${L + si * 130 + 14}" y="${H - 7}" class="tick">${esc(se)}</text>`; });
    return s + '</svg>';
  }
  function histogram(h, marks) {
    const W = 1000, H = 190, L = 46, B = 30, T = 14;
    const n = h.counts.length;
    if (!n) return '<p class="muted">No values recorded.</p>';
    const hi = Math.max(...h.counts), bw = (W - L - 40) / n;
    let s = `<svg class="chart wide" viewBox="0 0 ${W} ${H}" role="img" aria-label="activation histogram">`;
    h.counts.forEach((c, i) => {
      const bh = (H - T - B) * c / hi;
      s += `<rect x="${L + i * bw}" y="${H - B - bh}" width="${Math.max(bw - 0.5, 0.5)}" height="${bh}" class="hbar"><title>${fmt(h.edges[i])} … ${fmt(h.edges[i + 1])}: ${c}</title></rect>`;
    });
    const ticks = [0, Math.floor(n / 2), n];
    for (const t of ticks) s += `<text x="${L + t * bw}" y="${H - B + 14}" class="tick" text-anchor="middle">${fmt(h.edges[t])}</text>`;
    s += `<text x="${L - 6}" y="${T + 8}" class="tick" text-anchor="end">${hi}</text><text x="${L - 6}" y="${H - B}" class="tick" text-anchor="end">0</text>`;
    const xOf = v => { // position of a value on the (asinh-spaced) bin axis
      for (let i = 0; i < n; i++) if (v <= h.edges[i + 1]) return L + (i + (v - h.edges[i]) / ((h.edges[i + 1] - h.edges[i]) || 1)) * bw;
      return L + n * bw;
    };
    for (const [name, v, cls] of marks || []) if (v != null) s += `<line x1="${xOf(v)}" x2="${xOf(v)}" y1="${T}" y2="${H - B}" class="${cls}"/><text x="${xOf(v) + 3}" y="${T + 10}" class="tick">${esc(name)}</text>`;
    return s + '</svg>';
  }
  function scatter(points, xl, yl) {
    if (!points.length) return '<p class="muted">No units have this metric for both methods.</p>';
    const W = 420, H = 320, L = 50, B = 40, T = 12, R = 12;
    const xs = points.map(p => p.x), ys = points.map(p => p.y);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const X = v => L + (W - L - R) * ((v - x0) / ((x1 - x0) || 1)), Y = v => H - B - (H - T - B) * ((v - y0) / ((y1 - y0) || 1));
    let s = `<svg class="chart scatter" viewBox="0 0 ${W} ${H}" role="img" aria-label="scatter">`;
    s += `<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" class="axis"/><line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" class="axis"/>`;
    for (const p of points) s += `<circle cx="${X(p.x)}" cy="${Y(p.y)}" r="3.2" class="${p.same ? 'dot same' : 'dot'}"><title>${esc(p.unit)}: ${fmt(p.x)}, ${fmt(p.y)}</title></circle>`;
    s += `<text x="${L}" y="${H - B + 14}" class="tick">${fmt(x0)}</text><text x="${W - R}" y="${H - B + 14}" class="tick" text-anchor="end">${fmt(x1)}</text>`;
    s += `<text x="${L - 4}" y="${H - B}" class="tick" text-anchor="end">${fmt(y0)}</text><text x="${L - 4}" y="${T + 8}" class="tick" text-anchor="end">${fmt(y1)}</text>`;
    s += `<text x="${(L + W) / 2}" y="${H - 8}" class="tick" text-anchor="middle">${esc(xl)}</text><text x="14" y="${(T + H - B) / 2}" class="tick" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">${esc(yl)}</text>`;
    return s + '</svg>';
  }

  // -- pages --------------------------------------------------------------------------------------
  let OV = null;
  function table(head, rows, cls) {
    return `<table class="${cls || ''}"><thead><tr>${head.map(h => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.map(r => `<tr>${r.map(c => `<td>${c}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
  }
  function kv(pairs) { return `<dl class="kv">${pairs.filter(p => p[1] != null && p[1] !== '').map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('')}</dl>`; }
  function methodConfig(cfg) {
    const c = cfg || {};
    const parts = [];
    if (c.scorer) parts.push('scorer ' + esc(c.scorer.name || c.scorer));
    if (c.concepts) parts.push('concepts ' + esc(c.concepts.name || c.concepts) + (c.concepts.size ? ` (${c.concepts.size})` : ''));
    if (c.similarity) parts.push(esc(c.similarity));
    if (c.paper) parts.push(`<span class="muted">${esc(c.paper)}</span>`);
    return parts.join(' · ');
  }

  function overviewPage(ov) {
    const m = ov.model, p = ov.probe;
    let s = `<h1>${esc(ov.run)}</h1><p class="sub">${esc(m.spec)} · ${ov.n_units} units in ${ov.layers.length} layer${ov.layers.length === 1 ? '' : 's'} · ${p.n_ok != null ? p.n_ok : p.n_images} images</p>`;
    if (ov.tiles_error) s += `<p class="warn">${esc(ov.tiles_error)}</p>`;
    s += `<div class="cards">`;
    s += `<section class="card"><h2>Model</h2>${kv([['spec', esc(m.spec)], ['family', esc(m.family)], ['weights', esc(m.weights)], ['input', m.preprocess ? esc(m.preprocess.size + ' px, ' + m.preprocess.interpolation) : null]])}</section>`;
    s += `<section class="card"><h2>Probe set</h2>${kv([['spec', esc(p.spec)], ['kind', esc(p.kind)], ['images', p.n_images], ['recorded', p.n_ok], ['unreadable', p.n_unreadable], ['duplicates', p.n_duplicate]])}</section>`;
    s += `<section class="card"><h2>Recording</h2>${kv([['exemplars per end', ov.k], ['units', ov.n_units], ['finished', esc(ov.finished)], ['ground truth', ov.has_truth ? 'yes (synthetic units)' : 'no']])}</section>`;
    s += `</div>`;
    s += `<section><h2>Layers</h2>${table(['layer', 'units', 'kind', 'pooling', 'shape', ''], ov.layers.map(l => [`<code>${esc(l.name)}</code>`, l.n_units, esc(l.kind), esc(l.pooling), esc((l.shape || []).join(' × ')), `<a class="in" href="${href('/units', { layer: l.name })}">browse</a>`]))}</section>`;
    s += `<section><h2>Methods run</h2>` + (ov.methods.length ? table(['method', 'units labelled', 'labels', 'configuration'], ov.methods.map(x => [`<a class="in" href="${href('/units', { method: x.name })}">${esc(x.name)}</a>`, x.n_units, x.n_labels, methodConfig(x.config)])) : `<p class="muted">No labels yet: run <code>neuronatlas describe RUN</code>.</p>`) + `</section>`;
    const summ = (ov.evaluation.summary || []).filter(r => r.other == null);
    if (summ.length) {
      const methods = [...new Set(summ.map(r => r.method))];
      const keys = [...new Set(summ.map(r => r.metric + '|' + r.kind))];
      const cell = (k, mm) => { const r = summ.find(x => x.metric + '|' + x.kind === k && x.method === mm); return r ? `<span title="${r.n_units} units">${fmt(r.value)}</span>` : '–'; };
      s += `<section><h2>Evaluation</h2>${table(['metric', 'units'].concat(methods.map(esc)), keys.map(k => { const [met, kind] = k.split('|'); return [esc(met), esc(kind)].concat(methods.map(mm => cell(k, mm))); }), 'num')}</section>`;
    }
    const ag = ov.evaluation.agreement || [];
    if (ag.length) s += `<section><h2>Agreement between methods</h2>${table(['method', 'other', 'units', 'same top label', 'label cosine', ''], ag.map(r => [esc(r.method), esc(r.other), r.n_units, pct(r.same_top1), fmt(r.cosine), `<a class="in" href="${href('/compare', { a: r.method, b: r.other })}">compare</a>`]), 'num')}</section>`;
    if (ov.per_layer.length) {
      const layers = [...new Set(ov.per_layer.map(r => r.layer))], methods = [...new Set(ov.per_layer.map(r => r.method))];
      let charts = '';
      for (const metric of ['exact', 'cosine', 'pearson', 'score']) {
        if (!ov.per_layer.some(r => r[metric] != null)) continue;
        const groups = layers.map(l => ({ name: l, values: Object.fromEntries(methods.map(mm => [mm, (ov.per_layer.find(r => r.layer === l && r.method === mm) || {})[metric]])) }));
        charts += `<div class="chartbox">${barChart(groups, methods, 'mean ' + (METRIC_NAMES[metric] || metric) + ' per layer', metric === 'exact' ? pct : fmt)}</div>`;
      }
      s += `<section><h2>Label quality per layer</h2><div class="charts">${charts}</div></section>`;
    }
    s += `<section class="muted small">${SERVER ? `Files: <a href="/files/run.json">run.json</a>` : 'Static export'} · ${esc(ov.path)}</section>`;
    return s;
  }

  function unitsForm(q, ov) {
    const opt = (v, label, cur) => `<option value="${esc(v)}"${String(v) === String(cur) ? ' selected' : ''}>${esc(label)}</option>`;
    return `<form id="unit-form" class="filters">
      <input id="q" name="q" type="search" placeholder="Search labels…" value="${esc(q.q || '')}" autocomplete="off">
      <label>layer <select name="layer">${opt('', 'all', q.layer)}${ov.layers.map(l => opt(l.name, l.name, q.layer)).join('')}</select></label>
      <label>method <select name="method">${opt('', 'any', q.method)}${ov.methods.map(m => opt(m.name, m.name, q.method)).join('')}</select></label>
      <label>score <select name="metric">${METRICS.filter(m => ov.metrics.includes(m)).map(m => opt(m, METRIC_NAMES[m], q.metric)).join('')}</select></label>
      <label>from <input name="min" type="number" step="any" value="${esc(q.min == null ? '' : q.min)}"></label>
      <label>to <input name="max" type="number" step="any" value="${esc(q.max == null ? '' : q.max)}"></label>
      <label>sort <select name="sort">${UNIT_SORTS.filter(s => !METRICS.includes(s) || ov.metrics.includes(s)).map(s => opt(s, METRIC_NAMES[s] || s, q.sort)).join('')}</select></label>
      <select name="order">${opt('asc', '↑ asc', q.order)}${opt('desc', '↓ desc', q.order)}</select>
      <label>per page <select name="per_page">${[25, 50, 100, 200].map(n => opt(n, n, q.per_page || 50)).join('')}</select></label>
      <button type="submit">Search</button>
    </form>`;
  }
  function pager(res, path, params) {
    if (res.pages <= 1) return '';
    const link = (p, label, dis) => dis ? `<span class="disabled">${label}</span>` : `<a class="in" href="${href(path, Object.assign({}, params, { page: p }))}">${label}</a>`;
    return `<nav class="pager">${link(1, '« first', res.page === 1)}${link(res.page - 1, '‹ prev', res.page === 1)}<span>page ${res.page} of ${res.pages}</span>${link(res.page + 1, 'next ›', res.page >= res.pages)}${link(res.pages, 'last »', res.page >= res.pages)}</nav>`;
  }
  function labelCell(e) {
    if (!e) return '<span class="muted">–</span>';
    const bits = [`score ${fmt(e.score)}`];
    if (e.pearson != null) bits.push(`r ${fmt(e.pearson)}`);
    return `<span class="lab${e.exact === 1 ? ' right' : e.exact === 0 ? ' wrong' : ''}">${esc(e.label)}</span><span class="scores">${bits.join(' · ')}</span>`;
  }
  async function unitsPage(params) {
    const ov = OV;
    let res, error = null;
    try { res = await api.units(params); } catch (e) { if (e.status !== 400) throw e; error = e.message; }
    const q = res ? res.query : params;
    let s = `<h1>Units</h1>${unitsForm(q, ov)}`;
    if (error) return s + `<p class="warn" id="query-error">${esc(error)}</p>`;
    const methods = ov.methods.map(m => m.name);
    s += `<p class="sub" id="result-count">${res.total} unit${res.total === 1 ? '' : 's'} match${res.total === 1 ? 'es' : ''}${res.total ? ` · showing ${(res.page - 1) * res.per_page + 1}–${Math.min(res.total, res.page * res.per_page)}` : ''}</p>`;
    const head = ['unit', 'layer', 'std', 'max'].concat(ov.has_truth ? ['truth'] : []).concat(methods.map(esc));
    const also = r => { // matched labels below the top one: why this unit is in the results
      const m = (r.matches || []).filter(x => x.rank > 0);
      return m.length ? `<span class="also">matched ${m.slice(0, 3).map(x => `${esc(x.label)} <small>(${esc(x.method)} #${x.rank + 1})</small>`).join(', ')}${m.length > 3 ? ', …' : ''}</span>` : '';
    };
    s += table(head, res.rows.map(r => [`<a class="in unit-link" href="${unitHref(r.unit)}">${esc(r.unit)}</a>${also(r)}`, `<code>${esc(r.layer)}</code>`, fmt(r.std), fmt(r.max)]
      .concat(ov.has_truth ? [esc(r.truth || '–')] : []).concat(methods.map(m => labelCell(r.labels[m])))), 'units');
    if (!res.rows.length) s += `<p class="muted">No unit matches. Try fewer words or another layer.</p>`;
    s += pager(res, '/units', q);
    app.innerHTML = s;
    const form = document.getElementById('unit-form');
    form.addEventListener('submit', ev => {
      ev.preventDefault();
      const p = Object.fromEntries(new FormData(form));
      if ((p.min !== '' || p.max !== '' || METRICS.includes(p.sort)) && !p.method && methods.length) p.method = methods[0];
      if (p.per_page === '50') delete p.per_page;
      if (p.metric === 'score') delete p.metric;
      if (p.sort === 'unit') delete p.sort;
      if (p.order === 'asc') delete p.order;
      go('/units', p);
    });
    form.querySelectorAll('select').forEach(el => el.addEventListener('change', () => form.requestSubmit()));
    return null;
  }

  function tiles(list, heat) {
    if (!list.length) return '<p class="muted">No images recorded.</p>';
    return `<div class="tiles">${list.map(t => {
      const src = heat && t.heat ? t.heat : t.plain;
      const img = src ? `<img src="${esc(src)}" data-plain="${esc(t.plain)}" data-heat="${esc(t.heat || t.plain)}" alt="${esc(t.image_id)}" width="128" height="128">` : `<div class="noimg">no image</div>`;
      return `<figure class="tile">${img}<figcaption><b>#${t.rank + 1}</b> ${fmt(t.value, 4)}<br><span title="${esc(t.image_id)}">${esc(t.class || t.image_id)}</span></figcaption></figure>`;
    }).join('')}</div>`;
  }
  async function unitPage(unit) {
    const d = await api.unit(unit);
    const ov = OV;
    const heatOn = d.has_heat && localStorage.getItem('na-heat') !== 'off';
    let s = `<p class="crumbs"><a class="in" href="${href('/units')}">Units</a> › <a class="in" href="${href('/units', { layer: d.layer })}">${esc(d.layer)}</a></p>`;
    s += `<h1 id="unit-title">${esc(d.unit)}</h1>`;
    if (d.truth) s += `<p class="truth">true label: <b>${esc(d.truth)}</b> <span class="muted">(${esc(d.truth_kind || '')})</span></p>`;
    s += `<div class="statline">${[['mean', d.mean], ['std', d.std], ['min', d.min], ['max', d.max], ['q01', d.q01], ['median', d.q50], ['q99', d.q99], ['positive', d.frac_positive == null ? null : pct(d.frac_positive)], ['images', d.count]].map(([k, v]) => `<span><small>${k}</small>${typeof v === 'string' ? v : fmt(v)}</span>`).join('')}</div>`;
    const names = Object.keys(d.methods).sort();
    s += `<section><h2>Labels</h2>`;
    if (!names.length) s += `<p class="muted">No method has labelled this unit.</p>`;
    s += `<div class="cards">${names.map(m => {
      const e = d.methods[m];
      const ev = [['label score', fmt(e.score)], ['simulation r', fmt(e.pearson)], ['exact', e.exact == null ? null : (e.exact ? '✓ right' : '✗ wrong')], ['truth in top 5', e.top5 == null ? null : (e.top5 ? 'yes' : 'no')], ['truth cosine', e.cosine == null ? null : fmt(e.cosine)]];
      return `<section class="card method"><h3>${esc(m)}</h3><p class="biglabel">${esc(e.label)}</p>${kv(ev.filter(x => x[1] != null && x[1] !== '–'))}${table(['#', 'label', 'score'], e.labels.map(l => [l.rank + 1, esc(l.label), fmt(l.score)]), 'ranked num')}</section>`;
    }).join('')}</div></section>`;
    if (d.agreement.length) s += `<section><h2>Agreement between methods</h2>${table(['methods', 'same top label', 'label-set overlap', 'shared labels'], d.agreement.map(a => [`${esc(a.a)} · ${esc(a.b)}`, a.same_top1 ? '✓ yes' : '✗ no', a.jaccard == null ? '–' : pct(a.jaccard), esc(a.shared.join(', ') || '–')]))}</section>`;
    s += `<section><h2>Exemplars</h2><div class="toolbar"><label class="switch"><input type="checkbox" id="heat-toggle"${heatOn ? ' checked' : ''}${d.has_heat && d.images_available ? '' : ' disabled'}> heatmap</label><span class="muted small">${d.has_heat ? `the unit's spatial map, one colour scale over top and bottom (${esc(d.pooling)} pooling gives the value)` : 'this layer has no spatial map'}${d.images_available ? '' : ' · ' + esc(d.images_note || 'no images for this unit')}</span></div>`;
    s += `<h3>Top ${d.top.length}</h3><div id="top-tiles">${tiles(d.top, heatOn)}</div><h3>Bottom ${d.bottom.length}</h3><div id="bottom-tiles">${tiles(d.bottom, heatOn)}</div></section>`;
    s += `<section><h2>Activation histogram</h2><p class="muted small">${d.count} pooled values, asinh-spaced bins</p><div class="chartbox">${histogram(d.histogram, [['mean', d.mean, 'mark'], ['top-k', d.top.length ? d.top[d.top.length - 1].value : null, 'mark2']])}</div></section>`;
    app.innerHTML = s;
    document.title = d.unit + ' - neuronatlas';
    const toggle = document.getElementById('heat-toggle');
    toggle.addEventListener('change', () => {
      localStorage.setItem('na-heat', toggle.checked ? 'on' : 'off');
      app.querySelectorAll('.tile img').forEach(img => { img.src = toggle.checked ? img.dataset.heat : img.dataset.plain; });
    });
    return null;
  }

  async function comparePage(params) {
    const ov = OV, methods = ov.methods.map(m => m.name);
    if (methods.length < 2) { app.innerHTML = `<h1>Compare methods</h1><p class="muted">This run has labels from ${methods.length} method${methods.length === 1 ? '' : 's'}; comparing needs two (run another <code>neuronatlas describe</code>).</p>`; return; }
    const p = Object.assign({ a: methods[0], b: methods[1] }, params);
    let res, error = null;
    try { res = await api.compare(p); } catch (e) { if (e.status !== 400) throw e; error = e.message; }
    const opt = (v, cur, label) => `<option value="${esc(v)}"${v === cur ? ' selected' : ''}>${esc(label || v)}</option>`;
    let s = `<h1>Compare methods</h1><form id="cmp-form" class="filters">
      <label>A <select name="a">${methods.map(m => opt(m, p.a)).join('')}</select></label>
      <label>B <select name="b">${methods.map(m => opt(m, p.b)).join('')}</select></label>
      <input name="q" type="search" placeholder="Search labels…" value="${esc(p.q || '')}">
      <label>layer <select name="layer">${opt('', p.layer || '', 'all')}${ov.layers.map(l => opt(l.name, p.layer)).join('')}</select></label>
      <label>show <select name="only">${['all', 'same', 'different'].map(o => opt(o, p.only || 'all', o === 'all' ? 'all units' : o === 'same' ? 'same top label' : 'different labels')).join('')}</select></label>
      <label>score <select name="metric">${METRICS.filter(m => ov.metrics.includes(m)).map(m => opt(m, p.metric || 'score', METRIC_NAMES[m])).join('')}</select></label>
      <label>sort <select name="sort">${[['unit', 'unit'], ['a', 'score of A'], ['b', 'score of B']].map(([v, l]) => opt(v, p.sort || 'unit', l)).join('')}</select></label>
      <select name="order">${opt('asc', p.order || 'asc', '↑ asc')}${opt('desc', p.order || 'asc', '↓ desc')}</select>
      <button type="submit">Compare</button></form>`;
    if (error) { app.innerHTML = s + `<p class="warn">${esc(error)}</p>`; bindCompare(); return; }
    const metric = METRIC_NAMES[p.metric || 'score'];
    s += `<p class="sub" id="cmp-summary"><b>${esc(p.a)}</b> and <b>${esc(p.b)}</b> give the same top label on <b>${pct(res.same)}</b> of ${res.n_units} units labelled by both.</p>`;
    s += `<div class="cards"><section class="card"><h3>${esc(metric)}: A vs B</h3>${scatter(res.scatter, esc(p.a), esc(p.b))}<p class="muted small"><span class="dotkey same"></span> same top label <span class="dotkey"></span> different</p></section>`;
    s += `<section class="card"><h3>Same top label per layer</h3>${table(['layer', 'units', 'same'], res.per_layer.map(l => [`<code>${esc(l.layer)}</code>`, l.n_units, pct(l.same)]), 'num')}</section></div>`;
    s += `<p class="sub">${res.total} units shown${p.only && p.only !== 'all' ? ` (${esc(p.only)})` : ''}</p>`;
    s += table(['unit', 'layer', esc(p.a), esc(p.b), 'same'], res.rows.map(r => [`<a class="in" href="${unitHref(r.unit)}">${esc(r.unit)}</a>`, `<code>${esc(r.layer)}</code>`, labelCell(r.a), labelCell(r.b), r.same ? '✓' : '✗']), 'units');
    s += pager(res, '/compare', p);
    app.innerHTML = s;
    bindCompare();
  }
  function bindCompare() {
    const form = document.getElementById('cmp-form');
    form.addEventListener('submit', ev => { ev.preventDefault(); go('/compare', Object.fromEntries(new FormData(form))); });
    form.querySelectorAll('select').forEach(el => el.addEventListener('change', () => form.requestSubmit()));
  }

  function notFound(message) {
    app.innerHTML = `<div class="notfound"><h1>404</h1><p id="notfound-msg">${esc(message)}</p><p><a class="in" href="${href('/units')}">Browse the units</a> or go to the <a class="in" href="${href('/')}">run overview</a>.</p></div>`;
  }

  async function render() {
    const r = route();
    delete app.dataset.ready;
    document.querySelectorAll('#nav a').forEach(a => a.classList.toggle('active', a.dataset.page === r.page || (r.page === 'unit' && a.dataset.page === 'units')));
    try {
      if (!OV) {
        OV = await api.overview();
        document.getElementById('runname').textContent = OV.run;
        document.getElementById('brand').href = href('/');
        document.querySelectorAll('#nav a[data-page]').forEach(a => { a.href = href(a.dataset.page === 'overview' ? '/' : '/' + a.dataset.page); a.classList.add('in'); });
      }
      if (r.page === 'overview') { app.innerHTML = overviewPage(OV); document.title = OV.run + ' - neuronatlas'; }
      else if (r.page === 'units') await unitsPage(r.params);
      else if (r.page === 'unit') await unitPage(r.unit);
      else if (r.page === 'compare') await comparePage(r.params);
      else notFound('there is nothing at ' + r.path);
    } catch (e) {
      if (e.status === 404) notFound(e.message);
      else app.innerHTML = `<p class="warn">${esc(e.message || e)}</p>`;
    }
    app.dataset.ready = r.page; // tests wait on this
    window.scrollTo(0, 0);
  }

  if (CFG.lens) { // the run has a logit lens (vlm): its viewer is a page of its own
    const a = document.createElement('a');
    a.id = 'nav-lens'; a.href = CFG.lens; a.textContent = 'Logit lens';
    document.getElementById('nav').appendChild(a);
  }
  if (SERVER) {
    document.addEventListener('click', ev => {
      const a = ev.target.closest('a.in');
      if (!a || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      history.pushState({}, '', a.getAttribute('href'));
      render();
    });
    window.addEventListener('popstate', render);
  } else {
    window.addEventListener('hashchange', render);
  }
  render();
})();
