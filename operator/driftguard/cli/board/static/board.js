// The driftguard board's live updates, in plain JavaScript (no build step, no library).
// The server sends rows already rendered and escaped (server-sent events, /events): a row
// is swapped in place, a change of the grid's shape refetches the grid (/grid). Without
// this script every page still works; it only stops being live.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource) {
    return;
  }
  var grid = document.getElementById("grid");
  var stale = document.getElementById("stale");
  var fetching = false;
  var again = false;
  var lost = false;

  function say(text, state) {
    live.textContent = text;
    live.setAttribute("data-live", state);
  }

  function parse(html) {
    var holder = document.createElement("template");
    holder.innerHTML = html.trim(); // markup the server rendered with every value escaped
    return holder.content.firstElementChild;
  }

  function recount() {
    if (!grid) {
      return;
    }
    var total = grid.querySelectorAll("tr[data-health=drifted]").length;
    var count = document.getElementById("drifted-count");
    if (count) {
      count.textContent = String(total);
    }
    grid.querySelectorAll("section.group").forEach(function (section) {
      var mark = section.querySelector(".group-drifted");
      if (mark) {
        mark.textContent = String(section.querySelectorAll("tr[data-health=drifted]").length);
      }
    });
  }

  function refresh() {
    if (!grid) {
      return;
    }
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    var focused = document.activeElement && document.activeElement.getAttribute("href");
    fetch(grid.getAttribute("data-fragment"), { cache: "no-store" })
      .then(function (answer) {
        return answer.ok ? answer.text() : Promise.reject(answer.status);
      })
      .then(function (html) {
        grid.innerHTML = html; // rendered and escaped by the server
        if (focused) {
          var link = grid.querySelector('a[href="' + CSS.escape(focused) + '"]');
          if (link) {
            link.focus();
          }
        }
      })
      .catch(function () {
        say("Live updates: the grid could not be fetched; retrying on the next change.", "lost");
      })
      .finally(function () {
        fetching = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  function replaceRow(event) {
    var data = JSON.parse(event.data);
    var old = document.getElementById(data.id);
    if (!old) {
      return;
    }
    var hadFocus = old.contains(document.activeElement);
    var row = parse(data.html);
    old.replaceWith(row);
    row.classList.add("changed");
    if (hadFocus && row.querySelector("a")) {
      row.querySelector("a").focus();
    }
    if (stale && stale.getAttribute("data-row") === data.id) {
      stale.hidden = false;
    }
    recount();
  }

  var source = new EventSource("/events");
  source.addEventListener("hello", function () {
    say("Live: changes appear as they happen.", "on");
    if (lost) {
      lost = false;
      refresh(); // what changed while the stream was down
    }
  });
  source.addEventListener("error", function () {
    lost = true;
    say("Live updates lost; reconnecting…", "lost");
  });
  source.addEventListener("row", replaceRow);
  source.addEventListener("refresh", refresh);
})();
