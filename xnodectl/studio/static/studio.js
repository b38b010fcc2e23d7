// Xnode Studio: the little JavaScript that works. Every page works without it; this adds the
// live preview while typing, the fleet table's refresh and the deploy's live progress.
"use strict";
const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content;

function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

function livePreview(form) {
  const preview = document.getElementById("preview");
  let seq = 0;
  const update = debounce(async () => {
    const mine = ++seq;
    const data = new URLSearchParams();
    for (const el of form.elements) {
      if (!el.name || el.type === "password" || el.type === "submit") continue;
      if (el.type === "checkbox") { if (el.checked) data.append(el.name, "on"); continue; }
      data.append(el.name, el.value);
    }
    const resp = await fetch(form.dataset.preview, {
      method: "POST", body: data, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin",
    });
    const out = await resp.json();
    if (mine !== seq) return;
    for (const box of form.querySelectorAll("[data-field]")) {
      const name = box.dataset.field;
      const message = (out.fields || {})[name] || "";
      box.classList.toggle("invalid", !!message);
      box.querySelector(".field-error").textContent = message;
      const input = box.querySelector("input, select");
      if (input && input.type !== "checkbox") input.setAttribute("aria-invalid", message ? "true" : "false");
    }
    if (out.html !== undefined) preview.innerHTML = out.html;
    else if (out.error) preview.textContent = out.error;
  }, 200);
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  form.addEventListener("submit", (ev) => {
    const which = ev.submitter ? ev.submitter.value : "";
    if (which === "plan" || which === "deploy") document.getElementById("busy").hidden = false;
  });
}

function fleetRefresh(table) {
  const rows = document.getElementById("fleet-rows");
  const stamp = document.getElementById("fleet-updated");
  const every = Number(table.dataset.refresh) * 1000;
  const load = async () => {
    try {
      const resp = await fetch(table.dataset.src, { credentials: "same-origin" });
      if (resp.ok) {
        rows.innerHTML = await resp.text();
        stamp.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
        table.dataset.loaded = String(Number(table.dataset.loaded || 0) + 1);
      } else {
        stamp.textContent = "Status failed: " + (await resp.json()).error;
      }
    } catch (e) {
      stamp.textContent = "Studio unreachable.";
    }
    setTimeout(load, every);
  };
  load();
}

function fmtBytes(n) {
  if (n === undefined || n === null) return "-";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0; let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}

function deployProgress(table) {
  const state = document.getElementById("run-state");
  const source = new EventSource(table.dataset.events);
  const row = (node) => {
    let tr = table.querySelector(`tr[data-node="${CSS.escape(node)}"]`);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.node = node;
      tr.innerHTML = '<th scope="row"></th><td class="phase"></td><td class="status"></td><td class="bytes"></td><td class="elapsed"></td><td class="outcome"></td>';
      tr.querySelector("th").textContent = node;
      table.tBodies[0].appendChild(tr);
    }
    return tr;
  };
  source.addEventListener("event", (m) => {
    const ev = JSON.parse(m.data);
    const tr = row(ev.node);
    tr.querySelector(".phase").textContent = ev.phase;
    tr.querySelector(".status").textContent = ev.status;
    if (ev.bytes !== undefined) tr.querySelector(".bytes").textContent = fmtBytes(ev.bytes) + (ev.total_bytes ? " / " + fmtBytes(ev.total_bytes) : "");
    tr.querySelector(".elapsed").textContent = ev.elapsed.toFixed(1) + " s";
    if (ev.message) tr.querySelector(".outcome").textContent = ev.message;
    window.studioLastEvent = { event: ev, at: Date.now() };
  });
  source.addEventListener("report", (m) => {
    const rep = JSON.parse(m.data);
    for (const n of rep.nodes) {
      const cell = row(n.node).querySelector(".outcome");
      cell.textContent = n.outcome + (n.error || n.rollback_reason ? " — " + (n.rollback_reason || n.error) : "");
    }
    document.getElementById("report").hidden = false;
    document.getElementById("report-summary").textContent = rep.summary;
  });
  source.addEventListener("end", (m) => {
    const end = JSON.parse(m.data);
    state.textContent = `finished (exit ${end.exit_code})`;
    table.dataset.done = "true";
    document.getElementById("cancel-form").hidden = true;
    if (end.error) { const e = document.getElementById("run-error"); e.textContent = end.error; e.hidden = false; }
    source.close();
  });
}

