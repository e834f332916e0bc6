// The page of `pgmm serve`: choose or drop an image, see its caption, ask questions (answers stream in).
// Plain browser APIs only (fetch, FormData, streams): nothing is loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let image = null;  // the chosen File

function status(text) { $("status").textContent = text || ""; }

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : response.statusText;
  } catch (_) { return `${response.status} ${response.statusText}`; }
}

// POST a multipart request with stream=true and call onPiece for every server-sent "piece" event.
async function streamed(path, fields, onPiece) {
  const form = new FormData();
  form.append("image", image);
  form.append("stream", "true");
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  const response = await fetch(path, { method: "POST", body: form });
  if (!response.ok) throw new Error(await errorText(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const name = (block.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((block.match(/^data: (.*)$/m) || [, "{}"])[1]);
      if (name === "piece") onPiece(data.text);
      else if (name === "error") throw new Error(data.message);
      else if (name === "done") return data;
    }
  }
}

async function caption() {
  $("caption").textContent = "";
  $("answer").textContent = "";
  status("captioning…");
  try {
    const done = await streamed("/v1/caption", {}, (piece) => { $("caption").textContent += piece; });
    if (done && done.caption !== undefined) $("caption").textContent = done.caption;
    $("caption").dataset.done = "true";
    status("");
  } catch (error) { status(error.message); }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!image || !question) { status(image ? "type a question first" : "choose an image first"); return; }
  $("answer").textContent = "";
  delete $("answer").dataset.done;
  status("thinking…");
  try {
    await streamed("/v1/ask", { question }, (piece) => { $("answer").textContent += piece; });
    $("answer").dataset.done = "true";
    status("");
  } catch (error) { status(error.message); }
}

function choose(file) {
  if (!file) return;
  image = file;
  delete $("caption").dataset.done;
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("ask-button").disabled = false;
  caption();
}

async function describe() {
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) throw new Error(await errorText(response));
    const model = await response.json();
    const parts = Object.values(model.components).filter(Boolean).join(" · ");
    $("model-info").textContent = `${model.run} (step ${model.checkpoint.step}) — ${parts}`;
    if (!model.ask.available) {
      $("question").placeholder = `questions unavailable: ${model.ask.reason}`;
      $("question").disabled = true;
    }
  } catch (error) { $("model-info").textContent = error.message; }
}

window.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => choose(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  $("ask-form").addEventListener("submit", ask);
  describe();
});
