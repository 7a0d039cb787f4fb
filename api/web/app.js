// convoice web UI: plain JS, no framework, no build step, nothing from
// another host. Served as /static/app.js under a CSP of default-src 'self'
// (so no inline scripts or styles anywhere).
//
// The session token lives only in the HttpOnly cookie the server sets; the
// page keeps the CSRF token in memory and sends it on every POST/PUT/DELETE.
// The open conversation follows GET …/events (Server-Sent Events) from the
// conversation's last_event_id; EventSource reconnects with Last-Event-ID and
// the server replays what was missed.
(function () {
  'use strict';

  // ---------------------------------------------------------------- constants

  const EVENT_TYPES = ['conversation.created', 'participant.joined', 'participant.left', 'presenter.changed',
    'message.created', 'audio.started', 'audio.ended', 'leg.updated', 'invitation.updated',
    'guest.waiting', 'guest.updated', 'join_link.created', 'join_link.revoked'];
  const LIVE_GUEST = new Set(['lobby', 'admitted']);
  // The live leg states of the leg table (README, Leg states); the others are final.
  const LIVE_LEG = new Set(['dialing', 'ringing', 'confirming', 'connected']);
  const LEG_RANK = { dialing: 1, ringing: 2, confirming: 3, connected: 4 }; // anything else (an end state) ranks 5
  const CONTROL_POLL_MS = 5000;
  // Invitations arrive on the person's own stream (/api/v1/me/events); the
  // list is polled every 3 s only while that stream is down, and every 30 s
  // as a safety net while it is up.
  const INVITES_POLL_MS = 3000;
  const INVITES_SLOW_POLL_MS = 30000;
  const ME_EVENT_TYPES = ['invitation.updated', 'conversation.created', 'participant.joined', 'participant.left'];
  const CONVS_POLL_MS = 5000;
  const LONG_OUTAGE_MS = 4000; // after a longer outage, reload state besides the replay
  const MAX_ACTIVITY = 60;
  const MESSAGE_PAGE = 200;
  const MAX_MESSAGE_PAGES = 25;

  // Words people see for each audio presence (the seed's and the issue's).
  const PRESENCE_TEXT = {
    none: 'Not in audio', invited: 'Invited', dialing: 'Dialing', ringing: 'Ringing', connected: 'Connected',
    muted: 'Muted', talking: 'Talking', declined: 'Declined', busy: 'Line busy', no_answer: 'No answer',
    rejected: 'Declined the call', failed: 'Call failed', cancelled: 'Call cancelled', left: 'Left',
    // confirming and unconfirmed name the key: setConfirmKey.
    inv_cancelled: 'Invitation cancelled', inv_expired: 'Invitation expired',
  };
  // The key a called phone presses to join when confirm-to-join asks for
  // one (the server's CONVOICE_CONFIRM_KEY, from the session answer).
  let confirmKey = '1';
  function setConfirmKey(k) {
    confirmKey = k || '1';
    PRESENCE_TEXT.confirming = 'Answered — waiting for them to press ' + confirmKey;
    PRESENCE_TEXT.unconfirmed = 'Answered but nobody pressed ' + confirmKey + ' — probably voicemail';
  }
  setConfirmKey('1');
  const LINK_STATE_TEXT = { active: 'Active', expired: 'Expired', used_up: 'Used up', revoked: 'Revoked' };

  // ---------------------------------------------------------------- state

  const S = {
    csrf: null, // CSRF token: memory only
    me: null, // the user view, with numbers and contacts
    admin: false,
    convs: new Map(), // id → conversation view (list)
    invites: new Map(), // id → my pending invitation (own stream, polled as fallback)
    answered: new Set(), // invitation ids answered here or seen non-pending
    cur: null, // the open conversation (see openConversation)
    timers: [],
    meEs: null, // EventSource of /api/v1/me/events
    meLive: false, // it is open
    invitesPolledAt: 0,
    joinLinks: null, // null: not probed; true/false: the join-link API exists
    gen: 0,
  };

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  // h builds an element: h('button', {class: 'btn', text: 'OK', onclick: f, 'data-testid': 'x'}, child…)
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k === 'class') el.className = v;
      else if (k.startsWith('on') && typeof v === 'function') on(el, k.slice(2), v);
      else if (k === 'checked' || k === 'disabled' || k === 'value' || k === 'hidden' || k === 'selected') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  // Handlers set through h live in el._on and run through one shared
  // listener, so morph can hand an element the new closures (which hold the
  // newest state) without listeners piling up.
  function dispatch(ev) {
    const f = this._on && this._on[ev.type];
    if (f) return f.call(this, ev);
  }
  function on(el, type, f) {
    (el._on || (el._on = {}))[type] = f;
    el.addEventListener(type, dispatch);
  }

  // replaceKeepFocus brings a container's children to the given nodes.
  // Rows and controls with the same data-testid are updated in place rather
  // than replaced: live updates (a talking indicator flips several times a
  // second) must not swap the button under someone's pointer between
  // mousedown and mouseup, nor take the keyboard user's focus away.
  function replaceKeepFocus(container, nodes) {
    const a = document.activeElement;
    const key = a && container.contains(a) ? a.getAttribute('data-testid') : null;
    morphChildren(container, nodes);
    // A focused element that was replaced, or moved (moving blurs it), gets
    // the focus back through its successor with the same data-testid.
    if (key && document.activeElement !== a) {
      const el = container.querySelector('[data-testid="' + CSS.escape(key) + '"]');
      if (el) el.focus();
    }
  }

  const keyOf = (n) => (n.nodeType === 1 ? n.getAttribute('data-testid') : null);
  const sameKind = (a, b) => a.nodeType === b.nodeType && (a.nodeType !== 1 || (a.tagName === b.tagName && keyOf(a) === keyOf(b)));

  function morphChildren(parent, want) {
    const old = Array.from(parent.childNodes);
    const byKey = new Map();
    for (const n of old) {
      const k = keyOf(n);
      if (k) byKey.set(k, n);
    }
    const used = new Set();
    let pos = 0; // next unkeyed old child to consider, in order
    const result = want.map((n) => {
      const k = keyOf(n);
      let match = null;
      if (k) {
        const o = byKey.get(k);
        if (o && !used.has(o) && sameKind(o, n)) match = o;
      } else {
        while (pos < old.length && (keyOf(old[pos]) || used.has(old[pos]))) pos++;
        if (pos < old.length && sameKind(old[pos], n)) match = old[pos++];
      }
      if (!match) return n;
      used.add(match);
      morph(match, n);
      return match;
    });
    for (const n of old) if (!used.has(n)) n.remove();
    result.forEach((n, i) => {
      if (parent.childNodes[i] !== n) parent.insertBefore(n, parent.childNodes[i] || null);
    });
  }

  function morph(el, n) {
    if (el.nodeType !== 1) {
      if (el.nodeValue !== n.nodeValue) el.nodeValue = n.nodeValue;
      return;
    }
    for (const a of Array.from(el.attributes)) if (!n.hasAttribute(a.name)) el.removeAttribute(a.name);
    for (const a of Array.from(n.attributes)) if (el.getAttribute(a.name) !== a.value) el.setAttribute(a.name, a.value);
    for (const k of ['checked', 'disabled', 'hidden', 'selected']) if (k in n && el[k] !== n[k]) el[k] = n[k];
    if ('value' in n && el.value !== n.value && el !== document.activeElement) el.value = n.value;
    el._on = n._on;
    for (const type of Object.keys(n._on || {})) el.addEventListener(type, dispatch);
    morphChildren(el, Array.from(n.childNodes));
  }

  function fmtNumber(n) {
    if (!n) return '';
    const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(n);
    if (m) return '+1 ' + m[1] + ' ' + m[2] + ' ' + m[3];
    return n;
  }
  const cap = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : s);
  const enc = encodeURIComponent;
  const time = (iso) => {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  };
  const tsOf = (iso) => {
    const t = Date.parse(iso || '');
    return isNaN(t) ? 0 : t;
  };

  // uuid4 works outside secure contexts too (crypto.randomUUID does not).
  function uuid4() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const x = Array.from(b, (v) => v.toString(16).padStart(2, '0')).join('');
    return x.slice(0, 8) + '-' + x.slice(8, 12) + '-' + x.slice(12, 16) + '-' + x.slice(16, 20) + '-' + x.slice(20);
  }

  function announce(msg) {
    const el = $('announcer');
    el.textContent = '';
    // A new text node after a tick is read out even when the text repeats.
    setTimeout(() => { el.textContent = msg; }, 30);
  }

  function setError(el, msg) {
    el.textContent = msg || '';
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field || '';
    }
  }

  async function api(method, path, body, headers) {
    const opt = { method, headers: Object.assign({ Accept: 'application/json' }, headers || {}),
      credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    if (method !== 'GET' && method !== 'HEAD' && S.csrf) opt.headers['X-CSRF-Token'] = S.csrf;
    let res;
    try {
      res = await fetch('/api/v1' + path, opt);
    } catch (e) {
      throw new ApiError(0, 'network', 'convoice cannot be reached right now; check the connection and try again.');
    }
    const text = await res.text().catch(() => '');
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!res.ok) {
      const er = (data && data.error) || {};
      const err = new ApiError(res.status, er.code || 'http_' + res.status, er.message || ('The server answered ' + res.status + '.'), er.field);
      if (res.status === 401 && path !== '/session' && S.me) signedOut('Your session has ended. Sign in again.');
      throw err;
    }
    return data;
  }

  // ---------------------------------------------------------------- sign-in

  // takeHashToken reads a sign-in link's #token=… and takes it out of the
  // address bar (and so out of the history) before anything else.
  function takeHashToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return '';
    history.replaceState(history.state, '', location.pathname + location.search);
    try { return decodeURIComponent(m[1]); } catch (e) { return ''; }
  }

  async function signInWithLink(tok) {
    if (S.me) signedOut(''); // a link for someone else replaces this session
    try {
      await signIn(tok);
    } catch (e) {
      showSignIn(e.message);
    }
  }

  async function boot() {
    bindStatic();
    const tok = takeHashToken();
    if (tok) {
      await signInWithLink(tok);
      return;
    }
    try {
      const s = await api('GET', '/session');
      startSession(s);
    } catch (e) {
      showSignIn(e.status === 401 ? '' : e.message);
    }
  }

  async function signIn(token) {
    const s = await api('POST', '/session', { token: token.trim() });
    startSession(s);
  }

  // offerSignInMethods shows "Sign in with <name>" when the server has
  // OpenID Connect (asked once per page).
  let methodsAsked = false;
  async function offerSignInMethods() {
    if (methodsAsked) return;
    methodsAsked = true;
    try {
      const m = await api('GET', '/sign-in-methods');
      if (m && m.oidc) {
        const a = $('oidc-signin');
        a.textContent = 'Sign in with ' + m.oidc.name;
        a.href = m.oidc.login_url;
        $('oidc-block').hidden = false;
      }
    } catch (e) { methodsAsked = false; /* the token form still works */ }
  }

  function showSignIn(msg) {
    offerSignInMethods();
    $('boot').hidden = true;
    $('app-view').hidden = true;
    $('whoami').hidden = true;
    $('signout').hidden = true;
    $('signin-view').hidden = false;
    setError($('signin-error'), msg || '');
    $('token-input').value = '';
    $('token-input').focus();
  }

  function startSession(s) {
    S.csrf = s.csrf_token;
    S.admin = !!s.admin;
    setConfirmKey(s.confirm_key);
    S.me = s.user || null;
    $('boot').hidden = true;
    $('signin-view').hidden = true;
    $('signout').hidden = false;
    if (!S.me) {
      $('whoami').hidden = false;
      $('whoami').textContent = 'Signed in with the admin token';
      showSignIn('The admin token has no conversations. Sign in with a person\'s token to use the conversation window.');
      $('signout').hidden = false;
      return;
    }
    $('whoami').hidden = false;
    $('whoami').textContent = S.me.display_name;
    $('app-view').hidden = false;
    loadConversations();
    pollInvites();
    followMe();
    renderAlertControls();
    // Polls pause while the tab is hidden and run at once when it shows again.
    S.timers.push(setInterval(() => {
      if (document.hidden) return;
      if (!S.meLive || Date.now() - S.invitesPolledAt >= INVITES_SLOW_POLL_MS) pollInvites();
    }, INVITES_POLL_MS));
    S.timers.push(setInterval(() => { if (!document.hidden) loadConversations(); }, CONVS_POLL_MS));
    S.timers.push(setInterval(() => { if (!document.hidden) refreshControl(); }, CONTROL_POLL_MS));
    route();
  }

  function signedOut(msg) {
    for (const t of S.timers) clearInterval(t);
    S.timers = [];
    if (S.meEs) S.meEs.close();
    S.meEs = null;
    S.meLive = false;
    closeConversation();
    S.csrf = null;
    S.me = null;
    S.convs.clear();
    S.invites.clear();
    S.answered.clear();
    AL.alerted.clear();
    AL.ready = false;
    renderToast();
    setBaseTitle('convoice');
    renderAlertControls();
    $('conv-list').replaceChildren();
    if (location.pathname !== '/') history.replaceState(null, '', '/');
    showSignIn(msg);
  }

  async function signOut() {
    try { await api('DELETE', '/session'); } catch (e) { /* signed out locally anyway */ }
    signedOut('You are signed out.');
  }

  // ---------------------------------------------------------------- routing

  function route() {
    const m = /^\/ui\/c\/([^/]+)$/.exec(location.pathname);
    if (m) {
      const id = decodeURIComponent(m[1]);
      if (!S.cur || S.cur.id !== id) openConversation(id);
    } else {
      closeConversation();
      showList();
    }
  }

  function go(path) {
    if (location.pathname !== path) history.pushState(null, '', path);
    route();
  }

  function showList() {
    document.body.classList.remove('has-conv');
    setBaseTitle('convoice');
    $('conv-pane').hidden = true;
    $('empty-pane').hidden = false;
    renderList();
  }

  // ---------------------------------------------------------------- conversation list

  async function loadConversations() {
    if (!S.me) return;
    try {
      const r = await api('GET', '/conversations');
      S.convs = new Map(r.conversations.map((c) => [c.id, c]));
      // The open one is kept live by its event stream.
      if (S.cur && S.cur.conv && S.convs.has(S.cur.id)) S.convs.set(S.cur.id, S.cur.conv);
      renderList();
    } catch (e) { /* shown again on the next poll */ }
  }

  function convName(c) {
    if (c.subject) return c.subject;
    const others = (c.participants || []).filter((p) => !p.left_at && (!S.me || p.user_id !== S.me.id)).map((p) => p.display_name);
    return others.length ? 'With ' + others.join(', ') : 'Conversation';
  }

  function pendingInviteFor(convId) {
    for (const inv of S.invites.values()) {
      if (inv.conversation_id === convId && !S.answered.has(inv.id)) return inv;
    }
    return null;
  }

  function renderList() {
    const list = Array.from(S.convs.values()).sort((a, b) => tsOf(b.created_at) - tsOf(a.created_at));
    const items = list.map((c) => {
      const invited = pendingInviteFor(c.id);
      const current = S.cur && S.cur.id === c.id;
      const parts = (c.participants || []).filter((p) => !p.left_at).length;
      return h('li', {},
        h('a', { href: '/ui/c/' + enc(c.id), class: 'conv-link', 'data-testid': 'conv-' + c.id,
          'aria-current': current ? 'page' : null,
          onclick: (ev) => { ev.preventDefault(); go('/ui/c/' + enc(c.id)); } },
        h('span', { class: 'conv-name', text: convName(c) }),
        h('span', { class: 'conv-meta' },
          h('span', { text: (c.kind === 'sharing' ? 'Desktop sharing' : 'IM') + ' · ' + parts + (parts === 1 ? ' person' : ' people') }),
          c.audio ? h('span', { class: 'badge badge-audio', 'data-testid': 'conv-audio-' + c.id, text: 'Audio on' }) : null,
          invited ? h('span', { class: 'badge badge-invite', 'data-testid': 'conv-invite-' + c.id, text: 'Audio invitation' }) : null)));
    });
    replaceKeepFocus($('conv-list'), items);
    $('conv-list-empty').hidden = list.length > 0;
    invitationsChanged();
  }

  // ---------------------------------------------------------------- invitations (own stream, poll as fallback)

  // followMe opens the person's own event stream: a new or changed
  // invitation, or being added to a conversation, reloads the list at once,
  // with no conversation open. Opened from now on: the list loaded on open
  // covers what came before.
  function followMe() {
    if (!S.me || S.meEs) return;
    const es = new EventSource('/api/v1/me/events');
    S.meEs = es;
    es.onopen = () => {
      if (S.meEs !== es) return;
      S.meLive = true;
      pollInvites();
    };
    es.onerror = () => {
      if (S.meEs !== es) return;
      S.meLive = false;
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        S.meEs = null;
        setTimeout(followMe, 5000);
      }
    };
    for (const t of ME_EVENT_TYPES) {
      es.addEventListener(t, () => {
        if (S.meEs !== es) return;
        pollInvites();
        if (t !== 'invitation.updated') loadConversations();
      });
    }
  }

  // refreshControl re-reads whether the open conference's calls can be
  // controlled: no event says so (nothing changes in the record while a
  // PBX node does not answer).
  async function refreshControl() {
    const cur = S.cur;
    if (!cur || !cur.audio || cur.audio.state !== 'active') return;
    let a;
    try {
      a = await api('GET', '/conversations/' + enc(cur.id) + '/audio');
    } catch (e) {
      return;
    }
    if (S.cur !== cur || !cur.audio || cur.audio.id !== a.id) return;
    if (cur.audio.control === a.control && cur.audio.control_reason === a.control_reason) return;
    cur.audio.control = a.control;
    cur.audio.control_reason = a.control_reason;
    renderConference(cur);
  }

  async function pollInvites() {
    if (!S.me) return;
    S.invitesPolledAt = Date.now();
    let r;
    try {
      r = await api('GET', '/invitations');
    } catch (e) {
      return;
    }
    const next = new Map();
    let unknownConv = false;
    for (const inv of r.invitations || []) {
      if (S.answered.has(inv.id)) continue;
      next.set(inv.id, inv);
      if (!S.convs.has(inv.conversation_id)) unknownConv = true;
    }
    S.invites = next;
    if (unknownConv) loadConversations();
    renderList();
    if (S.cur) renderBanner();
    AL.ready = true; // from now on an invitation is new: it rings
  }

  // ---------------------------------------------------------------- conversation window

  function closeConversation() {
    const cur = S.cur;
    if (!cur) return;
    cur.closed = true;
    if (cur.es) cur.es.close();
    if (cur.retryTimer) clearTimeout(cur.retryTimer);
    S.cur = null;
    closeMenus();
    $('conv-pane').hidden = true;
  }

  async function openConversation(id) {
    closeConversation();
    const cur = {
      id, conv: null, audio: null, msgs: new Map(), lastSeq: 0, es: null, closed: false,
      downSince: null, retryTimer: null, retryDelay: 1000, lastDialLegId: null, dialing: false,
      bannerFor: null, gen: ++S.gen,
      guests: new Map(), // guest id → guest view (join links: lobby, admitted, left…)
      links: null, // the join links, once the Meet Now panel has loaded them
      revoking: null, // the join link whose Revoke asks for confirmation
    };
    S.cur = cur;
    document.body.classList.add('has-conv');
    $('empty-pane').hidden = true;
    $('conv-pane').hidden = false;
    $('conv-title').textContent = 'Loading…';
    $('conv-kind').textContent = '';
    $('messages').replaceChildren();
    $('activity').replaceChildren();
    $('participants').replaceChildren();
    $('invitation-banner').hidden = true;
    $('invitation-banner').replaceChildren();
    $('new-number-box').hidden = true;
    setError($('phone-error'), '');
    fieldError($('new-number'), $('new-number-error'), '');
    setError($('composer-error'), '');
    setError($('moderation-error'), '');
    $('end-audio-confirm').hidden = true;
    showMeetNow(false);
    $('join-links').replaceChildren();
    $('lobby').hidden = true;
    $('lobby-list').replaceChildren();
    setError($('lobby-error'), '');
    setStream('connecting');
    renderList();
    try {
      await loadState(cur);
    } catch (e) {
      if (S.cur !== cur) return;
      $('conv-title').textContent = e.status === 404 ? 'Conversation not found' : 'Could not open the conversation';
      setError($('composer-error'), e.message);
      setStream('off');
      return;
    }
    if (S.cur !== cur) return;
    cur.lastSeq = Number(cur.conv.last_event_id) || 0;
    await loadMessages(cur);
    if (S.cur !== cur) return;
    renderConversation();
    $('conv-title').focus();
    connect(cur);
    detectJoinLinks();
  }

  // loadState reads the conversation and its (latest) audio conference.
  async function loadState(cur) {
    const conv = await api('GET', '/conversations/' + enc(cur.id));
    let audio = null;
    try {
      audio = await api('GET', '/conversations/' + enc(cur.id) + '/audio?last=true');
    } catch (e) {
      if (e.status !== 404) throw e;
    }
    // Guests (join links): those waiting in the lobby and the names of all.
    // A server without join links answers 404 here; that is no error.
    let guests = null;
    if (S.joinLinks !== false) {
      try {
        guests = (await api('GET', '/conversations/' + enc(cur.id) + '/guests')).guests || [];
      } catch (e) {
        if (e.status !== 404) throw e;
      }
    }
    if (S.cur !== cur) return;
    cur.conv = conv;
    cur.audio = audio;
    if (guests) cur.guests = new Map(guests.map((g) => [g.id, g]));
    S.convs.set(conv.id, conv);
  }

  async function loadMessages(cur) {
    let cursor = '';
    for (let i = 0; i < MAX_MESSAGE_PAGES; i++) {
      let page;
      try {
        // Newest first: a long conversation opens on what was said last
        // (at most MAX_MESSAGE_PAGES pages back).
        page = await api('GET', '/conversations/' + enc(cur.id) + '/messages?order=newest&limit=' + MESSAGE_PAGE + (cursor ? '&cursor=' + enc(cursor) : ''));
      } catch (e) {
        setError($('composer-error'), 'Could not load the messages: ' + e.message);
        return;
      }
      if (S.cur !== cur) return;
      for (const m of page.messages) addMessage(cur, m, false);
      if (!page.next_cursor) return;
      cursor = page.next_cursor;
    }
  }

  // refresh re-reads state after a long outage (the replay also catches up;
  // this covers whatever the log could not, e.g. a trimmed log).
  async function refresh(cur) {
    try {
      await loadState(cur);
      if (S.cur !== cur) return;
      renderConversation();
      renderList();
    } catch (e) {
      if (e.status === 404) lostAccess(cur);
    }
  }

  function lostAccess(cur) {
    if (S.cur !== cur) return;
    if (cur.es) cur.es.close();
    cur.es = null;
    setStream('off');
    setError($('composer-error'), 'You are no longer in this conversation.');
    S.convs.delete(cur.id);
    renderList();
  }

  // ---------------------------------------------------------------- event stream

  function setStream(state) {
    const el = $('stream-status');
    el.dataset.state = state;
    el.textContent = { connecting: 'Connecting…', live: 'Live', down: 'Reconnecting…', off: 'Offline' }[state];
  }

  function connect(cur) {
    if (cur.closed) return;
    const es = new EventSource('/api/v1/conversations/' + enc(cur.id) + '/events?last_event_id=' + cur.lastSeq);
    cur.es = es;
    es.onopen = () => {
      if (S.cur !== cur || cur.es !== es) return;
      const downFor = cur.downSince ? Date.now() - cur.downSince : 0;
      const wasDown = !!cur.downSince;
      cur.downSince = null;
      cur.retryDelay = 1000;
      setStream('live');
      if (wasDown) {
        logActivity(cur, 'Back online.');
        if (downFor > LONG_OUTAGE_MS) refresh(cur);
      }
    };
    es.onerror = () => {
      if (S.cur !== cur || cur.es !== es) return;
      if (!cur.downSince) cur.downSince = Date.now(); // the status region says "Reconnecting…"
      setStream('down');
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error, not a network one): find out
        // why, then start again from the last event seen.
        es.close();
        cur.es = null;
        scheduleReconnect(cur);
      }
    };
    for (const t of EVENT_TYPES) es.addEventListener(t, (m) => onStreamEvent(cur, m));
  }

  function scheduleReconnect(cur) {
    if (cur.retryTimer) clearTimeout(cur.retryTimer);
    const delay = cur.retryDelay;
    cur.retryDelay = Math.min(cur.retryDelay * 2, 15000);
    cur.retryTimer = setTimeout(async () => {
      cur.retryTimer = null;
      if (S.cur !== cur) return;
      try {
        await api('GET', '/conversations/' + enc(cur.id));
      } catch (e) {
        if (e.status === 404) return lostAccess(cur);
        if (e.status === 401) return; // signedOut ran
        return scheduleReconnect(cur);
      }
      connect(cur);
    }, delay);
  }

  function onStreamEvent(cur, m) {
    if (S.cur !== cur) return;
    const seq = Number(m.lastEventId) || 0;
    if (seq && seq <= cur.lastSeq) return; // already applied (replay overlap)
    let ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    if (seq) cur.lastSeq = seq;
    applyEvent(cur, ev);
    if (S.convs.has(cur.id) && cur.conv) S.convs.set(cur.id, cur.conv); // the list shows the same, live
    renderConversation();
    renderList();
  }

  function nameOf(cur, userId) {
    if (!userId) return 'Someone';
    if (S.me && userId === S.me.id) return 'You';
    const p = cur.conv && cur.conv.participants.find((x) => x.user_id === userId);
    if (p) return p.display_name;
    const c = S.me && (S.me.contacts || []).find((x) => x.id === userId);
    return c ? c.display_name : 'Someone';
  }

  // guestName names a guest (join links) for people: "Gina Green (guest)".
  function guestName(cur, guestId) {
    const g = cur.guests.get(guestId);
    const p = !g && cur.conv && cur.conv.participants.find((x) => x.guest_id === guestId);
    const name = (g && g.display_name) || (p && p.display_name);
    return name ? name + ' (guest)' : 'A guest';
  }

  function legName(cur, leg) {
    if (leg.user_id) return nameOf(cur, leg.user_id);
    if (leg.guest_id) return guestName(cur, leg.guest_id);
    return 'Guest ' + fmtNumber(leg.number);
  }

  function ensureAudio(cur, confId) {
    if (!cur.audio || cur.audio.id !== confId) {
      cur.audio = { id: confId, conversation_id: cur.id, state: 'active', legs: [], invitations: [] };
    }
    return cur.audio;
  }

  function applyEvent(cur, ev) {
    cur.eventAt = ev.at; // activity lines carry the event's own time (replays too)
    try {
      applyEventData(cur, ev);
    } finally {
      cur.eventAt = null;
    }
  }

  function applyEventData(cur, ev) {
    const d = ev.data || {};
    const conv = cur.conv;
    switch (ev.type) {
      case 'conversation.created':
        Object.assign(conv, d, { last_event_id: conv.last_event_id });
        break;
      case 'participant.joined': {
        const i = conv.participants.findIndex((p) => p.user_id === d.user_id);
        if (i >= 0) conv.participants[i] = d; else conv.participants.push(d);
        logActivity(cur, nameOf(cur, d.user_id) + (d.user_id === S.me.id ? ' joined' : ' joined the conversation') + '.');
        break;
      }
      case 'participant.left': {
        const i = conv.participants.findIndex((p) => p.user_id === d.user_id);
        if (i >= 0) conv.participants[i] = d; else conv.participants.push(d);
        logActivity(cur, nameOf(cur, d.user_id) + ' left the conversation.');
        if (d.user_id === S.me.id) lostAccess(cur);
        break;
      }
      case 'presenter.changed':
        conv.presenter_id = d.presenter_id || null;
        logActivity(cur, d.presenter_id ? nameOf(cur, d.presenter_id) + (d.presenter_id === S.me.id ? ' are presenting.' : ' is presenting.') : 'Nobody is presenting.');
        break;
      case 'message.created':
        addMessage(cur, d, true);
        break;
      case 'audio.started': {
        if (cur.audio && cur.audio.id === d.id) {
          Object.assign(cur.audio, { state: d.state, created_by: d.created_by, created_at: d.created_at });
        } else {
          cur.audio = Object.assign({}, d, { legs: [], invitations: [] });
        }
        conv.audio = { id: d.id, state: d.state };
        // A guest's audio has no starting user: its first call names them.
        if (d.created_by) logActivity(cur, nameOf(cur, d.created_by) + ' started the audio conference.');
        else cur.audio.starterUnnamed = true;
        break;
      }
      case 'audio.ended':
        if (cur.audio && cur.audio.id === d.id) {
          Object.assign(cur.audio, { state: d.state, ended_at: d.ended_at, end_reason: d.end_reason });
        } else {
          cur.audio = Object.assign({}, d, { legs: [], invitations: [] });
        }
        conv.audio = null;
        logActivity(cur, endedText(d.end_reason));
        break;
      case 'leg.updated': {
        const audio = ensureAudio(cur, d.conference_id);
        const i = audio.legs.findIndex((l) => l.id === d.id);
        const old = i >= 0 ? audio.legs[i] : null;
        if (i >= 0) audio.legs[i] = d; else audio.legs.push(d);
        if (audio.starterUnnamed && d.guest_id) {
          audio.starterUnnamed = false;
          logActivity(cur, guestName(cur, d.guest_id) + ' started the audio.');
        }
        logLegChange(cur, old, d);
        break;
      }
      case 'invitation.updated': {
        const audio = ensureAudio(cur, d.conference_id);
        const i = audio.invitations.findIndex((x) => x.id === d.id);
        const old = i >= 0 ? audio.invitations[i] : null;
        if (i >= 0) audio.invitations[i] = d; else audio.invitations.push(d);
        if (d.user_id === S.me.id) {
          if (d.state === 'pending') S.invites.set(d.id, d);
          else { S.invites.delete(d.id); S.answered.add(d.id); }
        }
        if (!old || old.state !== d.state) logInvitation(cur, d);
        break;
      }
      case 'guest.waiting':
      case 'guest.updated':
        applyGuest(cur, d);
        break;
      case 'join_link.created':
      case 'join_link.revoked':
        mergeLink(cur, d);
        logActivity(cur, ev.type === 'join_link.created'
          ? nameOf(cur, d.created_by) + ' made a join link.'
          : 'A join link was revoked: it no longer works.');
        break;
      default:
        break;
    }
  }

  // applyGuest takes a guest's new state: the lobby, and — once admitted —
  // their place among the participants (role "guest", keyed by guest_id).
  function applyGuest(cur, g) {
    const old = cur.guests.get(g.id);
    cur.guests.set(g.id, g);
    const conv = cur.conv;
    if (g.admitted_at) {
      const p = { guest_id: g.id, display_name: g.display_name, role: 'guest', joined_at: g.admitted_at };
      if (g.left_at) p.left_at = g.left_at;
      const i = conv.participants.findIndex((x) => x.guest_id === g.id);
      if (i >= 0) conv.participants[i] = p; else conv.participants.push(p);
    }
    if (old && old.state === g.state) return;
    const who = g.display_name + ' (guest)';
    const text = {
      lobby: who + ' is waiting to join. Admit or refuse them.',
      admitted: who + ' joined the conversation.',
      refused: who + ' was not admitted.',
      left: who + ' left the conversation.',
      ended: who + '’s session ended' + (g.end_reason ? ' (' + g.end_reason + ')' : '') + '.',
    }[g.state];
    if (text) logActivity(cur, text);
    if (g.state === 'lobby') liveSay('lobby-live', g.display_name + ' (guest) is waiting to join the conversation.');
    // A guest's arrival counts as a use of their link.
    if (cur.links && (!old || g.state === 'lobby' || g.state === 'admitted')) loadLinksSoon(cur);
  }

  function logLegChange(cur, old, l) {
    const who = legName(cur, l);
    if (!old || old.state !== l.state) {
      const words = {
        dialing: 'calling ' + fmtNumber(l.number), ringing: 'phone is ringing', connected: 'connected to the audio',
        ended: 'left the audio', busy: 'line is busy', no_answer: 'did not answer', rejected: 'declined the call',
        failed: 'call couldn’t be completed: ' + outcome(l).charAt(0).toLowerCase() + outcome(l).slice(1), cancelled: 'call was cancelled',
        confirming: 'call was answered — waiting for them to press ' + confirmKey,
        unconfirmed: 'call was answered but nobody pressed ' + confirmKey + ' — probably voicemail',
      }[l.state] || l.state;
      const verbIsName = ['connected', 'ended', 'no_answer', 'rejected'].includes(l.state);
      const possessive = who === 'You' ? 'Your' : who + '’s';
      const by = l.state === 'ended' ? hungUpBy(l) : '';
      if (l.state === 'dialing') logActivity(cur, 'convoice is calling ' + (who === 'You' ? 'you' : who) + ' at ' + fmtNumber(l.number) + '.');
      else if (by) logActivity(cur, by + ' hung up ' + (who === 'You' ? 'your' : who + '’s') + ' call.');
      else logActivity(cur, (verbIsName ? who + ' ' : possessive + ' ') + words + '.');
    } else if (old.muted !== l.muted) {
      logActivity(cur, who + (l.muted ? (who === 'You' ? ' are muted.' : ' is muted.') : (who === 'You' ? ' are unmuted.' : ' is unmuted.')));
    }
  }

  function logInvitation(cur, inv) {
    const who = nameOf(cur, inv.user_id);
    const you = inv.user_id === S.me.id;
    const text = {
      // A guest's audio invites with no inviting user: its start names the guest.
      pending: you ? (inv.invited_by ? nameOf(cur, inv.invited_by) + ' invited you to the audio.' : 'You are invited to the audio.') : who + ' is invited to the audio.',
      accepted: who + ' accepted the invitation.',
      declined: who + ' declined the invitation' + (you ? '; you stay in the conversation.' : '.'),
      redirected: who + ' redirected the call to another number.',
      cancelled: (you ? 'Your' : who + '’s') + ' invitation was cancelled.',
      expired: (you ? 'Your' : who + '’s') + ' invitation expired.',
    }[inv.state];
    if (text) logActivity(cur, text);
  }

  // endedText words a conference's end: "ended by Alice" reads "Audio ended
  // by Alice."; other reasons go in brackets.
  function endedText(reason) {
    if (!reason) return 'Audio ended.';
    if (/^ended /.test(reason)) return 'Audio ' + reason + '.';
    return 'Audio ended (' + reason + ').';
  }

  function logActivity(cur, text) {
    if (S.cur !== cur) return;
    const list = $('activity');
    const at = cur.eventAt || new Date().toISOString();
    list.append(h('li', {}, h('time', { datetime: at, text: time(at) }), ' ', text));
    while (list.children.length > MAX_ACTIVITY) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  // ---------------------------------------------------------------- messages

  function addMessage(cur, m, live) {
    if (cur.msgs.has(m.id)) return;
    cur.msgs.set(m.id, m);
    const list = $('messages');
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    const mine = m.user_id && S.me && m.user_id === S.me.id;
    const li = h('li', { class: 'message' + (mine ? ' mine' : ''), 'data-testid': 'message', 'data-id': m.id },
      h('div', { class: 'message-head' },
        h('span', { class: 'author', text: m.author_name || 'Guest' }),
        h('time', { datetime: m.created_at, text: time(m.created_at) })),
      h('p', { class: 'message-text', text: m.text }));
    // Keep id order (ids are increasing numbers) even if a late page arrives.
    // Pages come newest first: an older message usually goes on top.
    const n = Number(m.id);
    let before = null;
    const first = list.firstElementChild;
    if (first && n < Number(first.dataset.id)) {
      before = first;
    } else {
      for (let el = list.lastElementChild; el; el = el.previousElementSibling) {
        if (Number(el.dataset.id) < n) break;
        before = el;
      }
    }
    list.insertBefore(li, before);
    if (nearBottom || mine || !live) list.scrollTop = list.scrollHeight;
  }

  async function sendMessage() {
    const cur = S.cur;
    const input = $('message-input');
    const text = input.value;
    if (!cur || !text.trim() || cur.sending) return;
    setError($('composer-error'), '');
    // Clear at once so typing can go on; the text comes back if sending fails.
    cur.sending = true;
    input.value = '';
    try {
      const m = await api('POST', '/conversations/' + enc(cur.id) + '/messages', { text });
      if (S.cur === cur) addMessage(cur, m, true);
    } catch (e) {
      setError($('composer-error'), e.message);
      if (S.cur === cur && !input.value) input.value = text;
    } finally {
      cur.sending = false;
    }
  }

  // ---------------------------------------------------------------- audio presence

  function isModerator(cur) {
    return S.admin || (cur.conv && S.me && cur.conv.creator_id === S.me.id);
  }

  function newest(list, key) {
    let best = null;
    for (const x of list) if (!best || tsOf(x[key]) >= tsOf(best[key])) best = x;
    return best;
  }

  // presence works out one person's place in the audio from the legs and
  // invitations of the (latest) conference. field is 'user_id' for people
  // of the directory, 'guest_id' for guests (who get no invitations).
  function presence(audio, id, field) {
    if (!audio) return { key: 'none', leg: null };
    const by = field || 'user_id';
    const legs = audio.legs.filter((l) => l[by] === id);
    const live = newest(legs.filter((l) => LIVE_LEG.has(l.state)), 'created_at');
    if (live) {
      let key = live.state;
      if (key === 'connected') key = live.muted ? 'muted' : live.talking ? 'talking' : 'connected';
      return { key, leg: live };
    }
    const inv = by === 'user_id' ? newest(audio.invitations.filter((i) => i.user_id === id), 'updated_at') : null;
    const last = newest(legs, 'created_at');
    if (inv && inv.state === 'pending' && audio.state === 'active') return { key: 'invited', leg: null, inv };
    if (inv && inv.state === 'declined' && (!last || tsOf(inv.updated_at) >= tsOf(last.created_at))) return { key: 'declined', leg: null, inv };
    if (last) return { key: last.state === 'ended' ? 'left' : last.state, leg: last };
    if (inv && inv.state === 'cancelled') return { key: 'inv_cancelled', leg: null, inv };
    if (inv && inv.state === 'expired') return { key: 'inv_expired', leg: null, inv };
    return { key: 'none', leg: null };
  }

  function myLiveLeg(cur) {
    if (!cur.audio || !S.me) return null;
    return newest(cur.audio.legs.filter((l) => l.user_id === S.me.id && LIVE_LEG.has(l.state)), 'created_at');
  }

  // ---------------------------------------------------------------- render

  function renderConversation() {
    const cur = S.cur;
    if (!cur || !cur.conv) return;
    const conv = cur.conv;
    $('conv-title').textContent = convName(conv);
    $('conv-kind').textContent = conv.kind === 'sharing' ? 'Desktop sharing' : 'IM';
    setBaseTitle(convName(conv) + ' · convoice');
    renderConference(cur);
    renderParticipants(cur);
    renderMyCall(cur);
    renderBanner();
    renderLobby(cur);
    renderMenus(cur);
    renderPresenter(cur);
    renderLinks(cur);
  }

  function renderConference(cur) {
    const el = $('conference-state');
    const a = cur.audio;
    let text;
    let state;
    if (!a) {
      state = 'none';
      text = 'No audio yet. Click Phone, then Join Conference Now Using: convoice calls you and, once you are connected, invites everyone.';
    } else if (a.state === 'active') {
      state = 'active';
      const live = a.legs.filter((l) => LIVE_LEG.has(l.state));
      const connected = live.filter((l) => l.state === 'connected').length;
      const calling = live.length - connected;
      const invited = a.invitations.filter((i) => i.state === 'pending').length;
      const bits = [connected + ' connected'];
      if (calling) bits.push(calling + ' being called');
      if (invited) bits.push(invited + ' invited');
      text = 'Audio conference in progress: ' + bits.join(', ') + '.';
    } else {
      state = 'ended';
      text = endedText(a.end_reason) + ' Click Phone to start it again.';
    }
    el.dataset.state = state;
    el.textContent = text;
    // The PBX node's control link does not answer: the calls keep their
    // last known state (the PBX may well go on mixing them) until it does.
    const ctl = $('control-state');
    const unavailable = !!a && a.state === 'active' && a.control === 'unavailable';
    ctl.hidden = !unavailable;
    ctl.dataset.control = unavailable ? 'unavailable' : 'available';
    ctl.textContent = unavailable ? 'Call control is unavailable right now: the calls go on, but their state may be out of date and they cannot be muted or hung up from here.' +
      (a.control_reason ? ' (' + a.control_reason + ')' : '') : '';
    const mod = isModerator(cur) && a && a.state === 'active';
    $('end-audio-wrap').hidden = !mod;
    if (!mod) $('end-audio-confirm').hidden = true;
  }

  function renderParticipants(cur) {
    const conv = cur.conv;
    const audio = cur.audio;
    const mod = isModerator(cur);
    const rows = [];
    const hasLeg = (gid) => !!audio && audio.legs.some((l) => l.guest_id === gid);
    // People in the conversation; a guest whose session ended stays listed
    // while this conference has their call, so everyone sees it end.
    const people = conv.participants.filter((p) => !p.left_at || (p.guest_id && hasLeg(p.guest_id)));
    const rank = (p) => (p.role === 'organizer' ? 0 : p.guest_id ? 2 : 1);
    people.sort((a, b) => rank(a) - rank(b) || a.display_name.localeCompare(b.display_name));
    const listed = new Set();
    for (const p of people) {
      if (p.guest_id) {
        listed.add(p.guest_id);
        rows.push(personRow(cur, {
          key: p.guest_id, name: p.display_name, spoken: p.display_name + ' (guest)', guest: true,
          gone: !!p.left_at, pr: presence(audio, p.guest_id, 'guest_id'), canControl: mod,
        }));
        continue;
      }
      const pr = presence(audio, p.user_id);
      const me = p.user_id === S.me.id;
      rows.push(personRow(cur, {
        key: p.user_id, name: p.display_name + (me ? ' (you)' : ''), spoken: me ? 'yourself' : p.display_name,
        organizer: p.role === 'organizer', presenting: conv.presenter_id === p.user_id, pr,
        canControl: mod || me, reinvite: mod && !me,
      }));
    }
    // Calls of guests not (or no longer) among the participants: one row
    // per guest, with their newest call.
    if (audio) {
      for (const l of audio.legs) {
        const gid = l.guest_id;
        if (!gid || listed.has(gid)) continue;
        listed.add(gid);
        const g = cur.guests.get(gid);
        const name = g ? g.display_name : 'Guest';
        rows.push(personRow(cur, {
          key: gid, name, spoken: g ? name + ' (guest)' : 'the guest at ' + fmtNumber(l.number), guest: true,
          gone: !!g && !LIVE_GUEST.has(g.state), pr: presence(audio, gid, 'guest_id'), canControl: mod,
        }));
      }
    }
    replaceKeepFocus($('participants'), rows);
    const states = new Map();
    for (const r of rows) {
      const st = r.querySelector('.status');
      if (st) states.set(r.dataset.testid, { state: st.dataset.state, text: st.textContent, name: r.querySelector('.person-name span').textContent });
    }
    announcePeople(cur, states);
  }

  function personRow(cur, o) {
    const { pr } = o;
    const leg = pr.leg;
    const showStatus = cur.audio || pr.key !== 'none';
    const detail = [];
    if (leg && (LIVE_LEG.has(leg.state) || pr.key !== 'none')) detail.push(fmtNumber(leg.number));
    const ended = leg && !LIVE_LEG.has(leg.state) ? endDetail(leg) : '';
    // The pill already says busy, no answer, declined: no second word for it.
    if (ended && ended.toLowerCase() !== (PRESENCE_TEXT[pr.key] || '').toLowerCase() && !['busy', 'no_answer', 'rejected', 'unconfirmed', 'cancelled'].includes(leg.state)) detail.push(ended);
    const controls = [];
    if (o.reinvite && leg && !LIVE_LEG.has(leg.state) && RETRY_STATES.has(leg.state) && cur.audio && cur.audio.state === 'active') {
      controls.push(h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'reinvite-' + o.key,
        'aria-label': 'Invite ' + o.spoken + ' again', text: 'Invite again', onclick: () => reinvite(cur, o.key) }));
    }
    if (leg && LIVE_LEG.has(leg.state) && o.canControl) {
      if (leg.state === 'connected') {
        controls.push(h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'mute-' + o.key,
          'aria-label': (leg.muted ? 'Unmute ' : 'Mute ') + o.spoken,
          text: leg.muted ? 'Unmute' : 'Mute', onclick: () => legAction(leg, leg.muted ? 'unmute' : 'mute') }));
      }
      controls.push(h('button', { type: 'button', class: 'btn btn-small btn-danger', 'data-testid': 'hangup-' + o.key,
        'aria-label': 'Hang up ' + o.spoken, text: 'Hang up', onclick: () => legAction(leg, 'hangup') }));
    }
    return h('li', { class: 'person', 'data-testid': 'participant-' + o.key },
      h('span', { class: 'avatar', 'aria-hidden': 'true', text: initials(o.name) }),
      h('span', { class: 'person-main' },
        h('span', { class: 'person-name' }, h('span', { text: o.name }),
          o.organizer ? h('span', { class: 'tag', text: 'organiser' }) : null,
          o.guest ? h('span', { class: 'tag tag-guest', 'data-testid': 'guest-tag-' + o.key, text: o.gone ? 'guest · left' : 'guest' }) : null,
          o.presenting ? h('span', { class: 'tag tag-present', 'data-testid': 'presenting-' + o.key, text: 'presenting' }) : null),
        h('span', { class: 'person-line' },
          showStatus ? h('span', { class: 'person-status' },
            h('span', { class: 'status status-' + pr.key, 'data-testid': 'audio-status-' + o.key, 'data-state': pr.key, text: PRESENCE_TEXT[pr.key] || pr.key }),
            detail.map((d) => h('span', { class: 'muted small detail', text: d }))) : null,
          controls.length ? h('span', { class: 'person-actions' }, controls) : null)));
  }

  function initials(name) {
    return name.replace(/\(.*\)/, '').trim().split(/\s+/).slice(0, 2).map((w) => w.charAt(0).toUpperCase()).join('') || '?';
  }

  function renderMyCall(cur) {
    const box = $('my-call');
    const live = myLiveLeg(cur);
    let leg = live;
    if (!leg && cur.audio) {
      leg = (cur.lastDialLegId && cur.audio.legs.find((l) => l.id === cur.lastDialLegId)) ||
        // someone else ended my call (the organiser): say so, and offer a way back
        newest(cur.audio.legs.filter((l) => l.user_id === S.me.id && l.state === 'ended' && hungUpBy(l)), 'created_at') || null;
    }
    // A call that simply ended with the audio needs no line of its own.
    if (leg && !live && leg.state === 'ended' && cur.audio.state !== 'active' && !hungUpBy(leg)) leg = null;
    if (!leg) {
      box.hidden = true;
      box.dataset.state = 'none';
      renderRetry(cur, null, null);
      liveSay('my-call-live', '');
      return;
    }
    const num = fmtNumber(leg.number);
    const alone = leg.state === 'connected' && !otherConnected(cur, leg) ? ' Nobody else is in the audio yet.' : '';
    const by = hungUpBy(leg);
    const bad = outcome(leg);
    const text = {
      dialing: 'convoice is calling you at ' + num + '…',
      ringing: 'Your phone is ringing (' + num + '). Answer it to join the conference.',
      connected: (leg.muted ? 'You are in the conference at ' + num + ', muted.' : 'You are in the conference at ' + num + '.') + alone,
      ended: by ? by + ' hung up your call.' : 'Your call to ' + num + ' has ended.',
      busy: 'Line busy: ' + num + '.',
      no_answer: 'No answer at ' + num + '.',
      rejected: 'They declined the call at ' + num + '.',
      failed: bad + ' (' + num + ').',
      cancelled: 'The call to ' + num + ' was cancelled.',
      confirming: 'Your phone (' + num + ') answered — waiting for you to press ' + confirmKey + ' to join the conference.',
      unconfirmed: bad + ' (' + num + ').',
    }[leg.state] || leg.state;
    box.hidden = false;
    box.dataset.state = leg.state;
    box.classList.toggle('my-call-bad', ['busy', 'no_answer', 'rejected', 'failed', 'unconfirmed'].includes(leg.state) || !!by);
    if ($('my-call-text').textContent !== text) $('my-call-text').textContent = text;
    liveSay('my-call-live', text);
    $('my-call-hangup').hidden = !live;
    $('my-call-hangup').onclick = live ? () => legAction(live, 'hangup') : null;
    renderRetry(cur, leg, live);
  }

  function renderPresenter(cur) {
    const conv = cur.conv;
    const btn = $('presenter-btn');
    const line = $('presenter-line');
    if (conv.kind !== 'sharing') {
      btn.hidden = true;
      line.hidden = true;
      return;
    }
    const mine = conv.presenter_id === S.me.id;
    btn.hidden = false;
    btn.textContent = mine ? 'Stop presenting' : 'Start presenting';
    line.hidden = false;
    line.textContent = mine ? 'You are presenting.' : conv.presenter_id ? 'Presenter: ' + nameOf(cur, conv.presenter_id) + '.' : 'Nobody is presenting.';
  }

  // ---------------------------------------------------------------- invitation banner

  function bannerInvitation(cur) {
    const known = new Set();
    if (cur.audio) {
      for (const inv of cur.audio.invitations) {
        if (inv.user_id !== S.me.id) continue;
        known.add(inv.id);
        if (inv.state === 'pending' && cur.audio.state === 'active' && !S.answered.has(inv.id)) return inv;
      }
    }
    for (const inv of S.invites.values()) {
      if (inv.conversation_id === cur.id && !known.has(inv.id) && !S.answered.has(inv.id)) return inv;
    }
    return null;
  }

  // answerControls builds what answering an invitation needs, for the
  // banner and the toast alike: the "call me at" choice of numbers, the
  // error line, the Redirect form (refusing an empty number under its
  // field) and the Redirect… button that shows it; ids names their ids,
  // test ids and classes, answer sends the answer.
  function answerControls(inv, ids, answer) {
    const numbers = S.me.numbers || [];
    const def = numbers.find((n) => n.default) || numbers[0];
    const select = h('select', { id: ids.number, 'data-testid': ids.number, 'aria-label': ids.label || null },
      numbers.map((n) => h('option', { value: n.label, selected: n === def, text: cap(n.label) + ' ' + fmtNumber(n.number) })));
    const err = h('p', { class: 'error', role: 'alert', 'data-testid': ids.error });
    const r = ids.redirect;
    const redirectInput = h('input', { id: r + '-number', type: 'tel', inputmode: 'tel', autocomplete: 'tel',
      'data-testid': r + '-number', placeholder: '+1 202 555 0123', 'aria-describedby': r + '-error' });
    const redirectErr = h('p', { id: r + '-error', class: 'error', role: 'alert', 'data-testid': r + '-error' });
    const redirectForm = h('form', { class: 'redirect-form', novalidate: true, hidden: true, 'data-testid': r + '-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        if (!redirectInput.value.trim()) {
          fieldError(redirectInput, redirectErr, 'Type the phone number convoice should call.');
          return;
        }
        answer(inv, 'redirect', { number: redirectInput.value }, redirectErr, redirectInput);
      } },
    h('label', { for: r + '-number', text: 'Phone Number' }),
    h('div', { class: 'row' }, redirectInput,
      h('button', { type: 'submit', class: ids.button, 'data-testid': r + '-call', text: 'Call this number' })),
    redirectErr);
    // The Redirect… button shows and hides the form.
    const redirectToggle = h('button', { type: 'button', class: ids.toggleClass, 'data-testid': ids.toggle, 'aria-expanded': 'false',
      text: 'Redirect…',
      onclick: (ev) => {
        redirectForm.hidden = !redirectForm.hidden;
        ev.currentTarget.setAttribute('aria-expanded', String(!redirectForm.hidden));
        if (!redirectForm.hidden) redirectInput.focus();
      } });
    return { numbers, def, select, err, redirectForm, redirectToggle };
  }

  function renderBanner() {
    const cur = S.cur;
    if (!cur || !cur.conv) return;
    const banner = $('invitation-banner');
    const inv = bannerInvitation(cur);
    if (!inv) {
      if (cur.bannerFor) {
        const hadFocus = banner.contains(document.activeElement);
        banner.hidden = true;
        banner.replaceChildren();
        cur.bannerFor = null;
        if (hadFocus) $('phone-btn').focus();
      }
      return;
    }
    if (cur.bannerFor === inv.id) return; // keep what the person is typing
    cur.bannerFor = inv.id;
    banner.dataset.invitationId = inv.id;
    const { numbers, def, select, err, redirectForm, redirectToggle } = answerControls(inv,
      { number: 'accept-number', error: 'invitation-error', redirect: 'redirect', button: 'btn btn-primary',
        toggle: 'invite-redirect', toggleClass: 'btn' }, answerInvitation);
    banner.replaceChildren(
      h('p', { class: 'banner-text' }, h('strong', { 'data-testid': 'invitation-headline', text: inviteWords(inv) }),
        ' Accept and convoice calls you; Decline and nothing rings (you stay in the conversation); Redirect to have another number called.'),
      h('div', { class: 'row banner-actions' },
        numbers.length ? h('label', { for: 'accept-number', class: 'inline-label', text: 'Call me at' }) : null,
        numbers.length ? select : null,
        numbers.length ? h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'invite-accept', text: 'Accept',
          onclick: () => {
            const chosen = numbers.find((n) => n.label === select.value);
            answerInvitation(inv, 'accept', chosen && !chosen.default ? { published: chosen.label } : {}, err);
          } }) : h('span', { class: 'small muted', text: 'You have no published number: use Redirect.' }),
        h('button', { type: 'button', class: 'btn', 'data-testid': 'invite-decline', text: 'Decline',
          onclick: () => answerInvitation(inv, 'decline', undefined, err) }),
        redirectToggle),
      redirectForm, err);
    banner.hidden = false;
  }

  async function answerInvitation(inv, action, body, errEl, field) {
    const cur = S.cur;
    if (!cur || cur.answering) return;
    cur.answering = true;
    if (action !== 'decline') askNotify();
    setError(errEl, '');
    if (field) field.removeAttribute('aria-invalid');
    const buttons = $('invitation-banner').querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    const headers = action === 'decline' ? undefined : { 'Idempotency-Key': uuid4() };
    try {
      const r = await api('POST', '/invitations/' + enc(inv.id) + '/' + action, body === undefined ? {} : body, headers);
      S.answered.add(inv.id);
      S.invites.delete(inv.id);
      if (S.cur === cur) {
        mergeInvitation(cur, r.invitation);
        if (r.leg) {
          cur.lastDialLegId = r.leg.id;
          mergeLeg(cur, r.leg);
        }
        renderConversation();
      }
      renderList();
    } catch (e) {
      if (field && isNumberError(e)) fieldError(field, errEl, e.message);
      else setError(errEl, e.message);
      if (e.code === 'invitation_not_pending' || e.code === 'audio_ended' || e.status === 404) {
        S.answered.add(inv.id);
        S.invites.delete(inv.id);
      }
    } finally {
      cur.answering = false;
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  // Answers to our own requests only fill in what events have not yet
  // brought: an event is never older than a request's answer for the same
  // thing, except when the stream is down.
  function mergeLeg(cur, leg) {
    const audio = ensureAudio(cur, leg.conference_id);
    const i = audio.legs.findIndex((l) => l.id === leg.id);
    if (i < 0) audio.legs.push(leg);
    else if ((LEG_RANK[leg.state] || 5) > (LEG_RANK[audio.legs[i].state] || 5)) audio.legs[i] = leg;
  }

  function mergeInvitation(cur, inv) {
    if (!inv) return;
    const audio = ensureAudio(cur, inv.conference_id);
    const i = audio.invitations.findIndex((x) => x.id === inv.id);
    if (i < 0) audio.invitations.push(inv);
    else if (audio.invitations[i].state === 'pending' && inv.state !== 'pending') audio.invitations[i] = inv;
  }

  // ---------------------------------------------------------------- phone: join, leg actions

  async function dial(body, field) {
    const cur = S.cur;
    if (!cur || cur.dialing) return; // one request at a time: a double click never rings twice
    cur.dialing = true;
    askNotify();
    const key = uuid4(); // Idempotency-Key: a retry of this same click is answered, never re-dialed
    setError($('phone-error'), '');
    fieldError($('new-number'), $('new-number-error'), '');
    try {
      const r = await api('POST', '/conversations/' + enc(cur.id) + '/audio', body, { 'Idempotency-Key': key });
      if (S.cur !== cur) return;
      cur.lastDialLegId = r.leg.id;
      // Events may have overtaken this answer (a busy line ends the leg and
      // the conference at once): fill in only what is not known yet.
      ensureAudio(cur, r.conference.id);
      mergeLeg(cur, r.leg);
      if (r.invitation) {
        mergeInvitation(cur, r.invitation);
        S.answered.add(r.invitation.id);
        S.invites.delete(r.invitation.id);
      }
      $('new-number-box').hidden = true;
      $('new-number').value = '';
      renderConversation();
      $('phone-btn').focus();
    } catch (e) {
      if (S.cur !== cur) return;
      // About the typed number: under its field; otherwise under Phone.
      if (field && isNumberError(e)) fieldError(field, $('new-number-error'), e.message);
      else setError($('phone-error'), e.message);
    } finally {
      cur.dialing = false;
    }
  }

  async function legAction(leg, action) {
    const cur = S.cur;
    if (!cur) return;
    setError($('moderation-error'), '');
    try {
      if (action === 'hangup') {
        await api('DELETE', '/legs/' + enc(leg.id));
      } else {
        const l = await api('POST', '/legs/' + enc(leg.id) + '/' + action);
        if (S.cur === cur && l) {
          // mute/unmute: take the answer if no event has moved the leg since
          const audio = cur.audio;
          const i = audio ? audio.legs.findIndex((x) => x.id === l.id) : -1;
          if (i >= 0 && audio.legs[i].state === l.state) audio.legs[i] = l;
          renderConversation();
        }
      }
    } catch (e) {
      setError($('moderation-error'), e.message);
    }
  }

  async function endAudio() {
    const cur = S.cur;
    if (!cur) return;
    setError($('moderation-error'), '');
    $('end-audio-confirm').hidden = true;
    try {
      await api('DELETE', '/conversations/' + enc(cur.id) + '/audio');
      announce('Audio ended for everyone.');
    } catch (e) {
      setError($('moderation-error'), e.message);
    }
  }

  async function togglePresenting() {
    const cur = S.cur;
    if (!cur) return;
    const mine = cur.conv.presenter_id === S.me.id;
    setError($('moderation-error'), '');
    try {
      const v = await api(mine ? 'DELETE' : 'PUT', '/conversations/' + enc(cur.id) + '/presenter');
      if (S.cur === cur && v) {
        cur.conv.presenter_id = v.presenter_id;
        renderConversation();
      }
    } catch (e) {
      setError($('moderation-error'), e.message);
    }
  }

  // ---------------------------------------------------------------- menus

  function renderMenus(cur) {
    const live = myLiveLeg(cur);
    const join = $('join-using');
    join.disabled = !!live;
    join.title = live ? 'You are already on the call' : '';
    $('hangup-me-item').hidden = !live;
    const sub = $('join-menu');
    const items = (S.me.numbers || []).map((n) => h('button', { type: 'button', role: 'menuitem', class: 'menu-item',
      'data-testid': 'join-using-' + n.label, onclick: () => { closeMenus(); dial({ published: n.label }); } },
    h('span', { class: 'menu-label', text: cap(n.label) }), ' ', h('span', { class: 'menu-number', text: fmtNumber(n.number) })));
    items.push(h('button', { type: 'button', role: 'menuitem', class: 'menu-item', 'data-testid': 'join-new-number',
      text: 'New Number…', onclick: () => { closeMenus(); openNewNumber(); } }));
    if (sub.childElementCount !== items.length || sub.dataset.numbers !== JSON.stringify(S.me.numbers)) {
      sub.replaceChildren(...items);
      sub.dataset.numbers = JSON.stringify(S.me.numbers);
    }
    const audioOn = cur.audio && cur.audio.state === 'active';
    const why = audioOn ? '' : 'Start the audio first (Phone → Join Conference Now Using)';
    for (const id of ['invite-someone-item', 'meet-invite-btn', 'meet-invite-someone-item']) {
      $(id).disabled = !audioOn;
      $(id).title = why;
    }
    const links = S.joinLinks === true;
    $('invite-email-item').hidden = !links;
    $('meet-now-btn').hidden = !links;
    if (!links && !$('meet-now-panel').hidden) showMeetNow(false);
  }

  function openNewNumber() {
    $('new-number-box').hidden = false;
    $('new-number').focus();
  }

  function menuItems(menu) {
    return Array.from(menu.querySelectorAll(':scope > [role="menuitem"], :scope > .submenu:not([hidden]) > [role="menuitem"]'))
      .filter((b) => !b.hidden && !b.disabled);
  }

  function openMenu(btn, menu, focusLast) {
    closeMenus();
    menu.hidden = false;
    btn.setAttribute('aria-expanded', 'true');
    const items = menuItems(menu);
    if (items.length) (focusLast ? items[items.length - 1] : items[0]).focus();
  }

  function closeMenus(returnFocusTo) {
    for (const [btnId, menuId] of [['phone-btn', 'phone-menu'], ['invite-btn', 'invite-menu'], ['meet-invite-arrow', 'meet-invite-menu']]) {
      $(menuId).hidden = true;
      $(btnId).setAttribute('aria-expanded', 'false');
    }
    $('join-menu').hidden = true;
    $('join-using').setAttribute('aria-expanded', 'false');
    if (returnFocusTo) returnFocusTo.focus();
  }

  function setupMenu(btn, menu) {
    btn.addEventListener('click', () => {
      if (menu.hidden) openMenu(btn, menu); else closeMenus();
    });
    btn.addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowDown') { ev.preventDefault(); openMenu(btn, menu); }
      if (ev.key === 'ArrowUp') { ev.preventDefault(); openMenu(btn, menu, true); }
    });
    menu.addEventListener('keydown', (ev) => {
      const items = menuItems(menu);
      const i = items.indexOf(document.activeElement);
      if (ev.key === 'ArrowDown') { ev.preventDefault(); items[(i + 1) % items.length].focus(); }
      else if (ev.key === 'ArrowUp') { ev.preventDefault(); items[(i - 1 + items.length) % items.length].focus(); }
      else if (ev.key === 'Home') { ev.preventDefault(); items[0].focus(); }
      else if (ev.key === 'End') { ev.preventDefault(); items[items.length - 1].focus(); }
      else if (ev.key === 'Escape') {
        ev.preventDefault();
        const sub = $('join-menu');
        if (!sub.hidden && sub.contains(document.activeElement)) { toggleJoinMenu(false); $('join-using').focus(); }
        else closeMenus(btn);
      } else if (ev.key === 'Tab') closeMenus();
    });
  }

  function toggleJoinMenu(open, focusFirst) {
    const sub = $('join-menu');
    sub.hidden = !open;
    $('join-using').setAttribute('aria-expanded', String(open));
    if (open && focusFirst) {
      const first = sub.querySelector('[role="menuitem"]');
      if (first) first.focus();
    }
  }

  // ---------------------------------------------------------------- dialogs: new conversation, invite someone

  async function refreshMe() {
    try {
      const me = await api('GET', '/me');
      S.me = me;
    } catch (e) { /* keep what we have */ }
  }

  function pickList(ul, prefix, contacts, filter, disabledWhy, chosen) {
    const q = filter.trim().toLowerCase();
    const shown = contacts.filter((c) => !q || c.display_name.toLowerCase().includes(q) || (c.email || '').toLowerCase().includes(q));
    const items = shown.map((c) => {
      const why = disabledWhy ? disabledWhy(c) : '';
      const id = ul.id + '-' + c.id;
      return h('li', {},
        h('input', { type: 'checkbox', id, value: c.id, 'data-testid': prefix + c.id, disabled: !!why, checked: !why && chosen.has(c.id),
          onchange: (ev) => { if (ev.target.checked) chosen.add(c.id); else chosen.delete(c.id); } }),
        h('label', { for: id }, h('span', { class: 'pick-name', text: c.display_name }),
          h('span', { class: 'muted small pick-detail', text: why || c.email || '' })));
    });
    if (!contacts.length) items.push(h('li', { class: 'muted small', text: 'Your contact list is empty.' }));
    else if (!shown.length) items.push(h('li', { class: 'muted small', text: 'Nobody matches “' + filter + '”.' }));
    replaceKeepFocus(ul, items);
  }

  let newConvChosen = new Set();
  async function openNewConversation() {
    const dlg = $('new-conv-dialog');
    newConvChosen = new Set();
    $('new-conv-subject').value = '';
    $('new-conv-search').value = '';
    setError($('new-conv-error'), '');
    const draw = () => pickList($('new-conv-contacts'), 'new-pick-', S.me.contacts || [], $('new-conv-search').value, null, newConvChosen);
    draw();
    $('new-conv-search').oninput = draw;
    dlg.showModal();
    $('new-conv-subject').focus();
    await refreshMe();
    if (dlg.open) draw();
  }

  async function createConversation(ev) {
    ev.preventDefault();
    const kind = document.querySelector('input[name="kind"]:checked').value;
    const body = { kind, subject: $('new-conv-subject').value.trim(), participants: Array.from(newConvChosen) };
    setError($('new-conv-error'), '');
    const ok = $('new-conv-ok');
    ok.disabled = true;
    try {
      const c = await api('POST', '/conversations', body);
      S.convs.set(c.id, c);
      $('new-conv-dialog').close();
      go('/ui/c/' + enc(c.id));
    } catch (e) {
      setError($('new-conv-error'), e.message);
    } finally {
      ok.disabled = false;
    }
  }

  let inviteChosen = new Set();
  let inviteReturnFocus = null;
  async function openInviteSomeone(returnTo) {
    const cur = S.cur;
    if (!cur || !cur.audio || cur.audio.state !== 'active') return;
    inviteReturnFocus = returnTo || $('invite-btn');
    const dlg = $('invite-dialog');
    inviteChosen = new Set();
    $('invite-search').value = '';
    setError($('invite-error'), '');
    const why = (c) => {
      const pr = presence(S.cur && S.cur.audio, c.id);
      if (['dialing', 'ringing', 'confirming', 'connected', 'muted', 'talking'].includes(pr.key)) return 'already in the audio';
      if (pr.key === 'invited') return 'already invited';
      return '';
    };
    const draw = () => pickList($('invite-contacts'), 'invite-pick-', S.me.contacts || [], $('invite-search').value, why, inviteChosen);
    draw();
    $('invite-search').oninput = draw;
    dlg.showModal();
    $('invite-search').focus();
    await refreshMe();
    if (dlg.open) draw();
  }

  async function inviteSomeone(ev) {
    ev.preventDefault();
    const cur = S.cur;
    if (!cur) return;
    if (!inviteChosen.size) {
      setError($('invite-error'), 'Choose at least one person to invite.');
      return;
    }
    const ok = $('invite-ok');
    ok.disabled = true;
    setError($('invite-error'), '');
    try {
      const r = await api('POST', '/conversations/' + enc(cur.id) + '/audio/invitations', { user_ids: Array.from(inviteChosen) });
      if (S.cur === cur) {
        for (const inv of r.invitations || []) mergeInvitation(cur, inv);
        renderConversation();
      }
      $('invite-dialog').close();
      announce('Invitations sent.');
      (inviteReturnFocus || $('invite-btn')).focus();
    } catch (e) {
      setError($('invite-error'), e.message);
    } finally {
      ok.disabled = false;
    }
  }

  // ---------------------------------------------------------------- Meet Now: join links and guests
  //
  // The seed's "Meet Now → Invite → Invite Using Email": a join link lets
  // people who are not on the contact list join the conversation as guests
  // and be called. It needs the join-link API, which an older server lacks,
  // so Meet Now and the Invite Using Email items show only when the server
  // serves POST /api/v1/conversations/{id}/join-links. We read that from the
  // OpenAPI document: the project's OpenAPI test keeps it exactly equal to
  // the routes (every route described, every described operation routed).
  // Probing the route itself cannot tell (a wrong method answers 404 like a
  // missing route here) and a POST would create a link.
  async function detectJoinLinks() {
    if (S.joinLinks !== null) return;
    try {
      const res = await fetch('/api/openapi.yaml', { credentials: 'same-origin', cache: 'no-store' });
      if (!res.ok) return;
      const doc = await res.text();
      const m = /^ {2}\/api\/v1\/conversations\/\{[^}]+\}\/join-links:[^\n]*\n((?: {3,}[^\n]*\n|\s*\n)*)/m.exec(doc);
      S.joinLinks = !!m && /^ {4}post:/m.test(m[1]);
    } catch (e) {
      return; // offline: ask again with the next conversation
    }
    if (S.cur && S.cur.conv) renderConversation();
  }

  // ---- the Meet Now panel: the Invite split button and the links made so far

  function showMeetNow(open) {
    $('meet-now-panel').hidden = !open;
    $('meet-now-btn').setAttribute('aria-expanded', String(open));
    if (!open) {
      $('meet-invite-menu').hidden = true;
      $('meet-invite-arrow').setAttribute('aria-expanded', 'false');
    }
  }

  function toggleMeetNow() {
    const cur = S.cur;
    if (!cur || !cur.conv) return;
    const open = $('meet-now-panel').hidden;
    showMeetNow(open);
    if (open) {
      renderLinks(cur);
      loadLinks(cur);
    }
  }

  async function loadLinks(cur) {
    try {
      const r = await api('GET', '/conversations/' + enc(cur.id) + '/join-links');
      if (S.cur !== cur) return;
      cur.links = r.join_links || [];
      setError($('join-links-error'), '');
    } catch (e) {
      if (S.cur !== cur) return;
      setError($('join-links-error'), 'Could not load the join links: ' + e.message);
    }
    renderLinks(cur);
  }

  // loadLinksSoon re-reads the links shortly (a guest's arrival changes a
  // link's use count, and no join_link event says so); several arrivals
  // make one request.
  function loadLinksSoon(cur) {
    if (cur.linksTimer) return;
    cur.linksTimer = setTimeout(() => {
      cur.linksTimer = null;
      if (S.cur === cur && !$('meet-now-panel').hidden) loadLinks(cur);
    }, 300);
  }

  function mergeLink(cur, l) {
    if (!cur.links || !l || !l.id) return;
    const v = {};
    for (const k of ['id', 'conversation_id', 'created_by', 'created_at', 'expires_at', 'max_uses', 'uses', 'require_admission', 'state', 'revoked_at']) v[k] = l[k];
    const i = cur.links.findIndex((x) => x.id === v.id);
    if (i >= 0) cur.links[i] = v; else cur.links.push(v);
    cur.links.sort((a, b) => tsOf(b.created_at) - tsOf(a.created_at));
  }

  function liveGuestsOf(cur, linkId) {
    return Array.from(cur.guests.values()).filter((g) => g.join_link_id === linkId && LIVE_GUEST.has(g.state));
  }

  function dateTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }

  function renderLinks(cur) {
    if ($('meet-now-panel').hidden) return;
    const ul = $('join-links');
    if (!cur.links) {
      $('join-links-empty').hidden = true;
      replaceKeepFocus(ul, [h('li', { class: 'muted small', text: 'Loading the join links…' })]);
      return;
    }
    const rows = cur.links.map((l) => {
      let state = l.state;
      if (state === 'active' && tsOf(l.expires_at) && tsOf(l.expires_at) <= Date.now()) state = 'expired';
      const by = l.created_by === S.me.id ? 'you' : nameOf(cur, l.created_by);
      const made = 'Made by ' + by + ' at ' + time(l.created_at);
      const details = [];
      if (state === 'active') details.push('works until ' + dateTime(l.expires_at));
      else if (state === 'revoked' && l.revoked_at) details.push('revoked at ' + time(l.revoked_at));
      else if (state === 'expired') details.push('expired ' + dateTime(l.expires_at));
      details.push(l.max_uses ? l.uses + ' of ' + l.max_uses + ' joined' : l.uses + (l.uses === 1 ? ' guest joined' : ' guests joined'));
      if (l.require_admission) details.push('guests are admitted one by one');
      const actions = [];
      if (state === 'active' && cur.revoking === l.id) {
        const n = liveGuestsOf(cur, l.id).length;
        actions.push(h('span', { class: 'small', id: 'revoke-why-' + l.id,
          text: 'Ends the session and call of ' + (n === 1 ? 'its guest' : 'its ' + n + ' guests') + '. Revoke?' }),
        h('button', { type: 'button', class: 'btn btn-danger btn-small', 'data-testid': 'revoke-confirm-' + l.id,
          'aria-describedby': 'revoke-why-' + l.id, text: 'Yes, revoke', onclick: () => revokeLink(cur, l) }),
        h('button', { type: 'button', class: 'btn btn-quiet btn-small', 'data-testid': 'revoke-keep-' + l.id, text: 'Keep it',
          onclick: () => { cur.revoking = null; renderLinks(cur); focusTestId('revoke-' + l.id); } }));
      } else if (state === 'active') {
        // The link itself was shown once (convoice keeps only its hash):
        // a new one like it is one click away.
        actions.push(h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'copy-new-' + l.id,
          'aria-label': 'Copy a new link like the one ' + made.charAt(0).toLowerCase() + made.slice(1), text: 'Copy a new link',
          onclick: () => copyNewLink(cur, l) }));
        actions.push(h('button', { type: 'button', class: 'btn btn-danger btn-small', 'data-testid': 'revoke-' + l.id,
          'aria-label': 'Revoke the join link ' + made.charAt(0).toLowerCase() + made.slice(1), text: 'Revoke',
          onclick: () => askRevoke(cur, l) }));
      }
      return h('li', { class: 'join-link', 'data-testid': 'join-link-' + l.id, 'data-state': state, tabindex: '-1' },
        h('span', { class: 'join-link-main' },
          h('span', { class: 'join-link-head' }, h('span', { text: made }),
            h('span', { class: 'link-state link-state-' + state, 'data-testid': 'link-state-' + l.id, text: LINK_STATE_TEXT[state] || state })),
          h('span', { class: 'muted small', text: cap(details.join(' · ')) + '.' })),
        actions.length ? h('span', { class: 'join-link-actions' }, actions) : null);
    });
    replaceKeepFocus(ul, rows);
    $('join-links-empty').hidden = rows.length > 0;
  }

  function focusTestId(id) {
    const el = document.querySelector('[data-testid="' + CSS.escape(id) + '"]');
    if (el) el.focus();
  }

  // askRevoke revokes at once a link nobody is using; when guests are in
  // with it, it asks first (revoking ends their sessions and calls).
  function askRevoke(cur, l) {
    if (!liveGuestsOf(cur, l.id).length) {
      revokeLink(cur, l);
      return;
    }
    cur.revoking = l.id;
    renderLinks(cur);
    focusTestId('revoke-keep-' + l.id);
  }

  async function revokeLink(cur, l) {
    cur.revoking = null;
    setError($('join-links-error'), '');
    try {
      await api('DELETE', '/join-links/' + enc(l.id));
      if (S.cur !== cur) return;
      const now = new Date().toISOString();
      mergeLink(cur, Object.assign({}, l, { state: 'revoked', revoked_at: l.revoked_at || now }));
      renderLinks(cur);
      focusTestId('join-link-' + l.id); // its Revoke button is gone: keep the keyboard on its row
      announce('The join link is revoked; it no longer works.');
      loadLinks(cur);
    } catch (e) {
      if (S.cur !== cur) return;
      setError($('join-links-error'), e.message);
      renderLinks(cur);
    }
  }

  // ---- the lobby: guests waiting to be admitted (any participant decides)

  function renderLobby(cur) {
    const box = $('lobby');
    const hadFocus = box.contains(document.activeElement);
    const waiting = Array.from(cur.guests.values()).filter((g) => g.state === 'lobby')
      .sort((a, b) => tsOf(a.created_at) - tsOf(b.created_at));
    if (!waiting.length) {
      box.hidden = true;
      $('lobby-list').replaceChildren();
      if (hadFocus) $('phone-btn').focus();
      return;
    }
    const rows = waiting.map((g) => h('li', { class: 'lobby-guest', 'data-testid': 'lobby-guest-' + g.id },
      h('span', { class: 'lobby-who' },
        h('span', { class: 'person-name' }, h('span', { text: g.display_name }), h('span', { class: 'tag tag-guest', text: 'guest' })),
        h('span', { class: 'muted small', text: (g.number ? 'Asks to be called at ' + fmtNumber(g.number) + ' · ' : '') + 'waiting since ' + time(g.created_at) })),
      h('span', { class: 'lobby-actions' },
        h('button', { type: 'button', class: 'btn btn-primary btn-small', 'data-testid': 'admit-' + g.id,
          'aria-label': 'Admit ' + g.display_name + ' and call them', text: 'Admit', onclick: () => decideGuest(cur, g, 'admit') }),
        h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'refuse-' + g.id,
          'aria-label': 'Refuse ' + g.display_name, text: 'Refuse', onclick: () => decideGuest(cur, g, 'refuse') }))));
    replaceKeepFocus($('lobby-list'), rows);
    box.hidden = false;
    if (hadFocus && !box.contains(document.activeElement)) {
      const next = box.querySelector('button');
      if (next) next.focus();
    }
  }

  async function decideGuest(cur, g, action) {
    if (cur.deciding) return; // one at a time: a double click never calls twice
    cur.deciding = g.id;
    setError($('lobby-error'), '');
    try {
      const r = await api('POST', '/conversations/' + enc(cur.id) + '/guests/' + enc(g.id) + '/' + action, {},
        action === 'admit' ? { 'Idempotency-Key': uuid4() } : undefined);
      if (S.cur !== cur) return;
      const known = cur.guests.get(g.id);
      if (r && r.guest && (!known || known.state === 'lobby')) applyGuest(cur, r.guest);
      if (r && r.leg) mergeLeg(cur, r.leg);
      announce(action === 'admit' ? g.display_name + ' is admitted; convoice is calling them.' : g.display_name + ' was turned away.');
      renderConversation();
    } catch (e) {
      if (S.cur !== cur) return;
      setError($('lobby-error'), e.message);
      if (e.code === 'guest_not_waiting' || e.status === 404) refreshGuests(cur);
    } finally {
      cur.deciding = null;
    }
  }

  async function refreshGuests(cur) {
    try {
      const r = await api('GET', '/conversations/' + enc(cur.id) + '/guests');
      if (S.cur !== cur) return;
      for (const g of r.guests || []) applyGuest(cur, g);
      renderConversation();
    } catch (e) { /* the stream brings it */ }
  }

  // ---- Invite Using Email: options, the link, Copy, the e-mail

  let emailReturnFocus = null;
  function openInviteEmail(returnTo) {
    const cur = S.cur;
    if (!cur || S.joinLinks !== true) return;
    emailReturnFocus = returnTo || null;
    setError($('email-error'), '');
    $('join-link-expires').value = '86400';
    $('join-link-max-uses').value = '';
    $('join-link-admit').checked = false;
    $('join-link-result').hidden = true;
    $('join-link-url').value = '';
    $('join-link-mailto').setAttribute('href', '#');
    $('join-link-subject').textContent = '';
    $('join-link-body').textContent = '';
    setCopied('none', '');
    $('join-link-make').textContent = 'Make link';
    $('email-dialog').showModal();
    $('join-link-expires').focus();
  }

  async function makeJoinLink() {
    const cur = S.cur;
    if (!cur || cur.makingLink) return;
    const btn = $('join-link-make');
    const body = { expires_in_s: Number($('join-link-expires').value) || 86400 };
    const max = $('join-link-max-uses').value;
    if (max) body.max_uses = Number(max);
    if ($('join-link-admit').checked) body.require_admission = true;
    cur.makingLink = true;
    btn.disabled = true;
    setError($('email-error'), '');
    try {
      const r = await api('POST', '/conversations/' + enc(cur.id) + '/join-links', body);
      if (S.cur !== cur) return;
      showJoinLink(cur, r);
      mergeLink(cur, r);
      renderLinks(cur);
    } catch (e) {
      setError($('email-error'), e.message);
    } finally {
      cur.makingLink = false;
      btn.disabled = false;
    }
  }

  function showJoinLink(cur, r) {
    const bits = ['Works until ' + dateTime(r.expires_at)];
    if (r.max_uses) bits.push(r.max_uses === 1 ? 'for one person' : 'for up to ' + r.max_uses + ' people');
    let text = bits.join(', ') + '.';
    if (r.require_admission) text += ' Guests wait until someone in the conversation admits them.';
    text += ' convoice shows this link only now (it keeps only a hash of it): copy it, or write the e-mail, before you close this window — Copy a new link in Meet Now makes another like it later.';
    // The server words the e-mail; an older one may not, so there is a plain fallback.
    const subject = r.subject || 'Join the conversation' + (cur.conv.subject ? ' “' + cur.conv.subject + '”' : '') + ' by phone';
    const body = r.body || 'Open this link, give your name and a phone number, and convoice will call you into the conversation:\n\n' + r.url + '\n';
    const mailto = r.mailto || 'mailto:?subject=' + enc(subject) + '&body=' + enc(body.replace(/\r?\n/g, '\r\n'));
    $('join-link-url').value = r.url;
    $('join-link-expiry').textContent = text;
    $('join-link-subject').textContent = subject;
    $('join-link-body').textContent = body;
    $('join-link-mailto').setAttribute('href', mailto);
    setCopied('none', '');
    $('join-link-result').hidden = false;
    $('join-link-make').textContent = 'Make another link';
    $('join-link-url').focus();
    $('join-link-url').select();
    announce('The join link is ready. Copy it, or write an e-mail with it.');
  }

  function setCopied(state, text) {
    const el = $('join-link-copied');
    el.dataset.state = state;
    el.textContent = '';
    // A new text node after a tick is read out even when the text repeats.
    if (text) setTimeout(() => { if (el.dataset.state === state) el.textContent = text; }, 30);
  }

  // copyJoinLink writes the link to the clipboard. When the clipboard API is
  // refused (no permission, the page not focused, headless browsers…) it
  // selects the whole link and tries the older copy command; failing that,
  // the selection waits for Ctrl+C.
  async function copyJoinLink() {
    const input = $('join-link-url');
    if (!input.value) return;
    let copied = false;
    if (navigator.clipboard && navigator.clipboard.writeText) {
      try {
        await Promise.race([navigator.clipboard.writeText(input.value),
          new Promise((resolve, reject) => setTimeout(() => reject(new Error('clipboard: no answer')), 1500))]);
        copied = true;
      } catch (e) {
        copied = false;
      }
    }
    if (!copied) {
      input.focus();
      input.setSelectionRange(0, input.value.length);
      try { copied = document.execCommand('copy'); } catch (e) { copied = false; }
    }
    if (copied) setCopied('copied', 'Link copied.');
    else setCopied('selected', 'The link is selected: press Ctrl+C (⌘C on a Mac) to copy it.');
  }


  // ---------------------------------------------------------------- invitations you cannot miss (issue 18)
  //
  // A new invitation rings a short chime (Web Audio oscillator: no sound
  // file; muted by the topbar's Sound button, remembered in localStorage),
  // shows a browser notification when the tab is hidden (permission is
  // asked only when the person starts or accepts audio, or clicks Notify
  // me), counts in the title ("(1) convoice"), and shows a toast with
  // Accept / Decline / Redirect wherever the person is — unless the
  // invitation's conversation is open, where its banner has them.
  //
  // Screen readers hear each invitation once, from the #invite-live region
  // (not from the banner or the toast, which carry the buttons).

  const SOUND_KEY = 'convoice.invitationSound';
  const AL = {
    ctx: null, // AudioContext, made on first use
    alerted: new Set(), // invitation ids already rung / spoken
    ready: false, // the first invitation list is in: later ones are new
    asked: false, // Notification permission asked in this page
    base: 'convoice', // the title without the count
    toastFor: null, // invitation id the toast shows
    starters: new Map(), // conference id → "Gina Green (guest)" (guest-started audio)
    fetching: new Set(),
  };

  function soundOn() {
    try { return localStorage.getItem(SOUND_KEY) !== 'off'; } catch (e) { return true; }
  }

  function notifySupported() {
    return typeof window.Notification === 'function';
  }

  function renderAlertControls() {
    const on = soundOn();
    const snd = $('sound-toggle');
    snd.hidden = !S.me;
    snd.setAttribute('aria-pressed', String(on));
    snd.textContent = on ? 'Sound: on' : 'Sound: off'; // its name, "Invitation sound", is the aria-label
    const n = $('notify-me');
    n.hidden = !S.me || !notifySupported() || window.Notification.permission !== 'default';
  }

  function toggleSound() {
    const on = !soundOn();
    try { localStorage.setItem(SOUND_KEY, on ? 'on' : 'off'); } catch (e) { /* this page only */ }
    renderAlertControls();
    if (on) chime(); // let the person hear what it sounds like
  }

  // askNotify asks for permission to notify, once, at a moment the person
  // acts on audio (never on load).
  function askNotify() {
    if (!notifySupported() || AL.asked || window.Notification.permission !== 'default') return;
    AL.asked = true;
    try {
      const p = window.Notification.requestPermission(renderAlertControls);
      if (p && typeof p.then === 'function') p.then(renderAlertControls, renderAlertControls);
    } catch (e) { /* an old browser: no notifications */ }
  }

  // chime plays two soft tones. Browsers let audio start only after the
  // person has used the page; before that it stays silent.
  function chime() {
    if (!soundOn()) return;
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    try {
      if (!AL.ctx) AL.ctx = new AC();
      const ctx = AL.ctx;
      if (ctx.state === 'suspended' && ctx.resume) ctx.resume();
      const t0 = ctx.currentTime;
      [[660, 0], [880, 0.18], [660, 0.6], [880, 0.78]].forEach(([f, at]) => {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        osc.type = 'sine';
        osc.frequency.setValueAtTime(f, t0 + at);
        gain.gain.setValueAtTime(0.0001, t0 + at);
        gain.gain.exponentialRampToValueAtTime(0.2, t0 + at + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + 0.32);
        osc.connect(gain);
        gain.connect(ctx.destination);
        osc.start(t0 + at);
        osc.stop(t0 + at + 0.35);
      });
    } catch (e) { /* no sound is no failure */ }
  }

  function openInvitations() {
    return Array.from(S.invites.values()).filter((inv) => !S.answered.has(inv.id))
      .sort((a, b) => tsOf(a.created_at) - tsOf(b.created_at));
  }

  function setBaseTitle(t) {
    AL.base = t;
    updateTitle();
  }

  function updateTitle() {
    const n = S.me ? openInvitations().length : 0;
    const want = (n ? '(' + n + ') ' : '') + AL.base;
    if (document.title !== want) document.title = want;
  }

  // personName names a user for an invitation outside the open conversation.
  function personName(convId, userId) {
    if (!userId) return '';
    if (S.cur && S.cur.id === convId && S.cur.conv) return nameOf(S.cur, userId);
    const c = S.convs.get(convId);
    const p = c && (c.participants || []).find((x) => x.user_id === userId);
    if (p) return p.display_name;
    const k = S.me && (S.me.contacts || []).find((x) => x.id === userId);
    return k ? k.display_name : 'Someone';
  }

  // starterName names whoever started a guest-started conference: its
  // first call's guest. Known from the open conversation, or read once.
  function starterName(inv) {
    const cur = S.cur;
    if (cur && cur.id === inv.conversation_id && cur.audio && cur.audio.id === inv.conference_id) {
      const first = cur.audio.legs.filter((l) => l.guest_id).sort((a, b) => tsOf(a.created_at) - tsOf(b.created_at))[0];
      if (first) return guestName(cur, first.guest_id);
    }
    if (AL.starters.has(inv.conference_id)) return AL.starters.get(inv.conference_id);
    fetchStarter(inv);
    return '';
  }

  async function fetchStarter(inv) {
    if (AL.fetching.has(inv.conference_id)) return;
    AL.fetching.add(inv.conference_id);
    try {
      const [a, g] = await Promise.all([
        api('GET', '/conversations/' + enc(inv.conversation_id) + '/audio?last=true'),
        api('GET', '/conversations/' + enc(inv.conversation_id) + '/guests').catch(() => ({ guests: [] }))]);
      const first = (a.legs || []).filter((l) => l.guest_id).sort((x, y) => tsOf(x.created_at) - tsOf(y.created_at))[0];
      const guest = first && (g.guests || []).find((x) => x.id === first.guest_id);
      AL.starters.set(inv.conference_id, guest ? guest.display_name + ' (guest)' : 'A guest');
      AL.toastFor = null; // redraw with the name
      renderToast();
    } catch (e) { /* the toast keeps its general words */ }
  }

  // inviteWords is the invitation's headline: who invited, or which guest
  // started the audio (a guest's audio invites every member, the organiser
  // too, and has no inviting user).
  function inviteWords(inv) {
    if (inv.invited_by) {
      const who = personName(inv.conversation_id, inv.invited_by);
      return who === 'You' ? 'Audio invitation.' : who + ' invited you to the audio conference.';
    }
    const g = starterName(inv);
    return (g || 'A guest') + ' started the audio — join them?';
  }

  function inviteLive(text) {
    const el = $('invite-live');
    el.textContent = '';
    setTimeout(() => { el.textContent = text; }, 30);
  }

  // invitationsChanged runs after the invitation list may have changed:
  // rings for the new ones, updates the title and the toast.
  function invitationsChanged() {
    if (!S.me) return;
    for (const inv of openInvitations()) {
      if (AL.alerted.has(inv.id)) continue;
      AL.alerted.add(inv.id);
      alertInvitation(inv, AL.ready);
    }
    updateTitle();
    renderToast();
  }

  function alertInvitation(inv, fresh) {
    const c = S.convs.get(inv.conversation_id);
    const text = inviteWords(inv) + (c ? ' (' + convName(c) + ')' : '');
    inviteLive(text);
    if (!fresh) return; // already waiting when the page loaded: no ring
    chime();
    if (document.hidden && notifySupported() && window.Notification.permission === 'granted') {
      try {
        const n = new window.Notification('convoice: audio invitation', { body: text, tag: 'convoice-invitation-' + inv.id });
        n.onclick = () => {
          window.focus();
          go('/ui/c/' + enc(inv.conversation_id));
          n.close();
        };
      } catch (e) { /* notifications refused by the browser */ }
    }
  }

  // toastInvitation: the oldest open invitation whose conversation is not
  // the open one (there, the banner shows it).
  function toastInvitations() {
    return openInvitations().filter((inv) => !(S.cur && S.cur.id === inv.conversation_id && S.cur.conv));
  }

  function renderToast() {
    const box = $('invite-toast');
    const list = S.me ? toastInvitations() : [];
    const inv = list[0];
    if (!inv) {
      if (AL.toastFor) {
        const hadFocus = box.contains(document.activeElement);
        box.hidden = true;
        box.replaceChildren();
        AL.toastFor = null;
        if (hadFocus) $('main').focus();
      }
      return;
    }
    const more = list.length - 1;
    if (AL.toastFor === inv.id) {
      const m = box.querySelector('.toast-more');
      if (m) m.textContent = more > 0 ? '+' + more + ' more' : '';
      return;
    }
    AL.toastFor = inv.id;
    box.dataset.invitationId = inv.id;
    const c = S.convs.get(inv.conversation_id);
    const { numbers, def, select, err, redirectForm, redirectToggle } = answerControls(inv,
      { number: 'toast-number', error: 'toast-error', redirect: 'toast-redirect', button: 'btn btn-primary btn-small', label: 'Call me at',
        toggle: 'toast-redirect', toggleClass: 'btn btn-small' }, toastAnswer);
    box.replaceChildren(
      h('p', { class: 'toast-text' }, h('strong', { 'data-testid': 'toast-headline', text: inviteWords(inv) }), ' ',
        c ? h('a', { href: '/ui/c/' + enc(c.id), 'data-testid': 'toast-open',
          onclick: (ev) => { ev.preventDefault(); go('/ui/c/' + enc(c.id)); } }, convName(c)) : null,
        h('span', { class: 'toast-more small muted', text: more > 0 ? '+' + more + ' more' : '' })),
      h('div', { class: 'row toast-actions' },
        numbers.length > 1 ? select : null,
        numbers.length ? h('button', { type: 'button', class: 'btn btn-primary btn-small', 'data-testid': 'toast-accept',
          text: numbers.length > 1 ? 'Accept' : 'Accept (' + fmtNumber(def.number) + ')',
          onclick: () => {
            const chosen = numbers.length > 1 ? numbers.find((n) => n.label === select.value) : def;
            toastAnswer(inv, 'accept', chosen && !chosen.default ? { published: chosen.label } : {}, err);
          } }) : null,
        h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'toast-decline', text: 'Decline',
          onclick: () => toastAnswer(inv, 'decline', undefined, err) }),
        redirectToggle),
      redirectForm, err);
    box.hidden = false;
  }

  // toastAnswer answers from the toast; accepting or redirecting opens the
  // conversation, where the call shows.
  async function toastAnswer(inv, action, body, errEl, field) {
    if (AL.answering) return;
    AL.answering = true;
    if (action !== 'decline') askNotify();
    setError(errEl, '');
    if (field) field.removeAttribute('aria-invalid');
    const buttons = $('invite-toast').querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await api('POST', '/invitations/' + enc(inv.id) + '/' + action, body === undefined ? {} : body,
        action === 'decline' ? undefined : { 'Idempotency-Key': uuid4() });
      S.answered.add(inv.id);
      S.invites.delete(inv.id);
      renderList();
      if (action !== 'decline') go('/ui/c/' + enc(inv.conversation_id));
    } catch (e) {
      if (field && isNumberError(e)) fieldError(field, errEl, e.message);
      else setError(errEl, e.message);
      if (e.code === 'invitation_not_pending' || e.code === 'audio_ended' || e.status === 404) {
        S.answered.add(inv.id);
        S.invites.delete(inv.id);
        renderList();
      }
    } finally {
      AL.answering = false;
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  // ---------------------------------------------------------------- plain words for calls (issue 18)

  // Errors about the number itself belong under the number's field.
  const NUMBER_CODES = new Set(['invalid_number', 'number_not_allowed', 'country_not_allowed', 'number_type_not_allowed', 'extension_not_allowed']);
  function isNumberError(e) {
    return e.field === 'number' || NUMBER_CODES.has(e.code);
  }

  function fieldError(field, errEl, msg) {
    setError(errEl, msg);
    if (msg) {
      field.setAttribute('aria-invalid', 'true');
      field.focus();
    } else {
      field.removeAttribute('aria-invalid');
    }
  }

  // Q.850 causes that mean the number does not exist, and those that mean
  // the network is congested or out of order for now.
  const CAUSE_NO_NUMBER = new Set([1, 3, 22, 28]);
  const CAUSE_NETWORK = new Set([27, 34, 38, 41, 42, 44, 47]);

  // outcome words a leg's end for people, never the exchange's texts.
  function outcome(l) {
    switch (l.state) {
      case 'busy': return 'Line busy';
      case 'no_answer': return 'No answer';
      case 'rejected': return 'They declined the call';
      case 'unconfirmed': return PRESENCE_TEXT.unconfirmed;
      case 'cancelled': return 'Call cancelled';
      case 'failed':
        if (CAUSE_NO_NUMBER.has(l.cause)) return 'That number doesn’t exist — check it';
        if (CAUSE_NETWORK.has(l.cause)) return 'The phone network is busy — try again in a minute';
        return 'The call couldn’t be completed';
      case 'ended': return 'Call ended';
      default: return '';
    }
  }

  // hungUpBy names who hung up a call that convoice ended on request:
  // "hung up by Alice Archer" (the organiser) → "Alice Archer"; the
  // participant themselves or the audio's end → ''.
  function hungUpBy(l) {
    const m = /^hung up by (.+)$/.exec(l.end_reason || '');
    return m && m[1] !== 'the participant' ? m[1] : '';
  }

  // endDetail is the short line under a person whose call is over.
  function endDetail(l) {
    if (l.state === 'ended') {
      const by = hungUpBy(l);
      if (by) return 'hung up by ' + by;
      if (/^audio /.test(l.end_reason || '')) return '';
      return l.end_reason && !/^hung up by the participant$/.test(l.end_reason) ? l.end_reason : '';
    }
    return outcome(l);
  }

  function otherConnected(cur, l) {
    return !!cur.audio && cur.audio.legs.some((x) => x.id !== l.id && x.state === 'connected');
  }

  // ---------------------------------------------------------------- a way back after a failure (issue 18)

  const RETRY_STATES = new Set(['busy', 'no_answer', 'rejected', 'failed', 'unconfirmed', 'ended', 'cancelled']);

  // renderRetry offers "Call me again" (the same number) and "Call my
  // mobile instead" (another published number) under my call when it
  // failed or someone else hung it up.
  function renderRetry(cur, leg, live) {
    const box = $('my-call-retry');
    const show = !!leg && !live && RETRY_STATES.has(leg.state) && !(leg.state === 'ended' && !hungUpBy(leg));
    if (!show) {
      box.hidden = true;
      box.replaceChildren();
      box.dataset.leg = '';
      return;
    }
    if (box.dataset.leg === leg.id + leg.state) return;
    box.dataset.leg = leg.id + leg.state;
    const numbers = S.me.numbers || [];
    const same = numbers.find((n) => n.number === leg.number);
    const other = numbers.find((n) => n.number !== leg.number && n.label === 'mobile') || numbers.find((n) => n.number !== leg.number);
    const again = h('button', { type: 'button', class: 'btn btn-primary btn-small', 'data-testid': 'call-again', text: 'Call me again',
      onclick: () => dial(same ? { published: same.label } : { number: leg.number }) });
    const instead = other ? h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'call-other',
      text: 'Call my ' + other.label + ' instead', 'aria-label': 'Call my ' + other.label + ' instead (' + fmtNumber(other.number) + ')',
      onclick: () => dial({ published: other.label }) }) : null;
    box.replaceChildren(again, instead);
    box.hidden = false;
  }

  // reinvite: the organiser invites again someone whose call failed or
  // who was hung up; it rings their page and they choose the number (a
  // guest calls themselves again from their own page).
  async function reinvite(cur, userId) {
    setError($('moderation-error'), '');
    try {
      const r = await api('POST', '/conversations/' + enc(cur.id) + '/audio/invitations', { user_ids: [userId] });
      if (S.cur === cur) {
        for (const inv of r.invitations || []) mergeInvitation(cur, inv);
        renderConversation();
      }
      liveSay('people-live', 'Invitation sent to ' + nameOf(cur, userId) + '.');
    } catch (e) {
      setError($('moderation-error'), e.message);
    }
  }


  // ---------------------------------------------------------------- live regions (issue 18)

  function liveSay(id, text) {
    const el = $(id);
    if (el.dataset.said === text) return;
    el.dataset.said = text;
    el.textContent = '';
    setTimeout(() => { if (el.dataset.said === text) el.textContent = text; }, 30);
  }

  // announcePeople speaks the participants whose audio state changed
  // since the last render (not the first render of a conversation).
  function announcePeople(cur, states) {
    const before = cur.peopleStates;
    cur.peopleStates = states;
    if (!before) return;
    const said = [];
    for (const [key, v] of states) {
      const old = before.get(key);
      if (old && old.state !== v.state && v.state !== 'none') said.push(v.name + ': ' + v.text);
    }
    if (said.length) liveSay('people-live', said.join('. ') + '.');
  }

  // copyNewLink makes a new join link with the same settings as l (how long
  // it works, who can use it, admission) and shows it ready to copy: a
  // link is shown only when it is made, since convoice stores only its
  // hash. The old link keeps working for whoever already has it.
  async function copyNewLink(cur, l) {
    if (cur.makingLink) return;
    cur.makingLink = true;
    setError($('join-links-error'), '');
    const secs = Math.round((tsOf(l.expires_at) - tsOf(l.created_at)) / 1000);
    const body = { expires_in_s: secs > 0 && secs <= 2592000 ? secs : 86400 };
    if (l.max_uses) body.max_uses = l.max_uses;
    if (l.require_admission) body.require_admission = true;
    try {
      const r = await api('POST', '/conversations/' + enc(cur.id) + '/join-links', body);
      if (S.cur !== cur) return;
      mergeLink(cur, r);
      renderLinks(cur);
      openInviteEmail($('meet-now-btn'));
      showJoinLink(cur, r);
      copyJoinLink();
    } catch (e) {
      if (S.cur === cur) setError($('join-links-error'), e.message);
    } finally {
      cur.makingLink = false;
    }
  }

  // ---------------------------------------------------------------- wiring

  function bindStatic() {
    $('signin-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const tok = $('token-input').value;
      if (!tok.trim()) {
        setError($('signin-error'), 'Paste your convoice token.');
        return;
      }
      setError($('signin-error'), '');
      try {
        await signIn(tok);
      } catch (e) {
        setError($('signin-error'), e.message);
      }
    });
    $('signout').addEventListener('click', signOut);
    $('sound-toggle').addEventListener('click', toggleSound);
    $('notify-me').addEventListener('click', () => { AL.asked = false; askNotify(); });
    $('new-conv-btn').addEventListener('click', openNewConversation);
    $('new-conv-form').addEventListener('submit', createConversation);
    $('new-conv-cancel').addEventListener('click', () => $('new-conv-dialog').close());
    $('invite-form').addEventListener('submit', inviteSomeone);
    $('invite-cancel').addEventListener('click', () => $('invite-dialog').close());
    $('email-form').addEventListener('submit', () => $('email-dialog').close());
    $('join-link-copy').addEventListener('click', copyJoinLink);
    $('back-btn').addEventListener('click', () => go('/'));

    setupMenu($('phone-btn'), $('phone-menu'));
    setupMenu($('invite-btn'), $('invite-menu'));
    // Enter and Space reach here as the button's own click (detail 0: from
    // the keyboard, so focus moves into the submenu); ArrowRight opens too.
    $('join-using').addEventListener('click', (ev) => {
      const open = $('join-menu').hidden;
      toggleJoinMenu(open, ev.detail === 0);
    });
    $('join-using').addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowRight') { ev.preventDefault(); toggleJoinMenu(true, true); }
    });
    $('join-menu').addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowLeft') { ev.preventDefault(); ev.stopPropagation(); toggleJoinMenu(false); $('join-using').focus(); }
    });
    $('hangup-me-item').addEventListener('click', () => {
      closeMenus($('phone-btn'));
      const live = S.cur && myLiveLeg(S.cur);
      if (live) legAction(live, 'hangup');
    });
    $('invite-someone-item').addEventListener('click', () => { closeMenus(); openInviteSomeone($('invite-btn')); });
    $('invite-email-item').addEventListener('click', () => { closeMenus(); openInviteEmail($('invite-btn')); });

    // Meet Now: the panel, its Invite split button (the arrow opens the menu).
    $('meet-now-btn').addEventListener('click', toggleMeetNow);
    $('meet-now-close').addEventListener('click', () => { showMeetNow(false); $('meet-now-btn').focus(); });
    setupMenu($('meet-invite-arrow'), $('meet-invite-menu'));
    $('meet-invite-btn').addEventListener('click', () => { closeMenus(); openInviteSomeone($('meet-invite-btn')); });
    $('meet-invite-someone-item').addEventListener('click', () => { closeMenus(); openInviteSomeone($('meet-invite-arrow')); });
    $('meet-invite-email-item').addEventListener('click', () => { closeMenus(); openInviteEmail($('meet-invite-arrow')); });
    $('join-link-make').addEventListener('click', makeJoinLink);
    $('join-link-url').addEventListener('focus', (ev) => ev.target.select());
    // A closed dialog gives the keyboard back to what opened it (the menu
    // item that did is hidden by then).
    $('email-dialog').addEventListener('close', () => {
      const to = emailReturnFocus && !emailReturnFocus.hidden && emailReturnFocus.getClientRects().length ? emailReturnFocus : $('phone-btn');
      const a = document.activeElement;
      if (!a || a === document.body || $('email-dialog').contains(a)) to.focus();
      emailReturnFocus = null;
    });
    $('invite-dialog').addEventListener('close', () => {
      const to = inviteReturnFocus && inviteReturnFocus.getClientRects().length ? inviteReturnFocus : $('invite-btn');
      const a = document.activeElement;
      if (!a || a === document.body || $('invite-dialog').contains(a)) to.focus();
    });
    document.addEventListener('click', (ev) => {
      if (!ev.target.closest('.menu-wrap')) closeMenus();
    });

    $('new-number-box').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = $('new-number').value;
      if (!v.trim()) {
        fieldError($('new-number'), $('new-number-error'), 'Type the phone number convoice should call.');
        return;
      }
      dial({ number: v }, $('new-number'));
    });
    $('new-number').addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') { $('new-number-box').hidden = true; $('phone-btn').focus(); }
    });
    $('new-number-cancel').addEventListener('click', () => {
      $('new-number-box').hidden = true;
      setError($('phone-error'), '');
      fieldError($('new-number'), $('new-number-error'), '');
      $('phone-btn').focus();
    });

    $('end-audio-btn').addEventListener('click', () => {
      $('end-audio-confirm').hidden = false;
      $('end-audio-no').focus();
    });
    $('end-audio-no').addEventListener('click', () => {
      $('end-audio-confirm').hidden = true;
      $('end-audio-btn').focus();
    });
    $('end-audio-yes').addEventListener('click', endAudio);
    $('presenter-btn').addEventListener('click', togglePresenting);

    $('composer').addEventListener('submit', (ev) => { ev.preventDefault(); sendMessage(); });
    $('message-input').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        sendMessage();
      }
    });

    window.addEventListener('popstate', () => { if (S.me) route(); });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && S.me) {
        pollInvites();
        loadConversations();
      }
    });
    // A sign-in link opened in a tab that already shows convoice.
    window.addEventListener('hashchange', () => {
      const tok = takeHashToken();
      if (tok) signInWithLink(tok);
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
}());
