(function () {
  "use strict";
  var form = document.getElementById("ask-form");
  if (!form || !window.fetch || !window.TextDecoder) return;  // the plain form post still works
  var live = document.getElementById("live");
  var statusLine = document.getElementById("live-status");
  var answer = document.getElementById("live-answer");
  var reasoning = document.getElementById("live-reasoning");
  var reasoningBox = document.getElementById("live-reasoning-box");
  var errorLine = document.getElementById("live-error");
  var button = document.getElementById("ask-button");
  var conversation = document.getElementById("id_conversation");
  var question = document.getElementById("id_question");
  var stopButton = document.getElementById("stop-button");
  var scope = document.getElementById("id_scope");  // Esc there closes its list of folders
  var asked = null, askedAt = null, stopWanted = false;  // the question being answered (its id), and whether to stop it
  var answering = false;
  var found = "";  // the passages packed for the question being answered, as the status line says them

  function copyButtons(root) {
    root.querySelectorAll("[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () {
        var said = b.parentNode.querySelector(".copied");
        navigator.clipboard.writeText(b.getAttribute("data-copy")).then(function () {
          if (said) said.textContent = "Copied.";
        }, function () { if (said) said.textContent = "Copying is not allowed here."; });
      });
    });
  }
  copyButtons(document);

  function revealMarks(root) {  // each passage box scrolls to its first quoted words
    root.querySelectorAll(".panel .passage").forEach(function (box) {
      var mark = box.querySelector("mark");
      if (mark) box.scrollTop = Math.max(0, mark.offsetTop - 16);  // the box is positioned: offsets are inside it
    });
  }
  revealMarks(document);

  question.addEventListener("keydown", function (e) {  // Ctrl+Enter (or Cmd+Enter) asks
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });

  function stop() {  // the server hangs up on the model and records what was written; the stream then ends
    if (stopButton.hidden || stopWanted) return;
    stopWanted = true;
    stopButton.disabled = true;
    stopButton.textContent = "Stopping…";
    statusLine.textContent = "Stopping…";
    if (asked !== null) sendStop();  // else it is not recorded yet: stopped as soon as its id comes
  }

  function sendStop() {
    var token = form.querySelector("[name=csrfmiddlewaretoken]").value, which = asked;
    fetch(form.getAttribute("data-block") + which + "/stop", {method: "POST", credentials: "same-origin",
                                                             headers: {"X-CSRFToken": token}, redirect: "manual"})
      .then(function (r) {
        if (which !== asked) return;  // an earlier question's reply
        if (r.status === 409) statusLine.textContent = "Finishing (it was already complete)…";
        else if (r.type === "opaqueredirect") throw new Error("you are signed out");
        else if (!r.ok) throw new Error("the server answered " + r.status);
      })
      .catch(function (err) {
        if (which !== asked) return;
        statusLine.textContent = "Could not stop: " + err.message + ".";
        stopWanted = false;
        stopButton.disabled = false;
        stopButton.textContent = "Stop";
      });
  }
  stopButton.addEventListener("click", stop);
  document.addEventListener("keydown", function (e) {  // Esc stops, unless it closes something else first
    if (e.key === "Escape" && !e.isComposing && !e.defaultPrevented && document.activeElement !== scope) stop();
  });
  window.addEventListener("beforeunload", function (e) {  // leaving the page stops the answer
    if (answering) { e.preventDefault(); e.returnValue = ""; }
  });

  function finish(ok) {
    answering = false;
    stopButton.hidden = true;
    button.disabled = false;
    button.textContent = "Ask";
    if (ok) { question.value = ""; }
    question.focus();
  }

  function passages(n) { return Number(n).toLocaleString() + (Number(n) === 1 ? " passage" : " passages"); }

  function fieldErrors(errors) {  // {"budget": ["Ensure this value is ..."]} -> "Budget: Ensure this value is ..."
    return Object.keys(errors).map(function (field) {
      var name = field === "__all__" ? "" : field.charAt(0).toUpperCase() + field.slice(1) + ": ";
      return name + errors[field].join(" ");
    }).join(" ") || "The question could not be sent as it is.";
  }

  function said(status) {  // the stream's status in the asker's words
    var packed = /^packed (\d+) sources \/ (\d+) tokens$/.exec(status);
    if (packed) {  // the last word without a model; with one, followed at once by "generating"
      found = passages(packed[1]) + " (" + Number(packed[2]).toLocaleString() + " tokens)";
      return "Found " + found + "…";
    }
    if (status === "retrieving") return "Searching the matter…";
    if (status === "generating")
      return (found ? "Sent " + found + " to the model; waiting for it" : "Waiting for the model") +
             " to begin (it reads the passages first)…";
    if (status.indexOf("retrying with low effort") !== -1)
      return "The model ran out of room while thinking; asking it again at low effort…";
    return status.charAt(0).toUpperCase() + status.slice(1) + "…";
  }

  function handle(name, data) {
    if (name === "asked") {
      asked = data.question;
      askedAt = data.asked_at || null;
      if (stopWanted) sendStop();
    } else if (name === "status") {
      if (!stopWanted) statusLine.textContent = said(data.text);
    } else if (name === "token") {
      answer.textContent += data.text;
      if (!stopWanted) statusLine.textContent = "Writing…";
    } else if (name === "reasoning") {
      reasoning.textContent += data.text;
      reasoningBox.hidden = false;
      if (!stopWanted) statusLine.textContent = "The model is thinking…";
    } else if (name === "error") {
      stopButton.hidden = true;  // nothing left to stop
      // The question was recorded in a thread: a follow-up continues it.
      if (data.conversation) enterConversation(data.conversation);
      errorLine.textContent = data.message;
      errorLine.hidden = false;
      statusLine.textContent = "";
      // Its turn shows the error, and the passages found when it was the model that failed.
      if (data.question) return showTurn(data.question).catch(function () {});  // else the live error stays
    } else if (name === "done") {
      stopButton.hidden = true;
      enterConversation(data.conversation);
      return showTurn(data.question);
    }
  }

  function enterConversation(id) {
    if (String(conversation.value) !== String(id)) {  // a new conversation: list it
      var list = document.getElementById("history-list"), item = document.createElement("li"),
          link = document.createElement("a");
      link.href = form.getAttribute("data-conversation-base") + id + "/";
      var text = document.getElementById("live-question").textContent;
      link.textContent = text.length > 60 ? text.slice(0, 59) + "…" : text;  // as the server cuts it
      link.setAttribute("aria-current", "page");
      item.appendChild(link);
      var when = document.createElement("span");  // when it was asked, as the server writes it (UTC)
      when.className = "muted";
      when.textContent = (askedAt || new Date().toISOString()).slice(5, 16).replace("T", " ");
      item.appendChild(document.createTextNode(" "));
      item.appendChild(when);
      list.querySelectorAll(".muted:only-child").forEach(function (n) { n.remove(); });
      list.querySelectorAll("[aria-current]").forEach(function (n) { n.removeAttribute("aria-current"); });
      list.insertBefore(item, list.firstChild);
    }
    conversation.value = id;
    history.replaceState(null, "", form.getAttribute("data-conversation-base") + id + "/");
    document.querySelector('label[for="id_question"]').textContent = "Follow-up question";
  }

  function markConversation(ended) {  // the list's badge for this conversation, as the server writes it
    var item = document.querySelector("#history-list a[aria-current]");
    if (!item) return;
    item.parentNode.querySelectorAll(".badge").forEach(function (n) {
      if (n.previousSibling && n.previousSibling.nodeType === 3) n.previousSibling.remove();  // its space
      n.remove();
    });
    if (!ended) return;
    var badge = document.createElement("span");
    badge.className = ended === "failed" ? "badge bad" : "badge";
    badge.title = ended === "failed" ? "its last question failed" : "its last question was stopped";
    badge.textContent = ended;
    item.after(document.createTextNode(" "), badge);
  }

  function showTurn(id) {  // the recorded turn, rendered by the server, in place of the live one
    return fetch(form.getAttribute("data-block") + id + "/", {credentials: "same-origin"})
        .then(function (r) { if (!r.ok) throw new Error("the server answered " + r.status); return r.text(); })
        .then(function (html) {
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var block = holder.firstElementChild;
          var kept = reasoning.textContent;
          if (kept && !block.querySelector(".reasoning")) {  // shown while it streamed; not stored
            var d = document.createElement("details");
            d.className = "reasoning";
            d.innerHTML = "<summary>Reasoning (shown once, not stored)</summary><div class=\"passage\"></div>";
            d.querySelector(".passage").textContent = kept;
            block.querySelector(".turn-main").appendChild(d);
          }
          document.getElementById("turns").appendChild(block);
          markConversation(block.getAttribute("data-ended"));
          copyButtons(block);
          revealMarks(block);
          live.hidden = true;
        });
  }

  form.addEventListener("submit", function (e) {
    if (answering) { e.preventDefault(); return; }  // one answer at a time (Ctrl+Enter while one comes)
    if (!question.value.trim()) return;
    e.preventDefault();
    answering = true;
    button.disabled = true;
    button.textContent = "Working…";
    document.getElementById("live-question").textContent = question.value;
    answer.textContent = ""; reasoning.textContent = ""; reasoningBox.hidden = true; reasoningBox.open = false;
    errorLine.hidden = true; statusLine.textContent = "Sending…";
    asked = null; stopWanted = false; found = ""; askedAt = null;
    stopButton.hidden = false; stopButton.disabled = false; stopButton.textContent = "Stop";
    live.hidden = false;
    live.scrollIntoView({block: "nearest"});  // the answer is watched as it comes
    var ok = false;
    fetch(form.getAttribute("data-stream"), {method: "POST", body: new FormData(form), credentials: "same-origin",
                                            headers: {"Accept": "text/event-stream"}, redirect: "manual"})
      .then(function (response) {
        if (response.type === "opaqueredirect") {  // sent to the sign-in page: the session ended
          throw {told: "You are signed out (your session ended): sign in again, then ask."};
        }
        if (response.status === 403) {  // the form's security token is stale: signed in again elsewhere
          throw {told: "This page is out of date (you signed in again since it was opened): reload it, then ask again."};
        }
        var json = (response.headers.get("Content-Type") || "").indexOf("application/json") === 0;
        if (response.status === 400 && json) {  // the form's own fields: said as the no-JavaScript page says them
          return response.json().then(function (body) { throw {told: fieldErrors(body.errors || {})}; });
        }
        if (!response.ok || !response.body) throw new Error("the server answered " + response.status);
        var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "", pending = [];
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) return Promise.all(pending);
            buffer += decoder.decode(chunk.value, {stream: true});
            var parts = buffer.split("\n\n");
            buffer = parts.pop();
            parts.forEach(function (block) {
              var name = "message", data = "";
              block.split("\n").forEach(function (line) {
                if (line.indexOf("event: ") === 0) name = line.slice(7);
                else if (line.indexOf("data: ") === 0) data += line.slice(6);
              });
              if (!data) return;
              if (name === "done") ok = JSON.parse(data).mode !== "stopped";  // a stopped question stays in the box
              var p = handle(name, JSON.parse(data));
              if (p) pending.push(p);
            });
            return pump();
          });
        }
        return pump();
      })
      .catch(function (err) {
        errorLine.textContent = err.told || ("The answer could not be fetched: " + err.message + ". Try again.");
        errorLine.hidden = false;
        statusLine.textContent = "";
      })
      .then(function () { finish(ok); });
  });
})();
