// coldstart browsing page: plain JavaScript against the server's own API (no build step, no CDN).
// Every piece of catalogue text reaches the page through textContent, never parsed as markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const settingsTag = document.querySelector('meta[name="coldstart-settings"]');
  let settings = {};
  try {
    settings = JSON.parse(settingsTag ? settingsTag.content : "{}");
  } catch (_) {
    settings = {};
  }
  const TOKEN_KEY = "coldstart.token";
  const NEW_ITEM_K = 6;
  const HISTORY_LIMIT = 48;
  const state = {
    authReads: Boolean(settings.auth_reads),
    meta: new Map(), // id -> Promise<meta | null>
    localTitles: new Map(), // ids inserted from this tab -> the title they were given
    seq: 0,
    tokenPrompt: null,
    newImage: null,
    imageUrls: [],
  };

  // ------------------------------------------------------------------ small DOM helpers
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function setMessage(node, text, kind) {
    node.textContent = text || "";
    node.classList.toggle("info", kind === "info");
    show(node, Boolean(text));
  }

  // Background loads (catalogue rows, thumbnails) in flight, for tests and screenshots.
  let pending = 0;
  function track(promise) {
    pending += 1;
    document.body.dataset.pending = String(pending);
    promise.finally(() => {
      pending -= 1;
      document.body.dataset.pending = String(pending);
    });
    return promise;
  }

  function busy(on) {
    document.body.dataset.state = on ? "busy" : "idle";
    $("results").classList.toggle("loading", on);
  }

  function hue(id) {
    let h = 0;
    for (const ch of String(id)) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  function initials(title, id) {
    const text = String(title || "");
    const words = text.match(/\p{L}[\p{L}\p{N}'’]*/gu) || text.match(/[\p{N}]+/gu) || [];
    const letters = words.slice(0, 2).map((w) => w[0].toUpperCase()).join("");
    return letters || "#" + String(id).slice(-3);
  }

  // A short line under the title: the catalogue's genres (or tags), when it has them.
  function subtitle(meta) {
    const fields = (meta && meta.fields) || {};
    const list = Array.isArray(fields.genres) ? fields.genres : Array.isArray(fields.tags) ? fields.tags : [];
    return list.slice(0, 3).map(String).join(" · ");
  }

  function fmtScore(score) {
    return Number.isFinite(score) ? score.toFixed(3) : "";
  }

  // ------------------------------------------------------------------ token (sessionStorage)
  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function setToken(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    show($("token-state"), Boolean(value));
  }

  // One prompt at a time: concurrent requests that need the token share it.
  function askToken(why) {
    if (!state.tokenPrompt) {
      state.tokenPrompt = promptToken(why).finally(() => {
        state.tokenPrompt = null;
      });
    }
    return state.tokenPrompt;
  }

  function promptToken(why) {
    const dialog = $("token-dialog");
    $("token-why").textContent = why;
    $("token-input").value = "";
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          const value = $("token-input").value.trim();
          $("token-input").value = "";
          if (dialog.returnValue === "ok" && value) {
            setToken(value);
            resolve(value);
          } else {
            resolve(null);
          }
        },
        { once: true }
      );
      dialog.returnValue = "";
      dialog.showModal();
      $("token-input").focus();
    });
  }

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function detailText(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((e) => (e && e.msg ? `${(e.loc || []).join(".")}: ${e.msg}` : JSON.stringify(e)))
        .join("; ");
    }
    return `HTTP ${status}`;
  }

  async function api(path, { method = "GET", body = null, write = false } = {}) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const headers = { Accept: "application/json" };
      const current = token();
      const sendToken = Boolean(current) && (write || state.authReads);
      if (sendToken) headers.Authorization = "Bearer " + current;
      let res;
      try {
        res = await fetch(path, { method, body, headers, credentials: "omit" });
      } catch (err) {
        throw new ApiError(0, "the server cannot be reached: " + err.message);
      }
      if (res.status === 401 && attempt === 0) {
        if (!write) state.authReads = true;
        const now = token();
        if (now && (!sendToken || now !== current)) continue; // given meanwhile: use it
        if (sendToken) setToken(null); // it was refused: ask again
        const why = sendToken
          ? "The server refused this token. Enter it again:"
          : write
            ? "Inserting writes to the index: it needs the server's API token."
            : "This server requires a token for reads (--auth-reads).";
        if (!(await askToken(why))) throw new ApiError(401, "a bearer token is needed for this");
        continue;
      }
      const type = res.headers.get("content-type") || "";
      const data = type.includes("json") ? await res.json().catch(() => null) : null;
      if (!res.ok) throw new ApiError(res.status, detailText(data, res.status));
      return data;
    }
    throw new ApiError(401, "a bearer token is needed for this");
  }

  function itemPath(id, tail) {
    return `/v1/items/${encodeURIComponent(String(id))}/${tail}`;
  }

  function getMeta(id) {
    const key = String(id);
    if (!state.meta.has(key)) {
      const promise = api(itemPath(id, "meta")).catch((err) => {
        if (err.status !== 404) state.meta.delete(key); // retry transient failures later
        return null;
      });
      state.meta.set(key, track(promise));
    }
    return state.meta.get(key);
  }

  // ------------------------------------------------------------------ cards and images
  function placeholder(id, title) {
    const node = el("div", "placeholder", initials(title, id));
    node.style.setProperty("--hue", String(hue(id)));
    node.setAttribute("role", "img");
    node.setAttribute("aria-label", "no image");
    return node;
  }

  // Swap the placeholder for the thumbnail once it has loaded; a missing image keeps it.
  function loadThumb(wrap, id, title, size) {
    const img = new Image();
    img.className = "thumb";
    img.alt = title || "";
    img.decoding = "async";
    img.dataset.id = String(id);
    track(
      new Promise((resolve) => {
        img.addEventListener("load", resolve, { once: true });
        img.addEventListener("error", resolve, { once: true });
        img.addEventListener("abort", resolve, { once: true });
      })
    );
    img.addEventListener("load", () => {
      const old = wrap.querySelector(".placeholder");
      if (old) old.replaceWith(img);
    });
    const url = itemPath(id, "image") + `?size=${size}`;
    if (state.authReads && token()) {
      fetch(url, { headers: { Authorization: "Bearer " + token() } })
        .then((res) => (res.ok ? res.blob() : null))
        .then((blob) => {
          if (!blob) return img.dispatchEvent(new Event("error"));
          const objectUrl = URL.createObjectURL(blob);
          state.imageUrls.push(objectUrl);
          img.src = objectUrl;
        })
        .catch(() => img.dispatchEvent(new Event("error")));
    } else {
      img.src = url;
    }
  }

  function card(id, score, { rank, compact, relative } = {}) {
    const node = el("button", "card");
    node.type = "button";
    node.dataset.id = String(id);
    if (Number.isFinite(score)) node.dataset.score = String(score);
    const wrap = el("div", "media-wrap");
    const local = state.localTitles.get(String(id));
    wrap.append(placeholder(id, local));
    if (rank) wrap.append(el("span", "rank", rank));
    const body = el("div", "card-body");
    const title = el("div", "card-title", local || `item ${id}`);
    const sub = el("div", "card-sub");
    const meta = el("div", "card-meta");
    meta.append(el("span", "card-id", `#${id}`));
    if (Number.isFinite(score)) meta.append(el("span", "score", fmtScore(score)));
    body.append(title, sub, meta);
    if (relative && Number.isFinite(score)) {
      const bar = el("div", "bar");
      const fill = el("span");
      fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
      bar.append(fill);
      body.append(bar);
    }
    node.append(wrap, body);
    node.addEventListener("click", () => openItem(id));
    const size = compact ? 128 : settings.thumb_size || 256;
    getMeta(id).then((m) => {
      const name = m && m.title ? m.title : local;
      if (name) {
        title.textContent = name;
        title.title = name;
        wrap.querySelector(".placeholder").textContent = initials(name, id);
      }
      sub.textContent = subtitle(m);
      const hasImage = m ? m.has_image : settings.media_items > 0;
      if (hasImage) loadThumb(wrap, id, name, size);
    });
    return node;
  }

  function renderGrid(container, ids, scores, options = {}) {
    const similarity = scores.every((s) => s >= -1.0001 && s <= 1.0001);
    container.replaceChildren(
      ...ids.map((id, i) =>
        card(id, scores[i], { rank: i + 1, relative: similarity, compact: options.compact })
      )
    );
    container.dataset.count = String(ids.length);
  }

  function renderFields(dl, fields) {
    dl.replaceChildren();
    for (const [key, value] of Object.entries(fields || {})) {
      if (key === "title") continue;
      dl.append(el("dt", null, key));
      const dd = el("dd");
      if (Array.isArray(value)) {
        for (const v of value) dd.append(el("span", "chip", typeof v === "string" ? v : JSON.stringify(v)));
      } else if (value !== null && typeof value === "object") {
        dd.textContent = JSON.stringify(value);
      } else {
        dd.textContent = String(value);
      }
      dl.append(dd);
    }
  }

  function setContext({ kicker, title, fields, media, back, user }) {
    userMode(Boolean(user));
    show($("context"), true);
    show($("empty"), false);
    $("context-kicker").textContent = kicker || "";
    $("context-title").textContent = title || "";
    renderFields($("context-fields"), fields);
    $("context-media").replaceChildren(...(media ? [media] : []));
    show($("back"), Boolean(back));
  }

  // ------------------------------------------------------------------ views
  function k() {
    return Number($("k").value) || 12;
  }

  async function runSearch(form, contextOptions) {
    const seq = ++state.seq;
    setMessage($("message"), "");
    setContext(contextOptions);
    form.append("k", String(k()));
    await fillResults(seq, () => api("/v1/search/media", { method: "POST", body: form }));
  }

  // The result grid from a request; a newer view (seq) wins over a slower older one.
  async function fillResults(seq, request) {
    busy(true);
    try {
      const hits = await request();
      if (seq !== state.seq) return;
      renderGrid($("results"), hits.ids, hits.scores);
      if (!hits.ids.length) setMessage($("message"), "No results: the index is empty.", "info");
    } catch (err) {
      if (seq !== state.seq) return;
      $("results").replaceChildren();
      setMessage($("message"), err.message);
    } finally {
      if (seq === state.seq) busy(false);
    }
  }

  function textSearch(q) {
    $("query").value = q;
    const form = new FormData();
    form.append("text", q);
    return runSearch(form, { kicker: "Search results for", title: `“${q}”` });
  }

  function imageSearch(file) {
    if (!file) return;
    // A video goes up as `video` (the server samples its frames); the preview plays it muted.
    const isVideo = file.type.startsWith("video/");
    if (!isVideo && !file.type.startsWith("image/")) {
      setMessage($("message"), `${file.name} is not an image or a video`);
      return;
    }
    history.pushState(null, "", "#image");
    const preview = el(isVideo ? "video" : "img", "thumb");
    if (isVideo) {
      preview.muted = true;
      preview.loop = true;
      preview.autoplay = true;
      preview.setAttribute("aria-label", "your video");
    } else {
      preview.alt = "your image";
    }
    const url = URL.createObjectURL(file);
    state.imageUrls.push(url);
    preview.src = url;
    const form = new FormData();
    form.append(isVideo ? "video" : "image", file, file.name || "upload");
    const title = file.name || (isVideo ? "your video" : "your image");
    return runSearch(form, { kicker: "Items that look like", title, media: preview });
  }

  async function openItem(id) {
    const target = `#item=${encodeURIComponent(String(id))}`;
    if (location.hash !== target) {
      location.hash = target; // hashchange renders it, and the back button returns here
      return;
    }
    const seq = ++state.seq;
    setMessage($("message"), "");
    const local = state.localTitles.get(String(id));
    const media = el("div", "media-wrap");
    media.append(placeholder(id, local));
    setContext({ kicker: `Neighbours of #${id}`, title: local || `item ${id}`, media, back: true });
    getMeta(id).then((m) => {
      if (seq !== state.seq) return;
      const name = (m && m.title) || local;
      if (name) {
        $("context-title").textContent = name;
        media.querySelector(".placeholder").textContent = initials(name, id);
      }
      if (m) renderFields($("context-fields"), m.fields);
      if (m ? m.has_image : settings.media_items > 0) loadThumb(media, id, name, 256);
    });
    await fillResults(seq, () => api(itemPath(id, "neighbors") + `?k=${k()}`));
  }

  // ------------------------------------------------------------------ for a user (a ranker)
  function userMode(on) {
    show($("user-view"), on);
    show($("results"), !on);
  }

  // Whether the server serves a ranker (GET /v1/ranker): only then the user panel shows.
  // A plain fetch, never a token prompt: a server without a ranker answers 404, nothing breaks.
  async function probeRanker() {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    try {
      const res = await fetch("/v1/ranker", { headers, credentials: "omit" });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const info = await res.json();
      const users = await fetch("/v1/users?limit=200", { headers, credentials: "omit" });
      if (!users.ok) throw new Error(`HTTP ${users.status}`);
      const list = await users.json();
      const pick = $("user-pick");
      pick.replaceChildren(...list.ids.map((id) => {
        const opt = el("option", null, `user ${id}`);
        opt.value = String(id);
        return opt;
      }));
      const more = list.total > list.ids.length ? ` (the first ${list.ids.length})` : "";
      $("user-hint").textContent =
        `${info.method}: ${Number(list.total).toLocaleString("en")} users${more}, ` +
        `${info.warm_items} trained and ${info.cold_items} new items. Pick one: their history and what the ranker recommends them.`;
      show($("user-panel"), true);
      document.body.dataset.ranker = "ready";
      const hash = location.hash.replace(/^#/, "");
      if (hash.startsWith("user=")) pick.value = decodeURIComponent(hash.slice(5));
    } catch (_) {
      show($("user-panel"), false);
      document.body.dataset.ranker = "none";
    }
  }

  function markSegments(container, segments) {
    [...container.children].forEach((node, i) => {
      const segment = segments[i] || "";
      node.dataset.segment = segment;
      node.classList.toggle("cold", segment === "cold");
      if (segment === "cold") {
        const badge = el("span", "badge-cold", "cold");
        badge.title = "a new item: served from its content (the cold-item path)";
        node.querySelector(".media-wrap").append(badge);
      }
    });
  }

  async function openUser(id) {
    const seq = ++state.seq;
    setMessage($("message"), "");
    setContext({ kicker: "For a user", title: `user ${id}`, back: true, user: true });
    if ([...$("user-pick").options].some((o) => o.value === String(id))) $("user-pick").value = String(id);
    $("user-recs").replaceChildren();
    $("user-history").replaceChildren();
    delete $("user-recs").dataset.count;
    delete $("user-history").dataset.count;
    busy(true);
    const q = encodeURIComponent(String(id));
    try {
      const [hist, recs] = await Promise.all([
        api(`/v1/users/${q}/history?limit=${HISTORY_LIMIT}`),
        api(`/v1/users/${q}/recommendations?k=${k()}&exclude_seen=true`),
      ]);
      if (seq !== state.seq) return;
      const cold = recs.segments.filter((s) => s === "cold").length;
      renderFields($("context-fields"), {
        history: `${hist.total} item(s)`,
        recommended: `${recs.ids.length} (${cold} new, cold), seen items excluded`,
      });
      $("user-recs-title").textContent = `Recommendations (${recs.ids.length})`;
      renderGrid($("user-recs"), recs.ids, recs.scores);
      markSegments($("user-recs"), recs.segments);
      const shown = hist.items.length < hist.total ? `, the first ${hist.items.length}` : "";
      $("user-history-title").textContent = `History (${hist.total}${shown})`;
      renderGrid($("user-history"), hist.items, [], { compact: true });
      if (!hist.total) $("user-history").append(el("p", "hint", "No known history."));
    } catch (err) {
      if (seq !== state.seq) return;
      setMessage($("message"), err.message);
    } finally {
      if (seq === state.seq) busy(false);
    }
  }

  function route() {
    const hash = location.hash.replace(/^#/, "");
    if (hash.startsWith("item=")) return openItem(decodeURIComponent(hash.slice(5)));
    if (hash.startsWith("q=")) return textSearch(decodeURIComponent(hash.slice(2)));
    if (hash.startsWith("user=")) return openUser(decodeURIComponent(hash.slice(5)));
    if (!hash) {
      state.seq++;
      userMode(false);
      show($("context"), false);
      show($("empty"), true);
      $("results").replaceChildren();
      $("results").dataset.count = "0";
      setMessage($("message"), "");
      busy(false);
    }
  }

  // ------------------------------------------------------------------ new item panel
  function idRowView(out) {
    const box = $("id-row");
    box.replaceChildren();
    const row = out.id_row;
    if (!row) {
      box.append(
        el(
          "p",
          "hint",
          "No ID rows on this server: start coldstart serve with --id-rows <ranker item export> to estimate one."
        )
      );
      box.dataset.dim = "0";
      return;
    }
    box.dataset.dim = String(row.length);
    box.append(
      el("div", null, `${row.length} values, weighted from ${out.id_row_neighbors} neighbour(s)`)
    );
    const strip = el("div", "id-strip");
    const scale = Math.max(...row.map((v) => Math.abs(v)), 1e-9);
    const cells = row.length > 96 ? row.filter((_, i) => i % Math.ceil(row.length / 96) === 0) : row;
    for (const v of cells) {
      const cell = el("span");
      const t = v / scale; // -1 .. 1: blue .. white .. red
      const light = 96 - Math.abs(t) * 46;
      cell.style.background = `hsl(${t < 0 ? 220 : 8} 75% ${light}%)`;
      cell.title = v.toFixed(4);
      strip.append(cell);
    }
    box.append(strip);
    const head = row.slice(0, 8).map((v) => v.toFixed(3)).join(", ");
    box.append(el("div", "id-values", `[${head}${row.length > 8 ? ", …" : ""}]`));
  }

  function newItemForm(insert) {
    const form = new FormData();
    const title = $("new-title").value.trim();
    if (title) form.append("text", title);
    if (state.newImage) form.append("image", state.newImage, state.newImage.name || "upload");
    form.append("k", String(NEW_ITEM_K));
    if (insert) {
      form.append("insert", "true");
      form.append("item_id", $("new-id").value.trim());
    }
    return { form, title, empty: !title && !state.newImage };
  }

  async function runNewItem() {
    const { form, empty } = newItemForm(false);
    setMessage($("new-message"), "");
    if (empty) {
      setMessage($("new-message"), "Give the new item a title, an image, or both.");
      return;
    }
    $("new-run").disabled = true;
    document.body.dataset.newState = "busy";
    try {
      const out = await api("/v1/coldstart/media", { method: "POST", body: form });
      show($("new-out"), true);
      idRowView(out);
      renderGrid($("new-results"), out.neighbors.ids, out.neighbors.scores, { compact: true });
    } catch (err) {
      setMessage($("new-message"), err.message);
    } finally {
      $("new-run").disabled = false;
      document.body.dataset.newState = "idle";
    }
  }

  async function insertNewItem() {
    const id = $("new-id").value.trim();
    const { form, title, empty } = newItemForm(true);
    setMessage($("new-message"), "");
    if (!id) {
      setMessage($("new-message"), "Give the new item an id first.");
      $("new-id").focus();
      return;
    }
    if (empty) {
      setMessage($("new-message"), "Give the new item a title, an image, or both.");
      return;
    }
    if (!token() && !(await askToken("Inserting writes to the index: it needs the server's API token."))) {
      setMessage($("new-message"), "Not inserted: no token given.");
      return;
    }
    $("insert").disabled = true;
    document.body.dataset.newState = "busy";
    try {
      const out = await api("/v1/coldstart/media", { method: "POST", body: form, write: true });
      if (title) state.localTitles.set(id, title);
      state.meta.delete(id);
      renderGrid($("new-results"), out.neighbors.ids, out.neighbors.scores, { compact: true });
      setMessage(
        $("new-message"),
        `Inserted item ${id} (write-ahead log #${out.lsn}). It is searchable now.`,
        "info"
      );
    } catch (err) {
      setMessage($("new-message"), `Not inserted: ${err.message}`);
    } finally {
      $("insert").disabled = false;
      document.body.dataset.newState = "idle";
    }
  }

  function setNewImage(file) {
    state.newImage = file || null;
    const preview = $("new-preview");
    preview.replaceChildren();
    if (file) {
      const img = el("img");
      img.alt = "";
      const url = URL.createObjectURL(file);
      state.imageUrls.push(url);
      img.src = url;
      preview.append(img);
    }
    show($("new-clear"), Boolean(file));
  }

  // ------------------------------------------------------------------ status
  async function pollHealth() {
    const pill = $("status");
    try {
      const res = await fetch("/health", { headers: { Accept: "application/json" } });
      const h = await res.json();
      if (h.ready) {
        const n = Number(h.items).toLocaleString("en");
        const parts = [`${n} items`];
        if (settings.catalogue_items) parts.push(`${Number(settings.catalogue_items).toLocaleString("en")} in catalogue`);
        if (h.device) parts.push(String(h.device));
        pill.textContent = parts.join(" · ");
        pill.className = "pill ok";
        return;
      }
      pill.textContent = h.error ? `index failed: ${h.error}` : "index loading…";
      pill.className = h.error ? "pill down" : "pill";
    } catch (_) {
      pill.textContent = "server unreachable";
      pill.className = "pill down";
    }
    setTimeout(pollHealth, 2000);
  }

  // ------------------------------------------------------------------ wiring
  function init() {
    document.body.dataset.state = "idle";
    document.body.dataset.pending = "0";
    document.body.classList.toggle("no-media", !settings.media_items);
    const choices = [6, 12, 24, 48].filter((n) => n <= (settings.max_k || 1000));
    for (const n of choices) {
      const opt = el("option", null, `${n} results`);
      opt.value = String(n);
      $("k").append(opt);
    }
    $("k").value = choices.includes(12) ? "12" : String(choices[choices.length - 1] || 1);
    setToken(token());

    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const q = $("query").value.trim();
      if (!q) {
        setMessage($("message"), "Type something to search for, or drop an image.");
        return;
      }
      const target = "#q=" + encodeURIComponent(q);
      if (location.hash === target) textSearch(q);
      else location.hash = target;
    });
    $("image-input").addEventListener("change", (event) => {
      imageSearch(event.target.files[0]);
      event.target.value = "";
    });
    const drop = $("drop");
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") $("image-input").click();
    });
    for (const name of ["dragenter", "dragover"]) {
      document.addEventListener(name, (event) => {
        event.preventDefault();
        drop.classList.add("over");
      });
    }
    document.addEventListener("dragleave", (event) => {
      if (!event.relatedTarget) drop.classList.remove("over");
    });
    document.addEventListener("drop", (event) => {
      event.preventDefault(); // never navigate away to the dropped file
      drop.classList.remove("over");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (!file) return;
      if (event.target.closest && event.target.closest("#new-form")) setNewImage(file);
      else imageSearch(file);
    });
    $("back").addEventListener("click", () => history.back());
    $("forget-token").addEventListener("click", () => setToken(null));

    $("new-form").addEventListener("submit", (event) => {
      event.preventDefault();
      runNewItem();
    });
    $("new-image").addEventListener("change", (event) => {
      setNewImage(event.target.files[0]);
      event.target.value = "";
    });
    $("new-clear").addEventListener("click", () => setNewImage(null));
    $("insert").addEventListener("click", insertNewItem);

    $("user-panel").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("user-pick").value;
      if (!id) return;
      const target = "#user=" + encodeURIComponent(id);
      if (location.hash === target) openUser(id);
      else location.hash = target;
    });
    $("user-pick").addEventListener("change", () => $("user-panel").requestSubmit());
    track(probeRanker());

    window.addEventListener("hashchange", route);
    pollHealth();
    route();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
