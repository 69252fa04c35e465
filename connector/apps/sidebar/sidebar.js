/* Deskroute's ticket sidebar: the routing decision in one line, the two runner-ups as one-click moves,
 * and "Wrong? tell us why". Shared by the Zendesk and the Freshdesk app; each hands mount() an adapter:
 *
 *   context()                  -> Promise of {ticketId, agentId}
 *   getDecision(ticketId)      -> Promise of {ok, status, data}   (never rejects: a failure is ok=false)
 *   postFeedback(ticketId, b)  -> Promise of {ok, status, data}
 *   routeTo(groupId)           -> Promise, rejected when the helpdesk refuses
 *   saveHint                   what the agent does to keep a group change ("Submit the ticket ...")
 *   resize()                   optional: fit the helpdesk's frame to the content
 *
 * The page is built with textContent only: the reason quotes words of the ticket.
 */
(function (global) {
  "use strict";

  var TEXT = {
    loading: "Loading Deskroute's decision\u2026",
    notRouted: "Deskroute hasn't routed this ticket.",
    refused: "Deskroute refused this app's credentials. Ask your admin to paste the token `deskroute app` printed for this helpdesk into the app's settings.",
    unreachable: "Couldn't reach Deskroute",
    noContext: "Couldn't read this ticket from the helpdesk.",
    retry: "Try again",
    alternatives: "Other likely groups",
    right: "Right",
    wrong: "Wrong? tell us why",
    category: "Right category",
    choose: "Choose\u2026",
    comment: "Why? (optional)",
    send: "Send",
    sending: "Sending\u2026",
    cancel: "Cancel",
    needCategory: "Choose the right category first.",
    thanksRight: "Thanks, noted.",
    thanksWrong: "Thanks, sent. A team lead reviews it before Deskroute learns from it.",
    groupSet: "Group set to ",
    groupFailed: "Couldn't change the group: ",
    rerouted: "Re-routed by an agent"
  };

  function h(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (key) {
      var value = props[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key.indexOf("on") === 0) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    });
    (children || []).forEach(function (child) {
      if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function titleOf(name) {
    var words = String(name || "").replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function percent(value) {
    var share = Math.round((Number(value) || 0) * 100);
    return share === 0 && Number(value) > 0 ? "<1%" : share + "%";
  }

  function errorText(response) {
    var data = response && response.data;
    if (data && typeof data.error === "string" && data.error) return data.error;
    return TEXT.unreachable + (response && response.status ? " (HTTP " + response.status + ")." : ".");
  }

  function Sidebar(root, adapter) {
    this.root = root;
    this.adapter = adapter;
    this.ticketId = null;
    this.agentId = null;
    this.decision = null;
  }

  Sidebar.prototype.show = function (nodes, busy) {
    var root = this.root;
    while (root.firstChild) root.removeChild(root.firstChild);
    nodes.forEach(function (node) { if (node) root.appendChild(node); });
    root.setAttribute("aria-busy", busy ? "true" : "false");
    if (this.adapter.resize) {
      try { this.adapter.resize(); } catch (ignored) { /* a frame that can't resize still works */ }
    }
  };

  Sidebar.prototype.message = function (text, kind, retry) {
    var self = this;
    var note = h("p", {id: "dr-message", className: "dr-message dr-" + kind,
                       role: kind === "error" ? "alert" : "status", text: text});
    var again = retry ? h("button", {type: "button", id: "dr-retry", className: "dr-secondary", text: TEXT.retry,
                                     onclick: function () { self.load(); }}) : null;
    this.show([note, again], kind === "loading");
  };

  Sidebar.prototype.start = function () {
    var self = this;
    this.message(TEXT.loading, "loading");
    return Promise.resolve()
      .then(function () { return self.adapter.context(); })
      .then(function (context) {
        self.ticketId = String(context.ticketId);
        self.agentId = context.agentId === null || context.agentId === undefined ? null : String(context.agentId);
        return self.load();
      }, function () { self.message(TEXT.noContext, "error", false); });
  };

  Sidebar.prototype.load = function () {
    var self = this;
    this.message(TEXT.loading, "loading");
    return this.adapter.getDecision(this.ticketId).then(function (response) {
      if (response.ok && response.data) {
        self.render(response.data);
      } else if (response.status === 404) {
        var said = response.data && typeof response.data.error === "string" ? response.data.error : "";
        self.message(said ? said.replace(/\.?$/, ".") : TEXT.notRouted, "notice", false);
      } else if (response.status === 401 || response.status === 403) {
        self.message(TEXT.refused, "error", false);
      } else {
        self.message(errorText(response), "error", true);
      }
    });
  };

  Sidebar.prototype.render = function (decision) {
    var self = this;
    this.decision = decision;
    var summary = decision.summary || [decision.category ? titleOf(decision.category) : "Sent to triage",
                                       percent(decision.confidence), decision.tier, decision.reason]
      .filter(Boolean).join(" \u00b7 ");
    var head = h("section", {className: "dr-decision" + (decision.triage ? " dr-triage" : ""),
                             "aria-label": "Deskroute's decision"}, [
      h("p", {id: "dr-summary", className: "dr-summary", text: summary})
    ]);
    var reroutes = decision.reroutes || [];
    if (reroutes.length) {
      var last = reroutes[reroutes.length - 1];
      head.appendChild(h("p", {className: "dr-meta", id: "dr-rerouted",
                               text: TEXT.rerouted + (last.category ? " to " + titleOf(last.category) : "") + "."}));
    }

    // Where the ticket is now: the last re-route's group, else Deskroute's. A move there would change nothing.
    var now = reroutes.length ? reroutes[reroutes.length - 1].to_group_id : decision.group_id;
    var current = now === null || now === undefined ? null : String(now);
    var alternatives = (decision.runner_ups || []).filter(function (runnerUp) {
      return runnerUp.group_id !== null && runnerUp.group_id !== undefined && String(runnerUp.group_id) !== current;
    }).slice(0, 2);
    var moves = alternatives.length ? h("div", {className: "dr-moves", role: "group", "aria-label": TEXT.alternatives},
      alternatives.map(function (runnerUp) {
        var title = runnerUp.title || titleOf(runnerUp.category);
        return h("button", {type: "button", className: "dr-route", "data-group-id": String(runnerUp.group_id),
                            "data-category": runnerUp.category,
                            onclick: function (event) { self.route(event.currentTarget, runnerUp.group_id, title); }},
                 ["Route to " + title + " ", h("span", {className: "dr-pct", text: percent(runnerUp.confidence)})]);
      })) : null;

    this.status = h("p", {id: "dr-status", className: "dr-status", role: "status", "aria-live": "polite"});
    this.show([head, moves, this.feedbackControls(decision), this.status], false);
  };

  Sidebar.prototype.say = function (text, isError) {
    this.status.textContent = text;
    this.status.className = "dr-status" + (isError ? " dr-error" : "");
    if (this.adapter.resize) {
      try { this.adapter.resize(); } catch (ignored) { /* see show() */ }
    }
  };

  Sidebar.prototype.route = function (button, groupId, title) {
    var self = this;
    button.disabled = true;
    return Promise.resolve()
      .then(function () { return self.adapter.routeTo(groupId); })
      .then(function () {
        self.say(TEXT.groupSet + title + ". " + self.adapter.saveHint, false);
      }, function (problem) {
        self.say(TEXT.groupFailed + ((problem && problem.message) || String(problem)), true);
      })
      .then(function () { button.disabled = false; });
  };

  Sidebar.prototype.feedbackControls = function (decision) {
    var self = this;
    var options = [h("option", {value: "", text: TEXT.choose})].concat((decision.categories || [])
      .filter(function (category) { return category.name !== decision.category; })
      .map(function (category) {
        return h("option", {value: category.name, text: category.title || titleOf(category.name)});
      }));
    var select = h("select", {id: "dr-category", name: "category", required: true,
                              "aria-describedby": "dr-form-error"}, options);
    var comment = h("textarea", {id: "dr-comment", name: "comment", rows: 3, maxlength: 1000});
    var problem = h("p", {id: "dr-form-error", className: "dr-error", "aria-live": "assertive"});
    var send = h("button", {type: "submit", id: "dr-send", className: "dr-primary", text: TEXT.send});
    var form = h("form", {id: "dr-wrong-form", className: "dr-form", hidden: true, novalidate: true,
                          "aria-label": "Tell Deskroute the right category"}, [
      h("label", {"for": "dr-category", text: TEXT.category}), select,
      h("label", {"for": "dr-comment", text: TEXT.comment}), comment,
      problem,
      h("div", {className: "dr-row"}, [
        send,
        h("button", {type: "button", id: "dr-cancel", className: "dr-secondary", text: TEXT.cancel,
                     onclick: function () { toggle(false); }})
      ])
    ]);
    var right = h("button", {type: "button", id: "dr-right", className: "dr-secondary", text: TEXT.right});
    var wrong = h("button", {type: "button", id: "dr-wrong", className: "dr-secondary", text: TEXT.wrong,
                             "aria-expanded": "false", "aria-controls": "dr-wrong-form"});
    var buttons = h("div", {className: "dr-row dr-verdict", role: "group", "aria-label": "Was this right?"},
                    decision.triage ? [wrong] : [right, wrong]);
    var box = h("section", {className: "dr-feedback", "aria-label": "Feedback"}, [buttons, form]);

    function toggle(open) {
      form.hidden = !open;
      wrong.setAttribute("aria-expanded", open ? "true" : "false");
      problem.textContent = "";
      if (open) select.focus(); else wrong.focus();
      if (self.adapter.resize) {
        try { self.adapter.resize(); } catch (ignored) { /* see show() */ }
      }
    }

    function done(text) {
      while (box.firstChild) box.removeChild(box.firstChild);
      self.say(text, false);
      self.status.setAttribute("tabindex", "-1");  // the focused button is gone: keep keyboard users here
      self.status.focus();
    }

    function submit(payload, pending) {
      pending.disabled = true;
      return self.adapter.postFeedback(self.ticketId, payload).then(function (response) {
        pending.disabled = false;
        if (response.ok) return true;
        var text = errorText(response);
        if (form.hidden) self.say(text, true); else problem.textContent = text;
        return false;
      });
    }

    wrong.addEventListener("click", function () { toggle(form.hidden); });
    select.addEventListener("change", function () { problem.textContent = ""; });
    right.addEventListener("click", function () {
      submit({verdict: "right", category: null, comment: null, agent_id: self.agentId}, right)
        .then(function (ok) { if (ok) done(TEXT.thanksRight); });
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!select.value) {
        problem.textContent = TEXT.needCategory;
        select.focus();
        return;
      }
      send.textContent = TEXT.sending;
      submit({verdict: "wrong", category: select.value, comment: comment.value.trim() || null,
              agent_id: self.agentId}, send)
        .then(function (ok) {
          send.textContent = TEXT.send;
          if (ok) done(TEXT.thanksWrong);
        });
    });
    form.addEventListener("keydown", function (event) {
      if (event.key === "Escape") toggle(false);
    });
    return box;
  };

  function mount(root, adapter) {
    var sidebar = new Sidebar(root, adapter);
    sidebar.start();
    return sidebar;
  }

  global.DeskrouteSidebar = {mount: mount, titleOf: titleOf, percent: percent};
})(window);
