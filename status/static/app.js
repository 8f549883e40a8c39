// framestream status page: renders each server-sent snapshot. Text goes in with textContent
// only (dead-letter details and keys are untrusted input).
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
const fix = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const secs = (v) => (v === undefined || v === null ? "–" : v < 1 ? `${(v * 1000).toFixed(0)} ms`
  : v < 10 ? `${v.toFixed(2)} s` : v < 100 ? `${v.toFixed(1)} s` : `${v.toFixed(0)} s`);
const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString("en-GB") : "–");

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function rows(tableId, items, fill) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of items) {
    const tr = document.createElement("tr");
    fill(tr, item);
    body.appendChild(tr);
  }
}
function line(svg, values, max, cls, w, h) {
  const pl = document.createElementNS(SVG, "polyline");
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  pl.setAttribute("points", values.map((v, i) =>
    `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`).join(" "));
  pl.setAttribute("class", cls);
  svg.appendChild(pl);
}
function sparkline(values) {  // accuracy per epoch, 0..1 scaled to its own range
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 120 28");
  svg.setAttribute("class", "spark");
  const ok = values.filter((v) => typeof v === "number");
  if (!ok.length) return document.createTextNode("–");
  const lo = Math.min(...ok), hi = Math.max(...ok), span = hi - lo || 1;
  const pts = ok.map((v, i) => [ok.length > 1 ? 4 + (i * 112) / (ok.length - 1) : 60,
    24 - ((v - lo) / span) * 20]);
  const pl = document.createElementNS(SVG, "polyline");
  pl.setAttribute("points", pts.map((p) => p.join(",")).join(" "));
  svg.appendChild(pl);
  const last = document.createElementNS(SVG, "circle");
  last.setAttribute("cx", pts[pts.length - 1][0]);
  last.setAttribute("cy", pts[pts.length - 1][1]);
  last.setAttribute("r", 2.5);
  svg.appendChild(last);
  const title = document.createElementNS(SVG, "title");
  title.textContent = ok.map((v) => v.toFixed(4)).join(" → ");
  svg.appendChild(title);
  const wrap = document.createElement("span");
  wrap.className = "nowrap";
  wrap.append(svg, ` ${ok[ok.length - 1].toFixed(4)}`);
  return wrap;
}

