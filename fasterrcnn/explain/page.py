"""`index.html`: every picture with a caption, and an interactive anchor explorer (paper,
Sec. 3.1 and Eq. 2), in one self-contained file (plain HTML + JavaScript, images embedded as
data URIs, no server, works offline).

The explorer shows the image; a click places the RPN's 3x3 sliding window at the nearest
feature-map position and draws its k anchors, their objectness scores and their regressed
boxes, all computed by the real RPN on this image for every position (embedded as JSON,
rounded: scores in thousandths, boxes in whole pixels). Check boxes toggle the anchor scales
and ratios; sliders for tx, ty, tw, th show the box that Eq. 2 parameterises relative to the
selected anchor (x = xa + tx wa, y = ya + ty ha, w = wa exp(tw), h = ha exp(th)).

The page reads its URL hash too, through the same handlers: `index.html#click=120,80`
(input-image pixels), `&sizes=128,256`, `&ratios=1:2,1:1`, `&t=0.1,0,0.2,0`. The drawn
anchors are kept in the `data-anchors` attribute of the `<svg id="explorer">` element and in
`window.explorer` (for tests and curious readers), the selected anchor in `data-selected` and
the box of Eq. 2 in `data-param`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from fasterrcnn.explain import PICTURES, _model
from fasterrcnn.explain._common import Context, Output, Result

FILE = "index.html"


def explorer_data(ctx: Context) -> dict[str, Any]:
    """The RPN's anchors, scores and regressed boxes at every position of this image."""
    model = ctx.model
    prep = _model.prepare(model, ctx.image)
    raw = _model.rpn_raw(model, _model.features(model, prep.tensor))
    sy, sx = prep.scale
    boxes = raw.decoded(model) / torch.tensor([sx, sy, sx, sy])
    base = _model.base_anchors(model)
    ratios, scales = _model.anchor_settings(model)
    stride = _model.stride(model)
    sizes = [s * stride for s in scales]
    shapes = []
    for x1, y1, x2, y2 in base.tolist():
        w, h = x2 - x1 + 1, y2 - y1 + 1
        size = min(sizes, key=lambda s: abs(math.log(math.sqrt(w * h) / s)))
        r = min(ratios, key=lambda r: abs(math.log((h / w) / r)))
        shapes.append({"size": round(size), "ratio": _ratio_name(r), "w": round(w), "h": round(h)})
    return {
        "W": int(ctx.image.shape[-1]), "H": int(ctx.image.shape[-2]), "sx": sx, "sy": sy, "stride": stride,
        "fh": raw.feature_size[0], "fw": raw.feature_size[1], "k": raw.k, "legacy": _model.legacy_plus_one(model),
        "base": [[round(v, 1) for v in b] for b in base.tolist()], "shape": shapes,
        "score": [round(v * 1000) for v in raw.probs.tolist()],
        "box": [round(v) for v in boxes.flatten().tolist()],
    }


def _ratio_name(r: float) -> str:
    """h:w of a ratio h/w: 0.5 -> "1:2"."""
    if abs(r - 1) < 1e-6:
        return "1:1"
    return f"1:{1 / r:g}" if r < 1 else f"{r:g}:1"


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _image_uri(image: torch.Tensor) -> str:
    from PIL import Image

    arr = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def make(ctx: Context, out: Path, results: dict[str, Any]) -> Result:
    data = explorer_data(ctx)
    sections = []
    for name, pic in PICTURES.items():
        res = results.get(name)
        if res is None:
            continue
        body = f"<p class=blurb>{html.escape(pic.blurb)}</p>"
        if isinstance(res, Exception):
            body += f"<p class=skipped>Not drawn for this input: {html.escape(str(res))}</p>"
        for o in getattr(res, "outputs", []):
            body += (f'<figure><img alt="{html.escape(o.file)}" src="{_data_uri(out / o.file, "image/png")}">'
                     f"<figcaption><b>{html.escape(o.file)}</b>: {html.escape(o.caption)}</figcaption></figure>")
        sections.append(f'<section id="{name}"><h2>{html.escape(pic.title)}</h2>{body}</section>')
    toc = " · ".join(f'<a href="#{n}">{html.escape(n)}</a>' for n in PICTURES if n in results)
    page = (TEMPLATE.replace("__NOTE__", html.escape(f"{ctx.model_note}; {ctx.image_note}"))
            .replace("__TOC__", toc).replace("__SECTIONS__", "\n".join(sections))
            .replace("__IMAGE__", _image_uri(ctx.image)).replace("__DATA__", json.dumps(data, separators=(",", ":"))))
    (out / FILE).write_text(page, encoding="utf-8")
    positions = data["fh"] * data["fw"]
    caption = (f"all pictures with captions, and the anchor explorer: click the image to see the {data['k']} anchors, "
               f"their scores and regressed boxes at any of the {positions:,} positions")
    return Result([Output(FILE, caption)], {"explorer": {k: data[k] for k in ("W", "H", "stride", "fh", "fw", "k")},
                                            "bytes": (out / FILE).stat().st_size})


TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Faster R-CNN, shown: the method with the real model</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1180px;margin:1em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.note{color:#555;font-size:.9em} .blurb{font-style:italic} .skipped{color:#a00}
figure{margin:.8em 0} figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:.9em;color:#333}
#ex-wrap{display:flex;gap:1.2em;flex-wrap:wrap;align-items:flex-start} #explorer{border:1px solid #999;background:#fafafa;cursor:crosshair;max-width:640px;width:100%}
#ex-side{flex:1;min-width:320px;font-size:.9em} #ex-side table{border-collapse:collapse;width:100%}
#ex-side td,#ex-side th{border-bottom:1px solid #ddd;padding:2px 4px;text-align:right} #ex-side tr.sel{background:#ffe9f7}
#ex-side tr{cursor:pointer} #ex-side td{white-space:nowrap} .ctl{margin:.4em 0} .ctl label{margin-right:.7em} input[type=range]{width:180px;vertical-align:middle}
code{background:#f2f2f2;padding:0 3px}
</style></head><body>
<h1>Faster R-CNN, shown: the method with the real model and data</h1>
<p class=note>Ren, He, Girshick, Sun, <i>Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks</i>
(NIPS 2015). Made by <code>fasterrcnn explain all</code>: __NOTE__.</p>
<p>__TOC__ · <a href="#explorer-section">anchor explorer</a></p>
<section id="explorer-section"><h2>Anchor explorer (Sec. 3.1, Eq. 2)</h2>
<p class=blurb>Click the image to place the RPN's 3x3 sliding window: the nearest feature-map position's anchors
(solid), their objectness (from the real RPN on this image) and their regressed boxes (dashed) appear.
Toggle scales and ratios; click a row to select an anchor; the sliders move the box of Eq. 2 (magenta).</p>
<div id="ex-wrap"><svg id="explorer" data-anchors="[]" data-position="" xmlns="http://www.w3.org/2000/svg"></svg>
<div id="ex-side"><div id="ex-pos">click the image</div>
<div class=ctl id="ex-sizes">scales: </div><div class=ctl id="ex-ratios">ratios (h:w): </div>
<table><thead><tr><th>anchor</th><th>w x h</th><th>objectness</th><th>regressed box (x1, y1, x2, y2)</th></tr></thead>
<tbody id="ex-rows"></tbody></table>
<h3>Eq. 2: x = x<sub>a</sub> + t<sub>x</sub> w<sub>a</sub>, y = y<sub>a</sub> + t<sub>y</sub> h<sub>a</sub>,
w = w<sub>a</sub> e<sup>t<sub>w</sub></sup>, h = h<sub>a</sub> e<sup>t<sub>h</sub></sup></h3>
<div class=ctl><label>t<sub>x</sub> <input type=range id=tx min=-1 max=1 step=0.01 value=0> <span id=tx-v>0.00</span></label></div>
<div class=ctl><label>t<sub>y</sub> <input type=range id=ty min=-1 max=1 step=0.01 value=0> <span id=ty-v>0.00</span></label></div>
<div class=ctl><label>t<sub>w</sub> <input type=range id=tw min=-1.5 max=1.5 step=0.01 value=0> <span id=tw-v>0.00</span></label></div>
<div class=ctl><label>t<sub>h</sub> <input type=range id=th min=-1.5 max=1.5 step=0.01 value=0> <span id=th-v>0.00</span></label></div>
<div class=ctl><button id=ex-rpn>the RPN's t for this anchor</button> <button id=ex-zero>t = 0 (the anchor)</button></div>
<div id="ex-param"></div></div></div></section>
__SECTIONS__
<script>
"use strict";
const D = __DATA__;
const NS = "http://www.w3.org/2000/svg";
const svg = document.getElementById("explorer");
const one = D.legacy ? 1 : 0;
const state = {i: null, j: null, selected: null, anchors: [], t: [0, 0, 0, 0], param: null,
               sizes: new Set(D.shape.map(s => s.size)), ratios: new Set(D.shape.map(s => s.ratio))};
window.explorer = state;
// view: the image plus a margin (the larger anchors stick out of the image)
const m = Math.round(0.25 * Math.max(D.W, D.H));
svg.setAttribute("viewBox", `${-m} ${-m} ${D.W + 2 * m} ${D.H + 2 * m}`);
svg.style.aspectRatio = `${D.W + 2 * m} / ${D.H + 2 * m}`;
function el(tag, attrs, parent) { const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); (parent || svg).appendChild(e); return e; }
el("rect", {x: -m, y: -m, width: D.W + 2 * m, height: D.H + 2 * m, fill: "#eee"});
el("image", {href: "__IMAGE__", x: 0, y: 0, width: D.W, height: D.H});
const layer = el("g", {id: "ex-layer"});
function rectOf(b, attrs, parent) { return el("rect", Object.assign({x: b[0], y: b[1], width: Math.max(b[2] - b[0], 0.5), height: Math.max(b[3] - b[1], 0.5), fill: "none"}, attrs), parent); }
function anchorBox(a, i, j) { const b = D.base[a]; return [(b[0] + j * D.stride) / D.sx, (b[1] + i * D.stride) / D.sy, (b[2] + j * D.stride) / D.sx, (b[3] + i * D.stride) / D.sy]; }
function colour(a) { const sizes = [...new Set(D.shape.map(s => s.size))]; return ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e"][sizes.indexOf(D.shape[a].size) % 5]; }
function geom(b) { const w = b[2] - b[0] + one, h = b[3] - b[1] + one; return [b[0] + 0.5 * w, b[1] + 0.5 * h, w, h]; }
function decode(b, t) { const [xa, ya, wa, ha] = geom(b); const x = xa + t[0] * wa, y = ya + t[1] * ha, w = wa * Math.exp(t[2]), h = ha * Math.exp(t[3]);
  return [x - 0.5 * w, y - 0.5 * h, x + 0.5 * w - one, y + 0.5 * h - one]; }
function encode(b, g) { const [xa, ya, wa, ha] = geom(b), [x, y, w, h] = geom(g); return [(x - xa) / wa, (y - ya) / ha, Math.log(w / wa), Math.log(h / ha)]; }
function r1(v) { return Math.round(v * 10) / 10; }
function select(ox, oy) {
  const cx0 = (D.base[0][0] + D.base[0][2]) / 2, cy0 = (D.base[0][1] + D.base[0][3]) / 2;
  state.j = Math.min(D.fw - 1, Math.max(0, Math.round((ox * D.sx - cx0) / D.stride)));
  state.i = Math.min(D.fh - 1, Math.max(0, Math.round((oy * D.sy - cy0) / D.stride)));
  state.selected = null;
  render();
}
function render() {
  layer.innerHTML = "";
  const rows = document.getElementById("ex-rows"); rows.innerHTML = "";
  state.anchors = [];
  if (state.i === null) { svg.setAttribute("data-anchors", "[]"); return; }
  const {i, j} = state, s = D.stride;
  const cx = ((D.base[0][0] + D.base[0][2]) / 2 + j * s), cy = ((D.base[0][1] + D.base[0][3]) / 2 + i * s);
  for (let di = -1; di <= 1; di++) for (let dj = -1; dj <= 1; dj++)
    rectOf([(cx + (dj - 0.5) * s) / D.sx, (cy + (di - 0.5) * s) / D.sy, (cx + (dj + 0.5) * s) / D.sx, (cy + (di + 0.5) * s) / D.sy], {stroke: "white", "stroke-width": 1.5}, layer);
  el("circle", {cx: cx / D.sx, cy: cy / D.sy, r: 3, fill: "red"}, layer);
  let best = null;
  for (let a = 0; a < D.k; a++) {
    if (!state.sizes.has(D.shape[a].size) || !state.ratios.has(D.shape[a].ratio)) continue;
    const idx = (i * D.fw + j) * D.k + a, score = D.score[idx] / 1000;
    const anchor = anchorBox(a, i, j).map(r1), reg = D.box.slice(4 * idx, 4 * idx + 4);
    state.anchors.push({a: a, size: D.shape[a].size, ratio: D.shape[a].ratio, anchor: anchor, score: score, regressed: reg});
    if (best === null || score > best.score) best = state.anchors[state.anchors.length - 1];
  }
  if (state.selected === null || !state.anchors.some(x => x.a === state.selected)) state.selected = best ? best.a : null;
  for (const x of state.anchors) {
    const c = colour(x.a), w = 0.6 + 2.4 * x.score;
    rectOf(x.anchor, {stroke: c, "stroke-width": x.a === state.selected ? 3 : 1.5, class: "anchor", "data-a": x.a}, layer);
    rectOf(x.regressed, {stroke: c, "stroke-width": w, "stroke-opacity": 0.35 + 0.65 * x.score, "stroke-dasharray": "3,3", class: "regressed"}, layer);
    const tr = document.createElement("tr"); if (x.a === state.selected) tr.className = "sel";
    tr.innerHTML = `<td style="color:${c}">#${x.a} ${x.size}² ${x.ratio}</td><td>${D.shape[x.a].w}x${D.shape[x.a].h}</td><td>${x.score.toFixed(3)}</td><td>${x.regressed.join(", ")}</td>`;
    tr.onclick = () => { state.selected = x.a; render(); };
    rows.appendChild(tr);
  }
  drawParam();
  document.getElementById("ex-pos").textContent = `map position (x ${j}, y ${i}) of ${D.fw}x${D.fh}, centre (${r1(cx / D.sx)}, ${r1(cy / D.sy)}) px; ${state.anchors.length} of ${D.k} anchors shown`;
  svg.setAttribute("data-anchors", JSON.stringify(state.anchors));
  svg.setAttribute("data-position", `${j},${i}`);
}
function drawParam() {
  const old = document.getElementById("ex-param-box"); if (old) old.remove();
  const x = state.anchors.find(v => v.a === state.selected);
  if (!x) { state.param = null; document.getElementById("ex-param").textContent = ""; return; }
  state.param = decode(x.anchor, state.t).map(r1);
  svg.setAttribute("data-selected", x.a);
  svg.setAttribute("data-param", JSON.stringify(state.param));
  rectOf(state.param, {id: "ex-param-box", stroke: "#ff00cc", "stroke-width": 2.5}, layer);
  const [xa, ya, wa, ha] = geom(x.anchor).map(r1);
  document.getElementById("ex-param").innerHTML = `anchor #${x.a}: x<sub>a</sub> ${xa}, y<sub>a</sub> ${ya}, w<sub>a</sub> ${wa}, h<sub>a</sub> ${ha} &rarr; box (${state.param.join(", ")})`;
}
for (const [id, k] of [["tx", 0], ["ty", 1], ["tw", 2], ["th", 3]]) {
  const inp = document.getElementById(id);
  inp.oninput = () => { state.t[k] = parseFloat(inp.value); document.getElementById(id + "-v").textContent = state.t[k].toFixed(2); drawParam(); };
}
function setT(t) { state.t = t.map(v => Math.max(-1.5, Math.min(1.5, v))); ["tx", "ty", "tw", "th"].forEach((id, k) => { document.getElementById(id).value = state.t[k]; document.getElementById(id + "-v").textContent = state.t[k].toFixed(2); }); drawParam(); }
document.getElementById("ex-rpn").onclick = () => { const x = state.anchors.find(v => v.a === state.selected); if (x) setT(encode(x.anchor, x.regressed)); };
document.getElementById("ex-zero").onclick = () => setT([0, 0, 0, 0]);
function toggles(id, values, set) {
  const box = document.getElementById(id);
  for (const v of values) { const l = document.createElement("label"); const c = document.createElement("input"); c.type = "checkbox"; c.checked = set.has(v); c.dataset.value = v;
    c.onchange = () => { if (c.checked) set.add(v); else set.delete(v); render(); }; l.appendChild(c); l.append(" " + v + (typeof v === "number" ? "²" : "")); box.appendChild(l); }
}
toggles("ex-sizes", [...new Set(D.shape.map(s => s.size))], state.sizes);
toggles("ex-ratios", [...new Set(D.shape.map(s => s.ratio))], state.ratios);
svg.addEventListener("click", e => { const p = svg.createSVGPoint(); p.x = e.clientX; p.y = e.clientY; const q = p.matrixTransform(svg.getScreenCTM().inverse()); select(q.x, q.y); });
function fromHash() {
  const h = new URLSearchParams(location.hash.replace(/^#/, ""));
  const pick = (key, set, conv) => { if (!h.has(key)) return; set.clear(); h.get(key).split(",").forEach(v => set.add(conv(v)));
    document.querySelectorAll(`#ex-${key} input`).forEach(c => { c.checked = set.has(conv(c.dataset.value)); }); };
  pick("sizes", state.sizes, Number); pick("ratios", state.ratios, String);
  if (h.has("click")) { const [x, y] = h.get("click").split(",").map(Number); select(x, y); }
  else {  // start at the most confident position
    let best = 0; for (let n = 1; n < D.score.length; n++) if (D.score[n] > D.score[best]) best = n;
    const pos = Math.floor(best / D.k); state.i = Math.floor(pos / D.fw); state.j = pos % D.fw; render(); }
  if (h.has("t")) setT(h.get("t").split(",").map(Number));
}
window.addEventListener("hashchange", fromHash);
fromHash();
</script></body></html>
"""
