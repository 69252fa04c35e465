/* The Zendesk side of Deskroute's sidebar (Zendesk Apps framework v2).
 * Requests go through Zendesk's proxy (secure: true): Zendesk puts the app's secure setting into the
 * Authorization header, so the agent's browser never holds it. The proxy only calls hosts in the
 * manifest's domainWhitelist, which the package builder fills with Deskroute's host.
 */
(function () {
  "use strict";

  var API = __DESKROUTE_API__;  // the package builder writes Deskroute's /apps/api/tickets/zendesk URL here
  var client = ZAFClient.init();

  function parse(text) {
    try { return JSON.parse(text); } catch (ignored) { return null; }
  }

  function call(options) {
    options.secure = true;
    options.headers = {Authorization: "Bearer {{setting.token}}"};
    options.dataType = "json";
    return client.request(options).then(function (data) {
      return {ok: true, status: 200, data: typeof data === "string" ? parse(data) : data};
    }, function (failure) {
      failure = failure || {};
      var data = failure.responseJSON || (typeof failure.responseText === "string" ? parse(failure.responseText) : null);
      return {ok: false, status: Number(failure.status) || 0, data: data};
    });
  }

  function asId(value) {
    var text = String(value);
    return /^\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : text;
  }

  var adapter = {
    saveHint: "Submit the ticket to keep it.",
    context: function () {
      return Promise.all([client.get("ticket.id"), client.get("currentUser")]).then(function (answers) {
        var user = answers[1].currentUser;
        return {ticketId: answers[0]["ticket.id"], agentId: user ? user.id : null};
      });
    },
    getDecision: function (ticketId) {
      return call({url: API + encodeURIComponent(ticketId), type: "GET"});
    },
    postFeedback: function (ticketId, body) {
      return call({url: API + encodeURIComponent(ticketId) + "/feedback", type: "POST",
                   contentType: "application/json", data: JSON.stringify(body)});
    },
    routeTo: function (groupId) {
      return client.set("ticket.assignee", {groupId: asId(groupId)}).then(function (result) {
        var errors = (result && result.errors) || {};
        var keys = Object.keys(errors);
        if (keys.length) throw new Error((errors[keys[0]] && errors[keys[0]].message) || "Zendesk refused");
        return result;
      });
    },
    resize: function () {
      var height = Math.ceil(document.documentElement.getBoundingClientRect().height);
      client.invoke("resize", {width: "100%", height: Math.max(height, 80) + "px"});
    }
  };

  window.DeskrouteSidebar.mount(document.getElementById("deskroute"), adapter);
})();