function bars(buckets) {  // forward passes per batch-size range, as a small bar chart
  const used = (buckets || []).filter((b) => b.n > 0);
  if (!used.length) return document.createTextNode("–");
  const first = buckets.indexOf(used[0]), last = buckets.indexOf(used[used.length - 1]);
  const shown = buckets.slice(first, last + 1), max = Math.max(...shown.map((b) => b.n));
  const w = 10, h = 24, svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${shown.length * w} ${h}`);
  svg.setAttribute("width", shown.length * w);
  svg.setAttribute("height", h);
  svg.setAttribute("class", "bars");
  const range = (b) => (b.hi === null ? `${b.lo}+` : b.lo === b.hi ? `${b.lo}` : `${b.lo}-${b.hi}`);
  shown.forEach((b, i) => {
    const r = document.createElementNS(SVG, "rect"), bh = b.n ? Math.max(1, (b.n / max) * h) : 0;
    r.setAttribute("x", i * w + 1); r.setAttribute("width", w - 2);
    r.setAttribute("y", h - bh); r.setAttribute("height", bh);
    svg.appendChild(r);
  });
  const title = document.createElementNS(SVG, "title");
  title.textContent = shown.map((b) => `${range(b)} frames: ${b.n}`).join("\n");
  svg.appendChild(title);
  const wrap = document.createElement("span");
  wrap.className = "batch-sizes";
  wrap.dataset.sizes = JSON.stringify(Object.fromEntries(used.map((b) => [range(b), b.n])));
  const top = shown[shown.length - 1];
  wrap.append(svg, ` ${shown[0].lo}–${top.hi === null ? `${top.lo}+` : top.hi}`);
  return wrap;
}

function render(s) {
  const st = s.stream, c = st.counts, r = st.rates || {};
  $("updated").textContent = `updated ${clock(s.t)}`;
  $("frames-in").textContent = num(c.frames_in);
  $("predictions").textContent = num(c.predictions);
  $("dead-letters").textContent = num(c.dead_letters);
  $("rate-frames").textContent = `${fix(r.frames)} /s`;
  $("rate-predictions").textContent = `${fix(r.predictions)} /s`;
  $("rate-dead-letters").textContent = `${fix(r.dead_letters)} /s`;
  const lagTotal = st.lag.reduce((a, p) => a + p.lag, 0);
  $("lag-total").textContent = num(lagTotal);
  $("accounted").textContent = `${num(c.predictions + c.dead_letters)} of ${num(c.frames_in)} answered`;
  const l = st.latency_s;
  $("latency").replaceChildren(...(l.n ? [l.p50, l.p90, l.p99].flatMap((v, i) => {
    const span = document.createElement("span");
    span.textContent = secs(v);
    return i ? [" / ", span] : [span];
  }) : ["–"]));
  $("latency-n").textContent = `capture → prediction, last ${num(l.n)}`;
  $("error").textContent = [st.error, s.registry.error].filter(Boolean).join(" · ");

  const chart = $("rate-chart");
  chart.replaceChildren();
  const hist = st.rate_history;
  const max = Math.max(1, ...hist.map((h) => Math.max(h.frames, h.predictions, h.dead_letters)));
  line(chart, hist.map((h) => h.frames), max, "line-frames", 600, 120);
  line(chart, hist.map((h) => h.predictions), max, "line-predictions", 600, 120);
  line(chart, hist.map((h) => h.dead_letters), max, "line-dead", 600, 120);

  $("frames-topic").textContent = st.topics.frames || "";
  rows("lag", st.lag, (tr, p) => {
    cell(tr, p.partition); cell(tr, num(p.end)); cell(tr, num(p.answered)); cell(tr, num(p.lag));
  });
  rows("reasons", Object.entries(st.dead_letters.by_reason), (tr, [reason, n]) => {
    tr.dataset.reason = reason; cell(tr, reason); cell(tr, num(n), "count");
  });
  rows("last-dead", st.dead_letters.last, (tr, d) => {
    const where = `${d.partition}@${d.offset}`;  // the frames topic's name is in the heading
    cell(tr, d.topic === st.topics.frames ? where : `${d.topic}/${where}`).title =
      `${d.topic} partition ${d.partition} offset ${d.offset}`;
    cell(tr, d.reason);
    cell(tr, d.detail, "detail").title = d.detail;
  });
  $("serving").textContent = s.registry.serving || "none";
  rows("versions", st.versions, (tr, v) => {
    tr.dataset.version = v.version; cell(tr, v.version); cell(tr, num(v.predictions), "count");
    cell(tr, clock(v.first_ts)); cell(tr, clock(v.last_ts));
  });
  rows("pins", (s.pins || {}).batches || [], (tr, b) => {
    tr.dataset.batch = b.batch_id; cell(tr, b.batch_id); cell(tr, b.model_version);
    cell(tr, clock(b.pinned_at));
  });
  rows("decisions", s.registry.decisions.slice(0, 8), (tr, d) => {
    cell(tr, d.at ? new Date(d.at).toLocaleString("en-GB") : ""); cell(tr, d.event === "promote" ? (d.promoted ? "promoted" : "refused")
      : d.event || "");
    cell(tr, d.version || `${d.from} → ${d.to}`); cell(tr, d.reason || "", "detail").title = d.reason || "";
  });
  const rk = s.ranks;
  $("generation").textContent = rk.generation !== null && rk.generation !== undefined
    ? `generation ${rk.generation}` : "";
  $("ranks-error").textContent = rk.error || "";
  rows("ranks", rk.ranks, (tr, x) => {
    tr.dataset.rank = x.rank; tr.dataset.state = x.up ? "up" : "down";
    cell(tr, x.rank); cell(tr, x.up ? "up" : "down", x.up ? "state-up" : "state-down").title = x.error;
    cell(tr, x.host); cell(tr, x.pid); cell(tr, x.device); cell(tr, x.model || "–");
    cell(tr, num(x.frames)); cell(tr, fix(x.requests_per_s)); cell(tr, num(x.queue_depth));
    cell(tr, fix(x.mean_batch)); cell(tr, bars(x.batch_sizes));
  });
  rows("runs", s.runs.slice(0, 10), (tr, run) => {
    tr.dataset.version = run.version || "";
    cell(tr, run.scheduled ? new Date(run.scheduled).toLocaleString("en-GB") : "").title = run.scheduled || ""; cell(tr, run.status, `status-${run.status}`);
    cell(tr, run.duration_s !== undefined ? `${fix(run.duration_s)} s` : "–");
    cell(tr, run.version || "–"); cell(tr, sparkline(run.epochs || []));
    cell(tr, run.promoted === true ? "promoted" : run.promoted === false ? "kept" : "–");
    cell(tr, run.reason || "", "detail").title = run.reason || "";
  });
  const links = $("links");
  links.replaceChildren();
  for (const [key, label] of [["spark_ui", "Spark UI"], ["ray_dashboard", "Ray dashboard"]]) {
    if (s.links[key] && /^https?:\/\//.test(s.links[key])) {  // only links that answer
      const a = document.createElement("a");
      a.href = s.links[key]; a.textContent = label; a.target = "_blank"; a.rel = "noopener";
      a.dataset.link = key; a.title = s.links[key];
      links.appendChild(a);
    }
  }
}

function connect() {
  const es = new EventSource("/events");
  es.onopen = () => { $("conn").textContent = "live"; $("conn").className = "pill up"; };
  es.onerror = () => { $("conn").textContent = "reconnecting"; $("conn").className = "pill down"; };
  es.onmessage = (ev) => render(JSON.parse(ev.data));
}
connect();
