"""The web page `mitp serve` shows at ``/``: drop an image, type a sentence, see the top labels.

Plain HTML and a little JavaScript, no framework: it posts the form to ``/predict`` and draws a
bar per label; for prompt methods it also asks ``/explain`` for the hub's similarity figure.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mitp</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  #model { color: #666; margin-top: 0; }
  #drop { border: 2px dashed #999; border-radius: 8px; padding: 1.2rem; text-align: center; cursor: pointer; }
  #drop.over { border-color: #2a6; background: #f2fbf5; }
  #preview { max-width: 12rem; max-height: 12rem; display: none; margin: .6rem auto 0; }
  input[type=text] { width: 100%; padding: .5rem; font-size: 1rem; box-sizing: border-box; margin: .8rem 0; }
  button { padding: .5rem 1.2rem; font-size: 1rem; }
  .row { display: flex; align-items: center; margin: .3rem 0; }
  .name { width: 11rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar { height: 1.1rem; background: #2a6; margin: 0 .5rem; }
  #error { color: #b00; }
  #explain { max-width: 100%; margin-top: 1rem; display: none; }
</style>
</head>
<body>
<h1>mitp</h1>
<p id="model">loading...</p>
<form id="form">
  <div id="drop">Drop an image here, or click to choose one
    <input id="image" name="image" type="file" accept="image/*" hidden>
    <img id="preview" alt="the chosen image">
  </div>
  <input id="text" name="text" type="text" placeholder="A sentence about the image" required>
  <label>top <input id="top_k" name="top_k" type="number" value="5" min="1" style="width:4rem"></label>
  <button id="submit" type="submit">Classify</button>
</form>
<p id="error"></p>
<div id="results"></div>
<img id="explain" alt="the hub's similarity and the attention on prompts">
<script>
const $ = (id) => document.getElementById(id);
let explains = false;
fetch("/health").then(r => r.json()).then(h => {
  $("model").textContent = h.method + " on " + h.backbone;
  explains = h.explain;
});
$("drop").addEventListener("click", () => $("image").click());
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault(); $("drop").classList.remove("over");
  if (e.dataTransfer.files.length) { $("image").files = e.dataTransfer.files; show(); }
});
$("image").addEventListener("change", show);
// why a request failed: the server's JSON detail, else its status and the start of its text
async function failure(reply) {
  const text = await reply.text();
  try {
    const detail = JSON.parse(text).detail;
    return typeof detail === "string" ? detail : JSON.stringify(detail);
  } catch {
    return reply.status + " " + reply.statusText + (text ? ": " + text.slice(0, 200) : "");
  }
}
function show() {
  const file = $("image").files[0];
  if (file) { $("preview").src = URL.createObjectURL(file); $("preview").style.display = "block"; }
}
$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("error").textContent = ""; $("results").innerHTML = ""; $("explain").style.display = "none";
  if (!$("image").files.length) { $("error").textContent = "image: choose an image first"; return; }
  const body = new FormData($("form"));
  let reply;
  try { reply = await fetch("/predict", { method: "POST", body }); }
  catch (err) { $("error").textContent = "the server did not answer (" + err.message + ")"; return; }
  if (!reply.ok) { $("error").textContent = await failure(reply); return; }
  const data = await reply.json();
  for (const p of data.predictions) {
    const row = document.createElement("div"); row.className = "row prediction";
    row.innerHTML = '<span class="name"></span><span class="bar"></span><span class="score"></span>';
    row.querySelector(".name").textContent = p.label;
    row.querySelector(".bar").style.width = (p.score * 20) + "rem";
    row.querySelector(".score").textContent = (100 * p.score).toFixed(1) + "%";
    $("results").appendChild(row);
  }
  if (explains) {
    const form = new FormData(); form.append("image", $("image").files[0]); form.append("text", $("text").value);
    const figure = await fetch("/explain", { method: "POST", body: form });
    if (figure.ok) {
      $("explain").src = URL.createObjectURL(await figure.blob()); $("explain").style.display = "block";
    } else {
      $("error").textContent = "no explanation: " + await failure(figure);
    }
  }
});
</script>
</body>
</html>
"""
