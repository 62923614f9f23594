/* jobyard console: small progressive enhancements over server-rendered pages.
 * Local times, copy buttons, dialogs, confirmations, repeatable rows, the cron
 * generation tool and live logs. No inline script anywhere (strict CSP). */
(function () {
  "use strict";

  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const parts = new Intl.DateTimeFormat("en-GB", {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZone: zone,
  });
  const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

  function localText(date) {
    const p = {};
    for (const part of parts.formatToParts(date)) p[part.type] = part.value;
    return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
  }

  function relativeText(date) {
    const seconds = Math.round((date.getTime() - Date.now()) / 1000);
    const steps = [[60, "second"], [60, "minute"], [24, "hour"], [365, "day"]];
    let value = seconds;
    for (const [size, unit] of steps) {
      if (Math.abs(value) < size) return relative.format(value, unit);
      value = Math.round(value / size);
    }
    return relative.format(value, "year");
  }

  function localizeTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) {
      const date = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(date.getTime())) continue;
      el.textContent = el.dataset.style === "relative" ? relativeText(date) : localText(date);
      el.title = `${localText(date)} ${zone} · ${el.getAttribute("datetime")}`;
    }
    for (const el of root.querySelectorAll("[data-local-zone]")) el.textContent = zone;
  }

  // -- copy, dialogs, confirmations, autosubmit -----------------------------------------

  async function copy(button) {
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = "value" in source ? source.value : source.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  }

  document.addEventListener("click", (event) => {
    const target = event.target.closest("[data-copy], [data-dialog], [data-close-dialog], " +
      "[data-add-row], [data-remove-row], [data-use-local-zone], [data-gen-use], [data-bulk-add]");
    if (!target) return;
    if (target.matches("[data-copy]")) copy(target);
    else if (target.matches("[data-dialog]")) openDialog(event, target);
    else if (target.matches("[data-close-dialog]")) closeDialog(event, target);
    else if (target.matches("[data-add-row]")) addRow(target.closest("[data-rows]"));
    else if (target.matches("[data-remove-row]")) target.closest("[data-row]").remove();
    else if (target.matches("[data-use-local-zone]")) setField("timezone", zone);
    else if (target.matches("[data-gen-use]")) useGenerated(target);
    else if (target.matches("[data-bulk-add]")) bulkAdd(target);
  });

  function openDialog(event, link) {
    const dialog = document.getElementById(link.dataset.dialog);
    if (!dialog || typeof dialog.showModal !== "function") return;
    event.preventDefault();
    dialog.showModal();
    const first = dialog.querySelector("input:not([type=hidden]), button");
    if (first) first.focus();
  }

  function closeDialog(event, element) {
    const dialog = element.closest("dialog");
    if (!dialog) return;
    event.preventDefault();
    dialog.close();
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  document.addEventListener("change", (event) => {
    const el = event.target;
    if (el.matches("[data-autosubmit]") && el.form) el.form.requestSubmit();
    if (el.form) updateShown(el.form);
    if (el.closest("[data-generator]")) updateGenerator(el.closest("[data-generator]"));
  });

  // -- repeatable rows (environment variables, shard names) ------------------------------

  function addRow(rows, value) {
    const template = rows.querySelector("template[data-row-template]");
    const row = template.content.firstElementChild.cloneNode(true);
    rows.insertBefore(row, template);
    const input = row.querySelector("input");
    if (value !== undefined) input.value = value;
    else input.focus();
    return row;
  }

  function bulkAdd(button) {
    const editor = button.closest(".shard-editor");
    const area = editor.querySelector("[data-bulk-shards]");
    const rows = editor.querySelector("[data-rows]");
    const names = area.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
    for (const name of names) addRow(rows, name);
    area.value = "";
  }

  function setField(name, value) {
    const input = document.querySelector(`[name="${name}"]`);
    if (!input) return;
    input.value = value;
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // -- parts of a form shown only for some choices -------------------------------------

  function valueOf(form, name) {
    const controls = [...form.querySelectorAll(`[name="${name}"]`)];
    const checked = controls.find((c) => (c.type === "radio" || c.type === "checkbox") && c.checked);
    if (checked) return checked.value;
    const other = controls.find((c) => c.type !== "radio" && c.type !== "checkbox");
    return other ? other.value : "";
  }

  function updateShown(form) {
    for (const el of form.querySelectorAll("[data-show-when]")) {
      const [name, value] = el.dataset.showWhen.split("=");
      el.hidden = valueOf(form, name) !== value;
    }
  }

  // -- cron generation tool ---------------------------------------------------------------

  function generated(box) {
    const get = (name) => box.querySelector(`[data-gen="${name}"]`);
    const every = get("every").value;
    const [hour, minute] = (get("time").value || "09:00").split(":").map((n) => String(Number(n)));
    if (every === "minutes") return `*/${get("step").value} * * * *`;
    if (every === "hourly") return `${Number(get("minute").value) || 0} * * * *`;
    if (every === "daily") return `${minute} ${hour} * * *`;
    if (every === "monthly") return `${minute} ${hour} ${get("dom").value} * *`;
    const days = [...box.querySelectorAll('[data-gen="day"]:checked')].map((c) => c.value);
    return `${minute} ${hour} * * ${days.length ? days.join(",") : "*"}`;
  }

  function updateGenerator(box) {
    const every = box.querySelector('[data-gen="every"]').value;
    for (const el of box.querySelectorAll("[data-gen-for]")) {
      el.hidden = !el.dataset.genFor.split(" ").includes(every);
    }
    box.querySelector("[data-gen-out]").textContent = generated(box);
  }

  function useGenerated(button) {
    const box = button.closest("[data-generator]");
    setField("schedule", generated(box));
    box.open = false;
  }

  // -- live logs ------------------------------------------------------------------------

  async function follow(pre) {
    const panel = pre.closest("#log-panel");
    const state = panel.querySelector("[data-log-state]");
    const scroll = panel.querySelector("[data-log-autoscroll]");
    state.textContent = "following live…";
    try {
      const response = await fetch(`${pre.dataset.logUrl}?follow=true`, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      pre.textContent = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pre.append(value);
        if (scroll && scroll.checked) pre.scrollTop = pre.scrollHeight;
      }
      state.textContent = "ended";
      panel.dataset.ended = "true";
    } catch (error) {
      state.textContent = `log stream interrupted (${error.message}); reload to see the rest`;
    }
  }

  function startWaitingLog(summary) {
    const panel = document.getElementById("log-panel");
    if (!panel || !panel.hasAttribute("data-waiting")) return;
    const row = summary.querySelector("[data-instance-id][data-live]") ||
      summary.querySelector("[data-instance-id]");
    if (!row) return;
    panel.removeAttribute("data-waiting");
    const pre = panel.querySelector("#log");
    pre.dataset.logUrl = `/api/v1/instances/${row.dataset.instanceId}/logs`;
    panel.querySelector("h2").textContent =
      `Log · instance ${row.dataset.index}, attempt ${row.dataset.attempt}`;
    follow(pre);
  }

  // -- start ------------------------------------------------------------------------------

  function enhance(root) {
    localizeTimes(root);
    for (const form of root.querySelectorAll("form")) updateShown(form);
    for (const box of root.querySelectorAll("[data-generator]")) updateGenerator(box);
    if (root.id === "task-summary") startWaitingLog(root);
  }

  document.addEventListener("DOMContentLoaded", () => {
    enhance(document);
    const pre = document.querySelector("#log[data-follow][data-log-url]");
    if (pre) follow(pre);
    const summary = document.getElementById("task-summary");
    if (summary) startWaitingLog(summary);
    const invalid = document.querySelector("form [aria-invalid=true]");
    if (invalid) invalid.focus();
  });
  document.addEventListener("htmx:load", (event) => enhance(event.detail.elt));
})();
