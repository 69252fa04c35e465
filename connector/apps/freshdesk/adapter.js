/* The Freshdesk side of Deskroute's sidebar (Freshworks platform 3.0).
 * Requests are the request templates of config/requests.json: Freshworks fills the Authorization header
 * from the app's secure installation parameter, so the agent's browser never holds it.
 */
(function () {
  "use strict";

  function parse(text) {
    if (typeof text !== "string") return text || null;
    try { return JSON.parse(text); } catch (ignored) { return null; }
  }

  function asId(value) {
    var text = String(value);
    return /^\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : text;
  }

  function adapterFor(client) {
    function invoke(template, options) {
      return client.request.invokeTemplate(template, options).then(function (reply) {
        return {ok: true, status: Number(reply && reply.status) || 200, data: parse(reply && reply.response)};
      }, function (failure) {
        failure = failure || {};
        return {ok: false, status: Number(failure.status) || 0, data: parse(failure.response)};
      });
    }

    return {
      saveHint: "Click Update to keep it.",
      context: function () {
        return Promise.all([client.data.get("ticket"), client.data.get("loggedInUser")]).then(function (answers) {
          var user = answers[1] && answers[1].loggedInUser;
          return {ticketId: answers[0].ticket.id, agentId: user ? user.id : null};
        });
      },
      getDecision: function (ticketId) {
        return invoke("getDecision", {context: {ticket_id: String(ticketId)}});
      },
      postFeedback: function (ticketId, body) {
        return invoke("postFeedback", {context: {ticket_id: String(ticketId)}, body: JSON.stringify(body)});
      },
      routeTo: function (groupId) {
        return client.interface.trigger("setValue", {id: "group", value: asId(groupId)});
      },
      resize: function () {
        if (!client.instance || !client.instance.resize) return;
        var height = Math.ceil(document.documentElement.getBoundingClientRect().height);
        client.instance.resize({height: Math.max(height, 80) + "px"});
      }
    };
  }

  app.initialized().then(function (client) {
    var sidebar = null;
    client.events.on("app.activated", function () {
      if (sidebar && sidebar.ticketId !== null) {
        sidebar.load();  // opened again: an agent may have moved the ticket since
      } else if (!sidebar) {
        sidebar = window.DeskrouteSidebar.mount(document.getElementById("deskroute"), adapterFor(client));
      }
    });
  });
})();
