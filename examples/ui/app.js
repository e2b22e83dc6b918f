/*
 * refsys example UI: phone -> one-time code -> profile. Plain JS, no build step, same-origin only.
 *
 * Stable element ids (for end-to-end browser tests):
 *   screens     #screen-phone, #screen-code, #screen-profile (toggled with the `hidden` attribute)
 *   phone       #phone-form, #phone, #send-code, #phone-error
 *   code        #code-form, #code-phone, #code, #verify-code, #code-error, #resend, #change-phone
 *   profile     #profile-phone, #own-code, #copy-code, #copy-status, #activated-code,
 *               #invited-list, #invitees-more (pages through every invitee when the profile
 *               lists only the oldest), #invitees-status, #invitees-error, #invite-form,
 *               #invite-input,
 *               #apply-invite, #invite-error,
 *               #session-list (one li per session, [data-session] its id; a "Sign out" button
 *               .revoke-session in each but the current one, which says "this device"),
 *               #sessions-error, #revoke-others, #profile-error, #logout
 *   phone change  #phone-change-form, #new-phone, #phone-change-start (texts a code to the
 *               current number), #current-code-form, #current-code, #phone-change-send (texts a
 *               code to the new one), #new-code-form, #new-phone-shown, #new-code,
 *               #phone-change-verify, #phone-change-error
 *   deletion    #delete-start (texts a code to the current number), #delete-form, #delete-code,
 *               #delete-confirm, #delete-error
 *   page-wide   #notice (status line: "session expired", "invite applied", ...)
 * Every error element is an aria-live="polite" region; they show plain sentences, never raw JSON.
 * Tokens live in sessionStorage under "refsys.access" / "refsys.refresh".
 */
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = { access: 'refsys.access', refresh: 'refsys.refresh', phone: 'refsys.phone' };
  const RESEND_SECONDS = 60;
  const store = window.sessionStorage;

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, body = {}, retryHeader = null) {
      super(code);
      this.status = status;
      this.code = code;
      this.attemptsLeft = typeof body.attempts_left === 'number' ? body.attempts_left : null;
      this.challenge = body.challenge && typeof body.challenge === 'object' ? body.challenge : null;
      const retry = typeof body.retry_after === 'number' ? body.retry_after : parseInt(retryHeader, 10);
      this.retryAfter = Number.isFinite(retry) && retry > 0 ? retry : null;
    }
  }

  async function call(method, path, body, token) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(path, {
        method, headers, cache: 'no-store', credentials: 'same-origin',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) { throw new ApiError(0, 'network'); }
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    if (!res.ok) {
      const info = data && typeof data === 'object' ? data : {};
      const code = typeof info.code === 'string' ? info.code : 'http_error';
      throw new ApiError(res.status, code, info, res.headers.get('Retry-After'));
    }
    return data;
  }

  // ---------- human check (asked for by send_code when the server's SMS budget is busy) ----------

  const encoder = new TextEncoder();
  function zeroBits(hash) {
    let bits = 0;
    for (const byte of hash) {
      if (byte !== 0) return bits + Math.clz32(byte) - 24;
      bits += 8;
    }
    return bits;
  }
  // The smallest decimal n with SHA-256(challenge + ":" + n) starting with `difficulty` zero
  // bits, hashed in batches so that WebCrypto's promises overlap.
  async function solvePow(challenge, difficulty) {
    if (!window.crypto || !window.crypto.subtle) throw new ApiError(0, 'human_check_unsupported');
    const BATCH = 512;
    for (let start = 0; start < 1e9; start += BATCH) {
      const tries = [];
      for (let n = start; n < start + BATCH; n++) {
        tries.push(crypto.subtle.digest('SHA-256', encoder.encode(`${challenge}:${n}`)));
      }
      const hashes = await Promise.all(tries);
      const found = hashes.findIndex((h) => zeroBits(new Uint8Array(h)) >= difficulty);
      if (found >= 0) return String(start + found);
    }
    throw new ApiError(0, 'human_check_failed');
  }
  // send(humanCheck) sends a code, and again with the answer to a proof-of-work challenge
  // when the server asks for one.
  async function withHumanCheck(send) {
    try {
      return await send(undefined);
    } catch (e) {
      if (e.code !== 'human_check_required') throw e;
      const ch = e.challenge;
      if (!ch || ch.kind !== 'pow') throw new ApiError(428, 'human_check_unsupported');
      notice('Checking that you are a person. This takes a few seconds.');
      try {
        const solution = await solvePow(ch.challenge, ch.difficulty);
        return await send({ kind: 'pow', challenge: ch.challenge, solution });
      } finally { notice(''); }
    }
  }
  const sendCode = (value) => withHumanCheck((human_check) =>
    call('POST', '/login/send_code/', human_check ? { phone: value, human_check } : { phone: value }));

  const tokens = () => ({ access: store.getItem(KEY.access), refresh: store.getItem(KEY.refresh) });
  const saveTokens = (pair) => { store.setItem(KEY.access, pair.access); store.setItem(KEY.refresh, pair.refresh); };
  const clearTokens = () => { store.removeItem(KEY.access); store.removeItem(KEY.refresh); };

  // One refresh at a time: parallel 401s share the same in-flight promise.
  let refreshing = null;
  function refreshTokens() {
    if (!refreshing) {
      refreshing = (async () => {
        const { refresh } = tokens();
        if (!refresh) throw new ApiError(401, 'session_expired');
        try {
          saveTokens(await call('POST', '/api/token/refresh/', { refresh }));
        } catch (e) {
          // A rejected refresh token ends the session; a network or server hiccup does not.
          if (e.status >= 400 && e.status < 500) {
            clearTokens();
            throw new ApiError(401, 'session_expired');
          }
          throw e;
        }
      })().finally(() => { refreshing = null; });
    }
    return refreshing;
  }

  // A call with the access token; on 401, refresh once and retry.
  async function authed(method, path, body) {
    const used = tokens().access;
    if (!used) throw new ApiError(401, 'session_expired');
    try { return await call(method, path, body, used); } catch (e) { if (e.status !== 401) throw e; }
    // Another call may already have refreshed while ours was in flight.
    if (tokens().access === used) await refreshTokens();
    const fresh = tokens().access;
    if (!fresh) throw new ApiError(401, 'session_expired');
    try {
      return await call(method, path, body, fresh);
    } catch (e) {
      if (e.status === 401) { clearTokens(); throw new ApiError(401, 'session_expired'); }
      throw e;
    }
  }

  // ---------- words ----------

  const seconds = (n) => (n === 1 ? '1 second' : `${n} seconds`);
  function friendly(e, context) {
    const wait = e.retryAfter ? `Please wait ${seconds(e.retryAfter)} and try again.` : 'Please wait a little and try again.';
    switch (e.code) {
      case 'network': return 'Cannot reach the server. Check your connection and try again.';
      case 'invalid_request':
        if (context === 'invite') return 'An invite code is 6 letters or digits.';
        if (context === 'code') return 'Enter the digits from the text message.';
        if (context === 'invitees') return 'The list changed in a way this page cannot follow. Reload the page to see it again.';
        return 'Please check what you typed and try again.';
      case 'invalid_phone': return 'That does not look like a phone number we can text. Include the country code, e.g. +375291234567.';
      case 'resend_cooldown': return `A code was sent moments ago. ${wait}`;
      case 'too_many_codes': return `Too many codes were sent to this number. ${wait}`;
      case 'rate_limited': return `Too many requests. ${wait}`;
      case 'too_many_attempts': return `Too many wrong tries, so that code no longer works. Ask for a new one${e.retryAfter ? ` in ${seconds(e.retryAfter)}` : ''}.`;
      case 'sms_failed': return 'We could not send the text message. Please try again later.';
      case 'sms_budget_exhausted': return `We cannot send codes to this number right now. ${wait}`;
      case 'human_check_failed': return 'The check that you are a person did not pass. Please try again.';
      case 'human_check_unavailable': return 'The check that you are a person cannot be done right now. Please try again later.';
      case 'human_check_unsupported': return 'The server asks for a check that this page cannot show. Please use the app.';
      case 'code_expired': return 'That code has expired or was already used. Ask for a new one.';
      case 'code_invalid':
        if (e.attemptsLeft === null) return 'That code is not right.';
        return `That code is not right. ${e.attemptsLeft === 1 ? '1 try' : `${e.attemptsLeft} tries`} left.`;
      case 'unauthorized': case 'invalid_token': case 'session_expired':
        return 'Your session has expired. Please sign in again.';
      case 'own_invite_code': return 'That is your own invite code. Share it with friends instead.';
      case 'invite_code_not_found': return 'We could not find that invite code. Check it and try again.';
      case 'invite_already_activated': return 'You have already used an invite code.';
      case 'invite_cycle': return 'You cannot use the code of someone you invited.';
      case 'session_not_found': return 'That session had already ended.';
      case 'same_phone': return 'That is already your phone number.';
      case 'phone_taken': return 'Another account uses that phone number.';
      case 'store_unavailable': return 'The service is temporarily unavailable. Please try again later.';
      default: return `Something went wrong${e.status ? ` (error ${e.status})` : ''}. Please try again later.`;
    }
  }

  // ---------- screens ----------

  const screens = ['screen-phone', 'screen-code', 'screen-profile'];
  function show(id) {
    for (const s of screens) $(s).hidden = s !== id;
    const input = [...$(id).querySelectorAll('input')].find((el) => el.offsetParent !== null);
    const heading = $(id).querySelector('h2');
    heading.tabIndex = -1;
    (input || heading).focus();
  }
  function notice(text) {
    $('notice').textContent = text || '';
    $('notice').hidden = !text;
  }
  function setError(id, text) {
    $(id).textContent = text || '';
    const field = $(id.replace(/-error$/, ''));
    if (field && field.tagName === 'INPUT') field.toggleAttribute('aria-invalid', Boolean(text));
  }
  async function busy(button, work) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try { return await work(); } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }
  function sessionExpired() {
    clearTokens();
    stopCooldown();
    show('screen-phone');
    notice('Your session has expired. Please sign in again.');
  }

  // ---------- phone + code ----------

  let phone = store.getItem(KEY.phone) || '';
  let cooldownEnd = 0;
  let timer = null;

  function renderResend() {
    const left = Math.ceil((cooldownEnd - Date.now()) / 1000);
    const button = $('resend');
    if (left <= 0) { stopCooldown(); return; }
    button.disabled = true;
    button.textContent = `Resend code in ${left} s`;
  }
  function startCooldown(secs) {
    cooldownEnd = Date.now() + secs * 1000;
    clearInterval(timer);
    timer = setInterval(renderResend, 1000);
    renderResend();
  }
  function stopCooldown() {
    clearInterval(timer);
    timer = null;
    cooldownEnd = 0;
    $('resend').disabled = false;
    $('resend').textContent = 'Resend code';
  }

  function goToCode() {
    $('code-phone').textContent = phone;
    $('code').value = '';
    setError('code-error', '');
    show('screen-code');
  }

  $('phone-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    notice('');
    setError('phone-error', '');
    const value = $('phone').value.trim();
    if (!value) { setError('phone-error', 'Enter your phone number.'); $('phone').focus(); return; }
    busy($('send-code'), async () => {
      try {
        await sendCode(value);
        phone = value;
        store.setItem(KEY.phone, phone);
        goToCode();
        startCooldown(RESEND_SECONDS);
      } catch (e) {
        if (e.code === 'resend_cooldown') {
          // A code is already on its way: let the user type it.
          phone = value;
          store.setItem(KEY.phone, phone);
          goToCode();
          notice('A code was sent to this number moments ago. Enter it below.');
          startCooldown(e.retryAfter || RESEND_SECONDS);
          return;
        }
        setError('phone-error', friendly(e, 'phone'));
        $('phone').focus();
      }
    });
  });

  $('code-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    notice('');
    setError('code-error', '');
    const code = $('code').value.trim();
    if (!/^\d{4,8}$/.test(code)) { setError('code-error', 'Enter the digits from the text message.'); $('code').focus(); return; }
    busy($('verify-code'), async () => {
      try {
        saveTokens(await call('POST', '/login/verify_code/', { phone, code }));
        stopCooldown();
        await openProfile();
      } catch (e) {
        if (e.code === 'too_many_attempts' && e.retryAfter) startCooldown(e.retryAfter);
        setError('code-error', friendly(e, 'code'));
        $('code').select();
      }
    });
  });

  $('resend').addEventListener('click', () => {
    notice('');
    setError('code-error', '');
    const button = $('resend');
    button.disabled = true;
    sendCode(phone).then(() => {
      startCooldown(RESEND_SECONDS);
      notice('A new code is on its way.');
      $('code').value = '';
      $('code').focus();
    }, (e) => {
      if (e.retryAfter) startCooldown(e.retryAfter); else stopCooldown();
      setError('code-error', friendly(e, 'phone'));
    });
  });

  $('change-phone').addEventListener('click', (ev) => {
    ev.preventDefault();
    stopCooldown();
    notice('');
    setError('phone-error', '');
    show('screen-phone');
    $('phone').select();
  });

  // ---------- profile ----------

  let currentPhone = '';
  const listItem = (text, cls = '') => Object.assign(document.createElement('li'), { textContent: text, className: cls });

  // The profile lists the oldest invitees only (PROFILE_INVITEES_LIMIT); the rest are paged
  // through GET /api/invitees/, INVITEES_PAGE at a time, following next_cursor. `shown`
  // changes whenever the list is drawn anew (a profile load, a logout): a page that answers
  // after that belongs to a list no longer on screen, perhaps another user's, and is dropped.
  const INVITEES_PAGE = 50;
  const invitees = { cursor: null, paged: false, shown: 0 };
  function forgetInvitees() {
    Object.assign(invitees, { cursor: null, paged: false, shown: invitees.shown + 1 });
  }
  function renderProfile(p) {
    currentPhone = p.phone;
    $('profile-phone').textContent = p.phone;
    $('own-code').textContent = p.own_invite_code;
    const activated = $('activated-code');
    activated.textContent = p.activated_invite_code || 'none yet';
    activated.classList.toggle('muted', !p.activated_invite_code);
    const invited = Array.isArray(p.invited_users) ? p.invited_users : [];
    $('invited-count').textContent = Number.isInteger(p.invited_count) ? `(${p.invited_count})` : '';
    const count = Number.isInteger(p.invited_count) ? p.invited_count : invited.length;
    // With PROFILE_INVITEES_LIMIT=0 the profile lists none of several: the button shows them.
    $('invited-list').replaceChildren(...(invited.length
      ? invited.map((who) => listItem(who))
      : count === 0 ? [listItem('Nobody has used your code yet. Share it!', 'empty')] : []));
    forgetInvitees();
    const more = $('invitees-more');
    more.hidden = !(count > invited.length);
    more.textContent = `Show all ${count}`;
    setError('invitees-error', '');
    $('invitees-status').textContent = '';
    $('invite-form').hidden = Boolean(p.activated_invite_code);
  }

  $('invitees-more').addEventListener('click', (ev) => {
    const button = ev.currentTarget;
    busy(button, async () => {
      setError('invitees-error', '');
      const query = new URLSearchParams({ limit: String(INVITEES_PAGE) });
      if (invitees.cursor) query.set('cursor', invitees.cursor);
      const shown = invitees.shown;
      try {
        const page = await authed('GET', `/api/invitees/?${query}`);
        if (shown !== invitees.shown) return;
        const items = (Array.isArray(page.invitees) ? page.invitees : [])
          .map((who) => listItem(`${who.phone} (joined ${when(who.joined_at)})`));
        // The first page starts from the oldest again: it replaces the profile's list.
        const list = $('invited-list');
        if (invitees.paged) list.append(...items);
        else list.replaceChildren(...items);
        invitees.paged = true;
        invitees.cursor = typeof page.next_cursor === 'string' ? page.next_cursor : null;
        button.textContent = 'Show more';
        $('invitees-status').textContent = `Showing ${list.children.length} of ${page.total}.`;
        if (!invitees.cursor) {
          // The button goes with the last page: keep the keyboard on the list, at the new rows.
          button.hidden = true;
          if (items[0]) { items[0].tabIndex = -1; items[0].focus(); }
        }
      } catch (e) {
        if (shown !== invitees.shown) return;
        if (e.code === 'session_expired') { sessionExpired(); return; }
        setError('invitees-error', friendly(e, 'invitees'));
      }
    });
  });

  // ---------- sessions ----------

  const when = (iso) => {
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? iso : at.toLocaleString();
  };
  function renderSessions(list) {
    const items = list.map((s) => {
      const li = document.createElement('li');
      li.dataset.session = s.id;
      const what = document.createElement('span');
      const device = s.user_agent || 'Unknown device';
      const place = s.ip ? ` · ${s.ip}` : '';
      what.textContent = `${device}${place} · last used ${when(s.last_used_at)}`;
      li.append(what);
      if (s.current) {
        li.append(Object.assign(document.createElement('span'), { textContent: ' (this device)', className: 'muted' }));
      } else {
        const button = Object.assign(document.createElement('button'), {
          type: 'button', textContent: 'Sign out', className: 'small secondary revoke-session',
        });
        button.setAttribute('aria-label', `Sign out ${device}`);
        button.addEventListener('click', () => revokeSession(button, s.id));
        li.append(' ', button);
      }
      return li;
    });
    $('session-list').replaceChildren(...items);
    $('revoke-others').hidden = !list.some((s) => !s.current);
  }

  async function loadSessions() {
    setError('sessions-error', '');
    try {
      const body = await authed('GET', '/api/sessions/');
      renderSessions(Array.isArray(body.sessions) ? body.sessions : []);
    } catch (e) {
      if (e.code === 'session_expired') { sessionExpired(); return; }
      setError('sessions-error', friendly(e, 'sessions'));
    }
  }

  function revokeSession(button, id) {
    busy(button, async () => {
      setError('sessions-error', '');
      try {
        await authed('DELETE', `/api/sessions/${encodeURIComponent(id)}/`);
        notice('That device is signed out.');
      } catch (e) {
        if (e.code === 'session_expired') { sessionExpired(); return; }
        setError('sessions-error', friendly(e, 'sessions'));
      }
      await loadSessions();
    });
  }

  $('revoke-others').addEventListener('click', () => {
    busy($('revoke-others'), async () => {
      setError('sessions-error', '');
      try {
        const { revoked } = await authed('POST', '/api/sessions/revoke/', { scope: 'others' });
        notice(revoked === 1 ? 'Signed out 1 other device.' : `Signed out ${revoked} other devices.`);
      } catch (e) {
        if (e.code === 'session_expired') { sessionExpired(); return; }
        setError('sessions-error', friendly(e, 'sessions'));
      }
      await loadSessions();
    });
  });

  // ---------- phone change ----------

  let newPhone = '';
  function phoneChangeStep(form) {
    for (const id of ['phone-change-form', 'current-code-form', 'new-code-form']) $(id).hidden = id !== form;
    const input = $(form).querySelector('input');
    input.value = '';
    if (!$('screen-profile').hidden) input.focus();
  }
  function phoneChangeFailed(e, field) {
    if (e.code === 'session_expired') { sessionExpired(); return; }
    setError('phone-change-error', friendly(e, 'code'));
    $(field).focus();
  }

  // Step 1: the new number, then a code to the current one (it proves the account is yours).
  $('phone-change-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    notice('');
    setError('phone-change-error', '');
    newPhone = $('new-phone').value.trim();
    if (!newPhone) { setError('phone-change-error', 'Enter the new phone number.'); $('new-phone').focus(); return; }
    busy($('phone-change-start'), async () => {
      try {
        await sendCode(currentPhone);
        phoneChangeStep('current-code-form');
      } catch (e) { phoneChangeFailed(e, 'new-phone'); }
    });
  });

  // Step 2: that code, then a code to the new number.
  $('current-code-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setError('phone-change-error', '');
    const code = $('current-code').value.trim();
    busy($('phone-change-send'), async () => {
      try {
        await withHumanCheck((human_check) => authed('POST', '/api/account/phone/send_code/',
          human_check ? { phone: newPhone, current_code: code, human_check } : { phone: newPhone, current_code: code }));
        $('new-phone-shown').textContent = newPhone;
        phoneChangeStep('new-code-form');
      } catch (e) {
        // A wrong new number goes back to step 1; anything else (the current code given back
        // when the new one could not go out) can be tried again here.
        if (['invalid_phone', 'same_phone'].includes(e.code)) {
          phoneChangeStep('phone-change-form');
          $('new-phone').value = newPhone;
          phoneChangeFailed(e, 'new-phone');
        } else phoneChangeFailed(e, 'current-code');
      }
    });
  });

  // Step 3: the new number's code moves the account.
  $('new-code-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setError('phone-change-error', '');
    const code = $('new-code').value.trim();
    busy($('phone-change-verify'), async () => {
      try {
        const moved = await authed('POST', '/api/account/phone/verify/', { phone: newPhone, code });
        phoneChangeStep('phone-change-form');
        notice(`Your phone number is now ${moved.phone}.`);
        store.setItem(KEY.phone, moved.phone);
        phone = moved.phone;
        await loadProfile();
      } catch (e) {
        if (e.code === 'phone_taken') {
          phoneChangeStep('phone-change-form');
          phoneChangeFailed(e, 'new-phone');
        } else phoneChangeFailed(e, 'new-code');
      }
    });
  });

  // ---------- deletion ----------

  $('delete-start').addEventListener('click', () => {
    notice('');
    setError('delete-error', '');
    busy($('delete-start'), async () => {
      try {
        await sendCode(currentPhone);
        $('delete-form').hidden = false;
        $('delete-code').value = '';
        $('delete-code').focus();
      } catch (e) { setError('delete-error', friendly(e, 'code')); }
    });
  });

  $('delete-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setError('delete-error', '');
    const code = $('delete-code').value.trim();
    busy($('delete-confirm'), async () => {
      try {
        await authed('POST', '/api/account/delete/', { code });
        clearTokens();
        store.removeItem(KEY.phone);
        phone = '';
        $('phone').value = '';
        show('screen-phone');
        notice('Your account is deleted.');
      } catch (e) {
        if (e.code === 'session_expired') { sessionExpired(); return; }
        setError('delete-error', friendly(e, 'code'));
        $('delete-code').focus();
      }
    });
  });

  // Returns 'ok', 'expired' (already sent back to the phone screen) or 'error' (shown inline).
  async function loadProfile() {
    setError('profile-error', '');
    try {
      renderProfile(await authed('GET', '/get_profile/'));
      return 'ok';
    } catch (e) {
      if (e.code === 'session_expired') { sessionExpired(); return 'expired'; }
      setError('profile-error', friendly(e, 'profile'));
      return 'error';
    }
  }

  async function openProfile() {
    for (const id of ['profile-phone', 'own-code', 'activated-code', 'copy-status', 'invite-error']) setError(id, '');
    $('invited-list').replaceChildren();
    forgetInvitees();
    $('invitees-more').hidden = true;
    $('invitees-status').textContent = '';
    setError('invitees-error', '');
    $('invite-input').value = '';
    $('invite-form').hidden = true;
    $('screen-phone').hidden = true;
    $('session-list').replaceChildren();
    $('revoke-others').hidden = true;
    for (const id of ['phone-change-error', 'delete-error']) setError(id, '');
    for (const id of ['current-code-form', 'new-code-form', 'delete-form']) $(id).hidden = true;
    $('phone-change-form').hidden = false;
    $('new-phone').value = '';
    if ((await loadProfile()) !== 'expired') {
      show('screen-profile');
      await loadSessions();
    }
  }

  let copiedTimer = null;
  $('copy-code').addEventListener('click', async () => {
    const text = $('own-code').textContent;
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch (_) { ok = false; }
    if (!ok) { // fallback for plain-http origins and old browsers
      const area = Object.assign(document.createElement('textarea'), { value: text, readOnly: true });
      area.style.cssText = 'position:fixed;opacity:0';
      document.body.append(area);
      area.select();
      try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
      area.remove();
    }
    if (!ok) window.getSelection().selectAllChildren($('own-code'));
    $('copy-status').textContent = ok ? 'Copied' : 'Press Ctrl+C to copy';
    clearTimeout(copiedTimer);
    copiedTimer = setTimeout(() => { $('copy-status').textContent = ''; }, 2500);
  });

  $('invite-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    notice('');
    setError('invite-error', '');
    const code = $('invite-input').value.trim().toUpperCase();
    if (!/^[A-Z0-9]{6}$/.test(code)) { setError('invite-error', 'An invite code is 6 letters or digits.'); $('invite-input').focus(); return; }
    busy($('apply-invite'), async () => {
      try {
        await authed('POST', '/use_invite_code/', { invite_code: code });
        $('invite-input').value = '';
        notice('Invite code applied. Welcome!');
        if ((await loadProfile()) === 'ok') $('profile-title').focus();
      } catch (e) {
        if (e.code === 'session_expired') { sessionExpired(); return; }
        setError('invite-error', friendly(e, 'invite'));
        $('invite-input').focus();
      }
    });
  });

  $('logout').addEventListener('click', () => {
    busy($('logout'), async () => {
      const { refresh } = tokens();
      if (refresh) await call('POST', '/api/token/logout/', { refresh }).catch(() => {}); // best effort
      clearTokens();
      forgetInvitees();
      store.removeItem(KEY.phone);
      phone = '';
      $('phone').value = '';
      notice('You are logged out.');
      show('screen-phone');
    });
  });

  // ---------- start ----------

  $('phone').value = phone;
  if (tokens().access && tokens().refresh) openProfile();
  else show('screen-phone');
})();
