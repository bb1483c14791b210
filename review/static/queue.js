/* foleyflow review — queue page: row selection and keyboard. */
(function () {
  "use strict";

  var STATUS_KEYS = { "1": "pending_review", "2": "approved", "3": "retake_requested", "4": "omitted" };
  var MEMO = "foleyflow.queue.selected";

  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.row"));
  var current = -1;

  function isTyping(el) {
    if (!el) return false;
    if (el.isContentEditable) return true;
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    if (tag === "INPUT") {
      var t = (el.type || "text").toLowerCase();
      return ["button", "checkbox", "radio", "submit", "reset", "range", "color", "file", "image"].indexOf(t) < 0;
    }
    return false;
  }

  function select(i, scroll) {
    if (!rows.length) return;
    i = Math.max(0, Math.min(rows.length - 1, i));
    if (current >= 0 && rows[current]) {
      rows[current].classList.remove("selected");
      rows[current].removeAttribute("aria-selected");
    }
    current = i;
    var row = rows[i];
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    if (scroll !== false) row.scrollIntoView({ block: "nearest" });
    try { sessionStorage.setItem(MEMO, row.dataset.url); } catch (e) { /* storage off */ }
  }

  function open(i) {
    var row = rows[i];
    if (!row) return;
    try { sessionStorage.setItem(MEMO, row.dataset.url); } catch (e) { /* storage off */ }
    window.location.href = row.dataset.url;
  }

  function pickStatus(status) {
    var tab = document.querySelector('.status-tabs [data-status="' + status + '"]');
    if (tab) window.location.href = tab.getAttribute("href");
  }

  // Start on the row opened last (coming back from a shot), else the first.
  var start = 0;
  try {
    var memo = sessionStorage.getItem(MEMO);
    rows.forEach(function (r, i) { if (r.dataset.url === memo) start = i; });
  } catch (e) { /* storage off */ }
  if (rows.length) select(start, true);

  rows.forEach(function (row, i) {
    row.addEventListener("click", function (ev) {
      if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return; // let the link open a tab
      ev.preventDefault();
      select(i, false);
      open(i);
    });
    row.addEventListener("mouseenter", function () { row.classList.add("hover"); });
    row.addEventListener("mouseleave", function () { row.classList.remove("hover"); });
  });

  document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });

  document.addEventListener("keydown", function (ev) {
    if (ev.defaultPrevented || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    var el = document.activeElement;
    if (isTyping(el)) {
      if (ev.key === "Escape") { el.blur(); ev.preventDefault(); }
      return;
    }
    switch (ev.key) {
      case "j": case "ArrowDown":
        select(current + 1); ev.preventDefault(); break;
      case "k": case "ArrowUp":
        select(current - 1); ev.preventDefault(); break;
      case "Home":
        select(0); ev.preventDefault(); break;
      case "End":
        select(rows.length - 1); ev.preventDefault(); break;
      case "Enter":
        if (el && el !== document.body && (el.tagName === "A" || el.tagName === "BUTTON")) return;
        if (current >= 0) { open(current); ev.preventDefault(); }
        break;
      case "/":
        var reel = document.getElementById("reel-filter");
        if (reel) { reel.focus(); ev.preventDefault(); }
        break;
      default:
        if (STATUS_KEYS[ev.key]) { pickStatus(STATUS_KEYS[ev.key]); ev.preventDefault(); }
    }
  });
})();
