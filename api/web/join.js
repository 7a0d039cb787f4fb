// convoice guest page (/join/{token}). Plain script, no inline code (the
// page's CSP allows scripts from this origin only).
//
// The join-link token is read from this page's own address and sent only
// to POST/GET /api/v1/join/{token}. The guest session lives in an HttpOnly
// cookie set by the join answer; this script never stores a token, and
// sends the session's CSRF token (not a secret worth stealing on its own)
// with every change.
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const token = location.pathname.replace(/^\/join\//, '').replace(/\/+$/, '');

  const LIVE = new Set(['dialing', 'ringing', 'confirming', 'connected']);
  const CALL_TEXT = {
    none: 'Not in a call',
    dialing: 'Calling you…',
    ringing: 'Your phone is ringing – answer it to join',
    connected: 'Connected – you are in the conference',
    ended: 'The call has ended',
    busy: 'Your line was busy',
    no_answer: 'You did not answer',
    rejected: 'The call was turned down',
    failed: 'The call could not be placed',
    cancelled: 'The call was cancelled',
    // confirming and unconfirmed name the key: setConfirmKey.
  };

  // setConfirmKey words the confirming states with the key a called phone
  // presses to join (the server's CONVOICE_CONFIRM_KEY, given with the
  // guest session).
  function setConfirmKey(k) {
    const key = k || '1';
    CALL_TEXT.confirming = 'You answered – press ' + key + ' to join the conference';
    CALL_TEXT.unconfirmed = 'The call was answered but nobody pressed ' + key + ' – probably voicemail';
  }
  setConfirmKey('1');

  const S = {
    csrf: '',
    guest: null, // the guest view
    leg: null, // my newest leg
    es: null, // EventSource
    messages: new Set(),
    chatLoaded: false,
    idemKey: '', // Idempotency-Key of the current join attempt
    idemFor: '',
    info: null, // the link's description (before joining)
    over: false,
    others: new Set(), // the other calls connected in my call's conference
  };

  // A number the server refuses as a number (its words name the country)
  // is said under the number's field, not under the button.
  const NUMBER_CODES = new Set(['invalid_number', 'number_not_allowed', 'country_not_allowed', 'number_type_not_allowed', 'extension_not_allowed']);

  // ---- helpers --------------------------------------------------------------

  function show(id) {
    for (const v of ['boot', 'invalid-view', 'join-view', 'session-view', 'ended-view']) $(v).hidden = v !== id;
  }

  function announce(text) {
    $('announcer').textContent = text;
  }

  function randomKey() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  async function api(method, path, body, headers) {
    const h = Object.assign({ Accept: 'application/json' }, headers || {});
    if (body !== undefined) h['Content-Type'] = 'application/json';
    if (S.csrf && method !== 'GET') h['X-CSRF-Token'] = S.csrf;
    let r;
    try {
      r = await fetch('/api/v1' + path, {
        method, headers: h, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin', cache: 'no-store', referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      return { status: 0, data: null, error: { code: 'network', message: 'convoice cannot be reached; check your connection and try again.' } };
    }
    let data = null;
    if (r.status !== 204) {
      try { data = await r.json(); } catch (e) { data = null; }
    }
    const error = data && data.error ? data.error : (r.ok ? null : { code: 'http_' + r.status, message: 'Something went wrong (' + r.status + ').' });
    return { status: r.status, data, error, headers: r.headers };
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function fmtNumber(n) {
    // +12025550123 → +1 202 555 0123 (North America); others as they are.
    const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(n || '');
    return m ? '+1 ' + m[1] + ' ' + m[2] + ' ' + m[3] : (n || '');
  }

  // ---- start ----------------------------------------------------------------

  async function boot() {
    if (!token || token.includes('/')) {
      showInvalid('This address is not a join link.');
      return;
    }
    // A session in this browser (a reload) is resumed when it is for this
    // link's conversation.
    const [sess, info] = await Promise.all([api('GET', '/guest'), api('GET', '/join/' + encodeURIComponent(token))]);
    if (sess.status === 200 && (info.status !== 200 || info.data.conversation_id === sess.data.conversation.id)) {
      enterSession(sess.data, sess.data.last_event_id);
      return;
    }
    if (info.status === 200) {
      showJoin(info.data);
      return;
    }
    if (info.status === 429) {
      showInvalid(info.error.message);
      return;
    }
    if (info.status === 404) {
      showInvalid('It may have expired, been used up or been withdrawn. Ask the person who sent it for a new one.');
      return;
    }
    showInvalid(info.error ? info.error.message : 'convoice cannot be reached right now; try again in a moment.');
  }

  function showInvalid(text) {
    $('invalid-text').textContent = text;
    show('invalid-view');
  }

  function showJoin(info) {
    S.info = info;
    $('join-subject').textContent = info.subject ? '“' + info.subject + '”' : '';
    $('join-from').textContent = info.invited_by ? 'Invited by ' + info.invited_by + '. Give your name and a phone number, and you will be called into the conversation.' : 'Give your name and a phone number, and you will be called into the conversation.';
    $('admission-note').hidden = !info.require_admission;
    show('join-view');
    $('name-input').focus();
  }

  // ---- joining --------------------------------------------------------------

  function fieldError(field, msg) {
    const input = field === 'display_name' ? $('name-input') : $('number-input');
    const out = field === 'display_name' ? $('name-error') : $('number-error');
    out.textContent = msg;
    input.setAttribute('aria-invalid', msg ? 'true' : 'false');
  }

  async function submitJoin(ev) {
    ev.preventDefault();
    const name = $('name-input').value.trim();
    const number = $('number-input').value.trim();
    fieldError('display_name', name ? '' : 'Please give your name.');
    fieldError('number', number ? '' : 'Please give the phone number to call you on.');
    $('join-error').textContent = '';
    if (!name) { $('name-input').focus(); return; }
    if (!number) { $('number-input').focus(); return; }
    // One key per attempt: a retry of the same details (say after a network
    // error) reuses it, so the phone never rings twice.
    const what = name + '\n' + number;
    if (S.idemFor !== what) { S.idemKey = randomKey(); S.idemFor = what; }
    const btn = $('call-me');
    btn.disabled = true;
    btn.textContent = 'Calling…';
    const r = await api('POST', '/join/' + encodeURIComponent(token), { display_name: name, number }, { 'Idempotency-Key': S.idemKey });
    btn.disabled = false;
    btn.textContent = 'Call me';
    if (r.status === 201) {
      S.csrf = r.data.csrf_token || '';
      enterSession({ guest: r.data.guest, leg: r.data.leg, confirm_key: r.data.confirm_key, conversation: { id: r.data.conversation_id, subject: S.info ? S.info.subject : '' } }, '');
      return;
    }
    S.idemFor = ''; // a refused attempt is over: the next one is new
    if (r.error && (r.error.field === 'display_name' || r.error.field === 'number' || NUMBER_CODES.has(r.error.code))) {
      const field = r.error.field === 'display_name' ? 'display_name' : 'number';
      fieldError(field, capital(r.error.message.replace(/^[a-z_]+: /, '')));
      (field === 'display_name' ? $('name-input') : $('number-input')).focus();
      return;
    }
    if (r.status === 404) {
      showInvalid('It may have expired, been used up or been withdrawn. Ask the person who sent it for a new one.');
      return;
    }
    $('join-error').textContent = r.error ? r.error.message : 'Something went wrong; try again.';
  }

  // ---- the session ------------------------------------------------------------

  function enterSession(sess, lastEventID) {
    if (sess.csrf_token) S.csrf = sess.csrf_token;
    if (sess.confirm_key) setConfirmKey(sess.confirm_key);
    S.guest = sess.guest;
    S.leg = sess.leg || null;
    if (sess.others_connected) S.others = new Set(sess.others_connected);
    else refreshOthers();
    const subject = sess.conversation && sess.conversation.subject;
    $('session-subject').textContent = subject ? subject : 'Conversation';
    $('session-name').textContent = S.guest.display_name;
    $('whoami').textContent = S.guest.display_name + ' (guest)';
    $('whoami').hidden = false;
    show('session-view');
    renderGuest();
    renderCall();
    $('session-subject').focus();
    openStream(lastEventID);
  }

  function renderGuest() {
    const g = S.guest;
    const lobby = g.state === 'lobby';
    $('lobby').hidden = !lobby;
    $('call').hidden = lobby;
    $('chat').hidden = g.state !== 'admitted';
    if (g.state === 'admitted' && !S.chatLoaded) {
      S.chatLoaded = true;
      loadMessages();
    }
    renderCall();
  }

  // callText words the call; connected and alone says nobody else is in
  // the audio yet.
  function callText(state) {
    if (state === 'connected' && S.others.size === 0) return 'Connected – nobody else is in the audio yet';
    return CALL_TEXT[state] || state;
  }

  // refreshOthers reads who else is connected (the stream follows changes
  // only from the guest's admission on).
  async function refreshOthers() {
    const r = await api('GET', '/guest');
    if (r.status !== 200 || !r.data.others_connected) return;
    S.others = new Set(r.data.others_connected);
    renderCall();
  }

  function renderCall() {
    const admitted = S.guest && S.guest.state === 'admitted';
    const state = S.leg ? S.leg.state : 'none';
    const call = $('call');
    call.dataset.state = state;
    $('call-dot').className = 'status status-' + state;
    const text = callText(state);
    if ($('call-text').textContent !== text) $('call-text').textContent = text;
    $('call-number').textContent = S.leg ? fmtNumber(S.leg.number) : '';
    const live = S.leg && LIVE.has(S.leg.state);
    $('hangup').hidden = !live;
    $('call-again').hidden = !admitted || live;
  }

  function setLeg(l) {
    if (S.leg && S.leg.id !== l.id && new Date(l.created_at) < new Date(S.leg.created_at)) return; // an older call
    const before = S.leg ? S.leg.id + S.leg.state : '';
    S.leg = l;
    renderCall();
    if (before !== l.id + l.state && l.state === 'connected') refreshOthers();
  }

  function openStream(lastEventID) {
    if (S.es) S.es.close();
    const es = new EventSource('/api/v1/guest/events' + (lastEventID ? '?last_event_id=' + encodeURIComponent(lastEventID) : ''));
    S.es = es;
    const on = (type, f) => es.addEventListener(type, (e) => {
      let ev;
      try { ev = JSON.parse(e.data); } catch (x) { return; }
      f(ev.data || {});
    });
    on('leg.updated', (l) => {
      if (S.guest && l.guest_id === S.guest.id) {
        setLeg(l);
        return;
      }
      const had = S.others.has(l.id);
      if (l.state === 'connected') S.others.add(l.id); else S.others.delete(l.id);
      if (had !== S.others.has(l.id)) renderCall();
    });
    const guestEvent = (g) => {
      if (!S.guest || g.id !== S.guest.id) return;
      const was = S.guest.state;
      S.guest = g;
      if (g.state !== was && g.state === 'admitted') announce('You have been admitted. Calling you…');
      if (g.state === 'lobby' || g.state === 'admitted') renderGuest();
      else ended(g);
    };
    on('guest.waiting', guestEvent);
    on('guest.updated', guestEvent);
    on('message.created', addMessage);
    es.onerror = () => {
      if (S.over) return;
      // Closed for good (not a reconnect): the session may have ended.
      if (es.readyState === EventSource.CLOSED) checkSession();
    };
  }

  async function checkSession() {
    const r = await api('GET', '/guest');
    if (r.status === 200) {
      S.guest = r.data.guest;
      if (r.data.leg) setLeg(r.data.leg);
      if (r.data.others_connected) S.others = new Set(r.data.others_connected);
      renderGuest();
      setTimeout(() => openStream(r.data.last_event_id), 1000);
      return;
    }
    if (r.status === 401) ended(null);
    else setTimeout(checkSession, 3000);
  }

  function ended(g) {
    S.over = true;
    if (S.es) { S.es.close(); S.es = null; }
    let title = 'Your session has ended';
    let text = 'The organiser may have withdrawn the invitation, or the conversation has ended.';
    if (g && g.state === 'left') {
      title = 'You have left the conversation';
      text = 'Your call was hung up. Thank you for joining.';
    } else if (g && g.state === 'refused') {
      title = 'You were not admitted';
      text = 'The organiser did not let you into the conversation. Nothing was dialed.';
    } else if (g && g.state === 'ended') {
      text = g.end_reason ? capital(g.end_reason) + '.' : text;
    }
    $('ended-title').textContent = title;
    $('ended-text').textContent = text;
    $('whoami').hidden = true;
    show('ended-view');
    $('ended-title').focus();
  }

  function capital(s) { return s ? s[0].toUpperCase() + s.slice(1) : s; }

  // ---- buttons ----------------------------------------------------------------

  async function hangup() {
    $('session-error').textContent = '';
    const r = await api('DELETE', '/guest/leg');
    if (r.status !== 204 && r.status !== 409) $('session-error').textContent = r.error.message;
  }

  async function callAgain() {
    $('session-error').textContent = '';
    const btn = $('call-again');
    btn.disabled = true;
    const r = await api('POST', '/guest/leg', {}, { 'Idempotency-Key': randomKey() });
    btn.disabled = false;
    if (r.status === 201) setLeg(r.data.leg);
    else if (r.status === 401) ended(null);
    else $('session-error').textContent = r.error.message;
  }

  async function leave() {
    $('session-error').textContent = '';
    const r = await api('DELETE', '/guest');
    if (r.status === 204) ended({ state: 'left' });
    else if (r.status === 401) ended(null);
    else $('session-error').textContent = r.error.message;
  }

  // ---- messages ---------------------------------------------------------------

  async function loadMessages() {
    let cursor = '';
    for (;;) {
      const r = await api('GET', '/guest/messages?limit=200' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
      if (r.status !== 200) return;
      for (const m of r.data.messages) addMessage(m);
      if (!r.data.next_cursor) return;
      cursor = r.data.next_cursor;
    }
  }

  function addMessage(m) {
    if (!m || !m.id || S.messages.has(m.id)) return;
    S.messages.add(m.id);
    const li = document.createElement('li');
    li.className = 'message' + (S.guest && m.guest_id === S.guest.id ? ' mine' : '');
    li.dataset.testid = 'message';
    const head = document.createElement('div');
    head.className = 'message-head';
    const who = document.createElement('span');
    who.className = 'author';
    who.textContent = m.author_name;
    const when = document.createElement('time');
    when.dateTime = m.created_at;
    when.textContent = fmtTime(m.created_at);
    head.append(who, when);
    const p = document.createElement('p');
    p.className = 'message-text';
    p.textContent = m.text;
    li.append(head, p);
    // Keep them in id order (a replayed page can interleave with live ones).
    const list = $('messages');
    const id = Number(m.id);
    let before = null;
    for (const el of list.children) {
      if (Number(el.dataset.id) > id) { before = el; break; }
    }
    li.dataset.id = m.id;
    list.insertBefore(li, before);
    $('no-messages').hidden = true;
    list.scrollTop = list.scrollHeight;
  }

  async function send(ev) {
    ev.preventDefault();
    const input = $('message-input');
    const text = input.value.trim();
    $('chat-error').textContent = '';
    if (!text) return;
    const r = await api('POST', '/guest/messages', { text });
    if (r.status === 201) {
      input.value = '';
      addMessage(r.data);
    } else if (r.status === 401) {
      ended(null);
    } else {
      $('chat-error').textContent = r.error.message;
    }
  }

  // ---- wiring -------------------------------------------------------------------

  $('join-form').addEventListener('submit', submitJoin);
  $('hangup').addEventListener('click', hangup);
  $('call-again').addEventListener('click', callAgain);
  $('leave').addEventListener('click', leave);
  $('composer').addEventListener('submit', send);
  $('message-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('composer').requestSubmit(); }
  });
  boot();
})();