function imageBuild(log) {
  const state = document.getElementById("build-state");
  const source = new EventSource(log.dataset.events);
  source.addEventListener("log", (m) => { log.textContent += JSON.parse(m.data).line + "\n"; log.scrollTop = log.scrollHeight; });
  source.addEventListener("report", (m) => {
    const image = JSON.parse(m.data).image;
    document.getElementById("image-path").textContent = image.path.split("/").pop();
    document.getElementById("image-size").textContent = fmtBytes(image.size);
    document.getElementById("image-sha256").textContent = image.sha256;
    document.getElementById("image-result").hidden = false;
  });
  source.addEventListener("end", (m) => {
    const end = JSON.parse(m.data);
    state.textContent = `finished (exit ${end.exit_code})`;
    if (end.error) { const e = document.getElementById("build-error"); e.textContent = end.error; e.hidden = false; }
    source.close();
  });
}

async function walletSignIn() {
  // EIP-1193: the browser wallet (window.ethereum) signs the server's EIP-4361 text.
  const status = document.getElementById("signin-status");
  const show = (text) => { status.textContent = text; };
  if (!window.ethereum) { show("No Ethereum wallet in this browser (install one, e.g. MetaMask)."); return; }
  try {
    show("Waiting for the wallet…");
    const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
    const prepared = await fetch("/auth/nonce?address=" + encodeURIComponent(address), { cache: "no-store" });
    const body = await prepared.json();
    if (!prepared.ok) throw new Error(body.error);
    const signature = await window.ethereum.request({ method: "personal_sign", params: [body.message, address] });
    const done = await fetch("/auth/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message: body.message, signature }),
    });
    const result = await done.json();
    if (!done.ok) throw new Error(result.error);
    show("Signed in as " + result.address + ".");
    window.location.assign("/");
  } catch (err) {
    show(String(err && err.message ? err.message : err));
  }
}

async function walletClaim(form) {
  // EIP-1193 again: the studio builds the claim's exact SIWE text (from the node's nonce), the
  // wallet signs it, the studio posts the signature to the node. The password field stays out.
  const status = document.getElementById("claim-status");
  const error = document.getElementById("claim-error");
  const show = (text) => { status.textContent = text; };
  const post = async (url, body) => {
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    const out = await resp.json();
    if (!resp.ok) throw new Error(out.error);
    return out;
  };
  error.textContent = "";
  if (!window.ethereum) {
    error.textContent = "No Ethereum wallet in this browser: sign with the operator keystore below, or install one (e.g. MetaMask).";
    return;
  }
  try {
    show("Waiting for the wallet…");
    const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
    const fields = { address };
    for (const name of ["host", "port", "name", "expect_host_key"]) fields[name] = form.elements[name].value;
    show("Asking the node for a nonce…");
    const prepared = await post(form.dataset.prepare, fields);
    show(`Sign the claim in your wallet: it authorizes ${prepared.ssh_key_fingerprint} on the node with host key ${prepared.host_key_fingerprint}.`);
    const signature = await window.ethereum.request({ method: "personal_sign", params: [prepared.message, prepared.address] });
    show("Sending the signature to the node…");
    const done = await post(form.dataset.prepare + "/" + encodeURIComponent(prepared.id), { signature });
    const link = document.getElementById("claimed-node");
    link.textContent = done.node;
    link.href = "/nodes/" + encodeURIComponent(done.node);
    document.getElementById("claimed-host").textContent = done.host;
    document.getElementById("claimed-owner").textContent = done.address;
    document.getElementById("claimed-fingerprint").textContent = done.host_key_fingerprint;
    document.getElementById("claimed-key").textContent = done.authorized;
    document.getElementById("claim-done").hidden = false;
    show("Claimed " + done.node + ".");
  } catch (err) {
    show("");
    error.textContent = String(err && err.message ? err.message : err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const signin = document.getElementById("wallet-signin");
  if (signin) signin.addEventListener("click", walletSignIn);
  const claim = document.getElementById("claim-form");
  if (claim) document.getElementById("wallet-claim").addEventListener("click", () => walletClaim(claim));
  const form = document.getElementById("template-form");
  if (form) livePreview(form);
  const fleet = document.getElementById("fleet");
  if (fleet) fleetRefresh(fleet);
  const buildLog = document.getElementById("build-log");
  if (buildLog) imageBuild(buildLog);
  const progress = document.getElementById("progress");
  if (progress && !progress.dataset.finished) deployProgress(progress);
});
