// rollwave dashboard: keeps the page's main part current without reloading. The server
// says on /dashboard/live (Server-Sent Events) when something changed; this script then
// fetches the page again as a fragment (?fragment=1) and swaps it in, at most a few
// times a second. Without JavaScript the pages are the same, only still.
(function () {
  "use strict";
  var main = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!main || !main.dataset.stream || !window.EventSource || !window.fetch) {
    return;
  }
  var DEBOUNCE_MS = 250;
  var timer = null;
  var busy = false;
  var again = false;

  function say(text, cls) {
    if (status) {
      status.textContent = text;
      status.className = "live-status " + cls;
    }
  }

  function openDetails() {
    var open = [];
    main.querySelectorAll("details[id][open]").forEach(function (d) { open.push(d.id); });
    return open;
  }

  // A form the reader has started filling in (a stage chosen, a field focused) is not
  // replaced under them: updates wait until they leave the page or the field.
  var edited = false;
  main.addEventListener("change", function () { edited = true; });
  main.addEventListener("input", function () { edited = true; });
  function editing() {
    var active = document.activeElement;
    var focused = active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
    return edited || focused;
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    if (editing()) {
      say("paused while you edit", "paused");
      clearTimeout(timer);
      timer = setTimeout(refresh, 1000);
      return;
    }
    busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var open = openDetails();
        main.innerHTML = html;
        open.forEach(function (id) {
          var d = document.getElementById(id);
          if (d) { d.open = true; }
        });
        main.dataset.refreshed = String(Date.now());
        say("live", "live");
      })
      .catch(function () { say("offline: reload to retry", "offline"); })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          schedule();
        }
      });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, DEBOUNCE_MS);
  }

  var source = new EventSource(main.dataset.stream);
  source.addEventListener("changed", schedule);
  source.onopen = function () { say("live", "live"); };
  source.onerror = function () { say("reconnecting…", "offline"); };
})();
