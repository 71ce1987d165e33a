/* neuronatlas logit-lens viewer (neuronatlas/atlas/lens_view.py): the index of images (search,
   paging) and one page per image (tokens x layers; hover a cell to see its token's patch, click to
   lock). Data from /api/vlm/lens (served) or data/*.js scripts calling NA.put (static export). */
(function () {
  'use strict';
  const CFG = window.NA_CONFIG || { mode: 'static' };
  const SERVER = CFG.mode === 'server';
  const PAGE = 50;
  const app = document.getElementById('app');
  const store = {};
  window.NA = { put: (k, v) => { store[k] = v; } };

  function esc(s) {
    return String(s == null ? '' : s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;',
      '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }
  function loadScript(src) {
    return new Promise((ok, fail) => {
      const s = document.createElement('script');
      s.src = src; s.onload = ok; s.onerror = () => fail(new Error('missing ' + src));
      document.head.appendChild(s);
    });
  }
  async function get(key, url, src) {
    if (SERVER) {
      const r = await fetch(url);
      const body = await r.json();
      if (!r.ok) throw new Error(body.error || r.statusText);
      return body;
    }
    if (!(key in store)) await loadScript(src);
    if (!(key in store)) throw new Error('no data for ' + key);
    return store[key];
  }
  const api = {
    index: () => get('index', '/api/vlm/lens', 'data/index.js'),
    image: i => get('image-' + i, '/api/vlm/lens/' + i, 'data/image-' + i + '.js'),
  };
  function route() {
    let path, search;
    if (SERVER) { path = location.pathname.replace(/^\/vlm\/lens\/?/, '/'); search = location.search; }
    else {
      const h = location.hash.slice(1) || '/';
      const q = h.indexOf('?');
      path = q < 0 ? h : h.slice(0, q); search = q < 0 ? '' : h.slice(q);
    }
    const params = Object.fromEntries(new URLSearchParams(search));
    const m = path.match(/^\/(\d+)$/);
    return m ? { page: 'image', index: Number(m[1]), params } : { page: 'index', params };
  }
  function href(path, params) {
    const qs = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v !== '' && v != null)).toString();
    const p = path + (qs ? '?' + qs : '');
    return SERVER ? '/vlm/lens' + (p === '/' ? '' : p) : '#' + p;
  }
  function go(path, params) {
    if (SERVER) { history.pushState({}, '', href(path, params)); render(); }
    else location.hash = href(path, params).slice(1);
  }

  // -- the index: search over image id and the last layer's text, paging -----------------------
  function indexPage(ix, params) {
    const q = (params.q || '').toLowerCase().trim();
    const words = q ? q.split(/\s+/) : [];
    const hits = ix.images.filter(r => words.every(w => (r.image_id + ' ' + r.top_text).toLowerCase().includes(w)));
    const pages = Math.max(1, Math.ceil(hits.length / PAGE));
    const p = Math.min(Math.max(1, Number(params.page) || 1), pages);
    const rows = hits.slice((p - 1) * PAGE, p * PAGE).map(r => {
      const img = SERVER ? `/vlm/lens-image/${r.index}.png` : `img/${r.index}.png`;
      return `<div class="row"><img src="${img}" alt=""><div><a class="in img-link" href="${href('/' + r.index)}">${esc(r.image_id)}</a>` +
        `<div class="muted small">${r.n_positions} positions · last layer: ${esc(r.top_text)}</div></div></div>`;
    }).join('');
    app.innerHTML = `<div class="lens-index"><h1>Logit lens</h1>
      <p class="sub">${esc(ix.model)} on ${esc(ix.data || '')}: ${ix.images.length} images, ${ix.n_layers} layers (0 = embedding output), top-${ix.top_k}${ix.status === 'complete' ? '' : ' (still computing)'}</p>
      <form id="lens-search"><input id="lens-q" name="q" placeholder="search image id or last-layer tokens" value="${esc(params.q || '')}" size="40"> <button>Search</button></form>
      <div class="pager"><span id="lens-count">${hits.length} images</span> · page <span id="lens-page">${p}</span> of ${pages}
        ${p > 1 ? `<a class="in" id="lens-prev" href="${href('/', { q: params.q, page: p - 1 })}">previous</a>` : ''}
        ${p < pages ? `<a class="in" id="lens-next" href="${href('/', { q: params.q, page: p + 1 })}">next</a>` : ''}</div>
      <div id="lens-rows">${rows || `<p class="muted">${ix.status === 'none' ? 'no logit lens in this run' : 'no image matches'}</p>`}</div>
      ${experiments(ix.experiments || [])}</div>`;
    document.getElementById('lens-search').addEventListener('submit', ev => {
      ev.preventDefault(); go('/', { q: document.getElementById('lens-q').value });
    });
  }

  // -- ablation / knockout experiments: plot + table ---------------------------------------------
  function cell(v) {
    if (typeof v === 'number' && !Number.isInteger(v)) return v.toFixed(3);
    return esc(v == null ? '–' : v);
  }
  function experiments(list) {
    if (!list.length) return '';
    return '<h2 id="experiments">Token ablation and attention knockout</h2>' + list.map(e =>
      `<div class="card exp" data-kind="${esc(e.kind)}" data-name="${esc(e.name)}"><h3>${esc(e.kind)}: ${esc(e.name)}</h3>` +
      `<p class="muted small">${esc(e.model)} on ${esc(e.data || '')}</p>` +
      (e.plot ? `<img class="exp-plot" src="${esc(e.plot)}" alt="${esc(e.kind)} plot">` : '') +
      `<div class="tablewrap"><table class="num"><thead><tr>${e.columns.map(c => `<th>${esc(c)}</th>`).join('')}</tr></thead>` +
      `<tbody>${e.rows.map(r => `<tr>${e.columns.map(c => `<td>${cell(r[c])}</td>`).join('')}</tr>`).join('')}</tbody></table></div></div>`).join('');
  }

  // -- one image: tokens x layers, patch highlight on hover, click to lock ----------------------
  function imagePage(d) {
    const g = d.grid, L = d.n_layers;
    const head = '<tr><th class="tok">token</th>' + Array.from({ length: L }, (_, l) => `<th>${l === 0 ? 'emb' : 'L' + l}</th>`).join('') + '</tr>';
    const body = d.tokens.map((t, p) => {
      const cells = Array.from({ length: L }, (_, l) => {
        const c = d.cells[l][p];
        const prob = c[1][0];
        return `<td data-l="${l}" style="background:rgba(59,91,219,${(0.85 * prob).toFixed(3)})">${esc(d.vocab[c[0][0]])} <span class="muted">${prob.toFixed(2)}</span></td>`;
      }).join('');
      return `<tr data-p="${p}" class="${t.kind === 'image' ? 'img' : ''}"><th class="tok">${esc(t.label)}</th>${cells}</tr>`;
    }).join('');
    const patches = Array.from({ length: g * g }, (_, i) => {
      const r = Math.floor(i / g), c = i % g;
      return `<div class="patch" data-patch="${i}" style="left:${100 * c / g}%;top:${100 * r / g}%;width:${100 / g}%;height:${100 / g}%"></div>`;
    }).join('');
    app.innerHTML = `<h1>${esc(d.image_id)}</h1>
      <p class="sub">${esc(d.model)} · ${d.tokens.length} positions · ${L} layers (emb = embedding output) · grid ${g}×${g}${d.has_cls ? ' + CLS' : ''} · <a class="in" href="${href('/')}">all images</a></p>
      <div class="lens"><div class="side"><div class="imgbox" id="imgbox"><img id="lens-img" src="${esc(d.image)}" alt="input image">${patches}</div>
      <div class="info card" id="lens-info"><span class="muted">Hover a cell: its token's patch lights up. Click to lock.</span></div></div>
      <div class="tablewrap"><table class="lens-t" id="lens-table"><thead>${head}</thead><tbody>${body}</tbody></table></div></div>`;
    let locked = null;
    const box = document.getElementById('imgbox');
    const info = document.getElementById('lens-info');
    function highlight(p, l) {
      document.querySelectorAll('.patch.hl').forEach(e => e.classList.remove('hl'));
      document.querySelectorAll('#lens-table tr.hl').forEach(e => e.classList.remove('hl'));
      box.classList.remove('cls-hl');
      box.dataset.patch = '';
      if (p == null) return;
      const t = d.tokens[p];
      document.querySelector(`#lens-table tr[data-p="${p}"]`).classList.add('hl');
      if (t.kind === 'image' && t.patch >= 0) {
        box.querySelector(`.patch[data-patch="${t.patch}"]`).classList.add('hl');
        box.dataset.patch = String(t.patch);
      } else if (t.kind === 'image') box.classList.add('cls-hl');
      if (l != null) {
        const c = d.cells[l][p];
        info.innerHTML = `<b>${esc(t.label)}</b> at ${l === 0 ? 'the embedding output' : 'layer ' + l}${t.kind === 'image' && t.patch >= 0 ? ` · patch row ${Math.floor(t.patch / g)}, col ${t.patch % g}` : ''}` +
          `<table>${c[0].map((v, r) => `<tr><td>${r + 1}</td><td><code>${esc(d.vocab[v])}</code></td><td>${c[1][r].toFixed(4)}</td></tr>`).join('')}</table>`;
      }
    }
    const table = document.getElementById('lens-table');
    table.addEventListener('mouseover', ev => {
      const td = ev.target.closest('td'); if (!td || locked) return;
      highlight(Number(td.parentNode.dataset.p), Number(td.dataset.l));
    });
    table.addEventListener('click', ev => {
      const td = ev.target.closest('td'); if (!td) return;
      document.querySelectorAll('td.locked').forEach(e => e.classList.remove('locked'));
      const key = td.parentNode.dataset.p + ':' + td.dataset.l;
      if (locked === key) { locked = null; app.dataset.locked = ''; return; }
      locked = key; td.classList.add('locked'); app.dataset.locked = key;
      highlight(Number(td.parentNode.dataset.p), Number(td.dataset.l));
    });
    box.addEventListener('mouseover', ev => { // a patch: its row lights up and scrolls into view
      const el = ev.target.closest('.patch'); if (!el || locked) return;
      const p = d.tokens.findIndex(t => t.kind === 'image' && t.patch === Number(el.dataset.patch));
      if (p >= 0) { highlight(p, L - 1); document.querySelector(`#lens-table tr[data-p="${p}"]`).scrollIntoView({ block: 'nearest' }); }
    });
  }

  async function render() {
    const r = route();
    delete app.dataset.ready;
    try {
      if (r.page === 'image') { const d = await api.image(r.index); imagePage(d); document.title = d.image_id + ' - logit lens'; }
      else { indexPage(await api.index(), r.params); document.title = 'logit lens - ' + (CFG.run || ''); }
    } catch (e) {
      app.innerHTML = `<p class="warn" id="lens-error">${esc(e.message || e)}</p>`;
    }
    app.dataset.ready = r.page; // tests wait on this
  }

  document.getElementById('runname').textContent = CFG.run || '';
  const home = document.getElementById('nav-home');
  if (CFG.home) home.href = CFG.home; else home.remove();
  document.getElementById('nav-lens').href = href('/');
  document.getElementById('brand').href = href('/');
  if (SERVER) {
    document.addEventListener('click', ev => {
      const a = ev.target.closest('a.in');
      if (!a || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault(); history.pushState({}, '', a.getAttribute('href')); render();
    });
    window.addEventListener('popstate', render);
  } else window.addEventListener('hashchange', render);
  render();
})();
