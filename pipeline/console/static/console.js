/* sfamp console: the little the pages need beyond htmx. No inline scripts anywhere:
   the Content-Security-Policy allows only files served by the console itself. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function showNotice(text) {
    var notice = document.getElementById("notice");
    if (!notice) { return; }
    notice.textContent = text;
    notice.hidden = !text;
  }

  /* Every htmx request carries the session's CSRF token (forms also carry it as a field). */
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  /* A refused request (403, 422, 5xx) answers one line of text: show it. */
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    showNotice((xhr.responseText || ("request failed: " + xhr.status)).split("\n")[0]);
  });
  document.addEventListener("htmx:sendError", function () {
    showNotice("the console did not answer; is sfamp console still running?");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) { showNotice(""); }
  });

  /* A control whose message span is not empty is marked invalid for screen readers. */
  function markInvalid() {
    document.querySelectorAll(".field-error").forEach(function (span) {
      document.querySelectorAll('[aria-describedby~="' + span.id + '"]').forEach(function (control) {
        if (span.textContent.trim()) {
          control.setAttribute("aria-invalid", "true");
        } else {
          control.removeAttribute("aria-invalid");
        }
      });
    });
  }
  document.addEventListener("htmx:afterSettle", markInvalid);

  /* Every answer of the Mapping setup form says whether the form validates (the
     HX-Trigger-After-Swap header): Next follows it on the same button, never a new one,
     so a click on Next is never lost to a swap. */
  document.addEventListener("sfamp-validated", function (event) {
    var next = document.getElementById("next");
    if (next) { next.disabled = !(event.detail && event.detail.valid === true); }
    markInvalid();
  });

  /* Edits of the Mapping setup form live in the page until Next or Save: leaving it
     (a link, Back, a reload, closing the tab) with some unsent asks first. Submitting
     any form (Next, Import, Save) is leaving on purpose. */
  function inForm(node) {
    return node instanceof Element && node.closest("#mapping-form, #import-form") !== null;
  }
  /* A page drawn from an import or a draft holds edits not sent on yet too. */
  var drawn = document.getElementById("mapping-form");
  var unsent = !!(drawn && drawn.hasAttribute("data-unsent"));
  document.addEventListener("input", function (event) {
    if (inForm(event.target)) { unsent = true; }
  });
  document.addEventListener("change", function (event) {
    if (inForm(event.target)) { unsent = true; }
  });
  /* An addition or a removal (a button's request), an import swapped in. */
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful && inForm(event.detail.elt)) { unsent = true; }
  });
  document.addEventListener("submit", function () { unsent = false; });
  window.addEventListener("beforeunload", function (event) {
    if (!unsent) { return; }
    event.preventDefault();
    event.returnValue = "";
  });

  /* After an addition or a removal the keyboard moves on (the HX-Trigger-After-Swap
     header names where): to the new part's first control, or to the button that adds
     one again when the one pressed was removed. */
  document.addEventListener("sfamp-focus", function (event) {
    var ids = (event.detail && event.detail.ids) || [];
    for (var i = 0; i < ids.length; i += 1) {
      var control = document.getElementById(ids[i]);
      if (control && !control.disabled) { control.focus(); return; }
    }
  });

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var ok = document.execCommand("copy");
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var copy = target && target.closest("[data-copy]");
    if (copy) {
      var source = document.getElementById(copy.getAttribute("data-copy"));
      var status = document.getElementById("copy-status");
      copyText(source ? source.textContent : "").then(function () {
        if (status) { status.textContent = "Config copied to the clipboard."; }
      }, function () {
        if (status) { status.textContent = "The browser refused the clipboard: use Export config."; }
      });
      return;
    }
    /* Export downloads the form's mapping; the CSRF token stays out of the URL. */
    var exporter = target && target.closest("#export-config");
    if (exporter) {
      var form = document.getElementById(exporter.getAttribute("form"));
      if (!form) { return; }
      event.preventDefault();
      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (name !== "csrf_token" && typeof value === "string") { params.append(name, value); }
      });
      var link = document.createElement("a");
      link.href = exporter.getAttribute("formaction") + "?" + params.toString();
      link.download = "sfamp-mapping.json";
      document.body.appendChild(link);
      link.click();
      document.body.removeChild(link);
    }
  });
})();
