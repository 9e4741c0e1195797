// meetingd's drop-in web components: <meetingd-integrations>, <meetingd-platform-selector> and
// <meetingd-meeting-link>. One ES module, no framework, no build step; served by meetingd at
// /ui/meetingd-elements.js. Each element renders into its own shadow root (parts and CSS custom
// properties for theming), talks to meetingd's API with the host page's bearer token, and says
// what happened with `meetingd:*` events. Data from the API only ever enters the page as text
// (no innerHTML), and a link is made clickable only when it is an https URL.

const settings = { baseUrl: '', token: null };
const live = new Set();

/** Sets what every element uses unless it has its own: `baseUrl` (where meetingd's /api is; ''
 * for the page's own origin) and `token` (a string, or a function returning one or a promise of
 * one, asked before every request, so a token can be renewed). Re-renders the elements. */
export function configure(options = {}) {
  for (const key of ['baseUrl', 'token']) {
    if (key in options) settings[key] = options[key];
  }
  for (const el of live) el.refreshSoon();
}

const NAMES = { google_meet: 'Google Meet', zoom: 'Zoom', teams: 'Microsoft Teams', jitsi: 'Jitsi Meet' };
const OPTIONS = {
  waiting_room: { label: 'Waiting room', hint: 'Participants wait until the host admits them.' },
  recording: { label: 'Recording', hint: 'Record the meeting automatically.' },
  passcode: { label: 'Passcode', hint: 'The meeting gets a passcode (carried in its link).' },
  mute_on_entry: { label: 'Mute on entry', hint: 'Participants join muted.' },
};
const RETURN_ERRORS = {
  access_denied: 'The connection was cancelled on the consent screen.',
  insufficient_scope: 'The connection was not saved: allow every permission asked for and try again.',
  invalid_state: 'The connection could not be completed (it was started in another browser or tab). Try again.',
  state_expired: 'The connection took too long to complete. Try again.',
  personal_account_unsupported: 'Teams meetings need a work or school Microsoft account, not a personal one.',
  account_unknown: 'The platform did not say which account was connected. Try again.',
};

export class MeetingdApiError extends Error {
  constructor(status, code, message, location) {
    super(message);
    Object.assign(this, { status, code, location });
  }
}

const css = `
:host { display: block; font: var(--meetingd-font, inherit); color: var(--meetingd-color-text, #1f2328); }
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
.stack { display: grid; gap: var(--meetingd-gap, 12px); }
.card { background: var(--meetingd-color-surface, #fff); border: 1px solid var(--meetingd-color-border, #d0d7de);
  border-radius: var(--meetingd-radius, 8px); padding: var(--meetingd-padding, 14px 16px); }
.row { display: flex; align-items: center; justify-content: space-between; gap: var(--meetingd-gap, 12px); flex-wrap: wrap; }
.title { font-weight: 600; margin: 0; font-size: 1em; }
.muted { color: var(--meetingd-color-muted, #59636e); font-size: .92em; margin: 4px 0 0; }
.sub { display: block; margin: 2px 0 0; }
.url { overflow-wrap: anywhere; margin: 0; }
.badge { display: inline-block; border-radius: 999px; padding: 2px 10px; font-size: .85em; font-weight: 600;
  background: var(--meetingd-color-muted-bg, #eef1f4); color: var(--meetingd-color-muted, #59636e); }
.badge[data-tone=ok] { background: var(--meetingd-color-ok-bg, #dafbe1); color: var(--meetingd-color-ok, #1a7f37); }
.badge[data-tone=warn] { background: var(--meetingd-color-warn-bg, #fff8c5); color: var(--meetingd-color-warn, #7d4e00); }
.badge[data-tone=error] { background: var(--meetingd-color-error-bg, #ffebe9); color: var(--meetingd-color-error, #cf222e); }
button, .button { font: inherit; cursor: pointer; border-radius: var(--meetingd-radius, 8px); padding: 6px 14px;
  border: 1px solid var(--meetingd-color-border, #d0d7de); background: var(--meetingd-color-surface, #fff);
  color: var(--meetingd-color-text, #1f2328); text-decoration: none; display: inline-block; }
button.primary, .button.primary { background: var(--meetingd-color-accent, #0b57d0); border-color: var(--meetingd-color-accent, #0b57d0);
  color: var(--meetingd-color-accent-text, #fff); }
button.danger { color: var(--meetingd-color-error, #cf222e); }
button[disabled] { opacity: .6; cursor: progress; }
:focus-visible { outline: var(--meetingd-focus-ring, 2px solid #0b57d0); outline-offset: 2px; }
.actions { display: flex; gap: 8px; flex-wrap: wrap; }
.error { color: var(--meetingd-color-error, #cf222e); margin: 6px 0 0; }
.message { margin: 0; padding: 8px 12px; border-radius: var(--meetingd-radius, 8px);
  background: var(--meetingd-color-muted-bg, #eef1f4); }
.message[data-tone=ok] { background: var(--meetingd-color-ok-bg, #dafbe1); }
.message[data-tone=error] { background: var(--meetingd-color-error-bg, #ffebe9); color: var(--meetingd-color-error, #cf222e); }
fieldset { border: 0; margin: 0; padding: 0; min-width: 0; }
legend { font-weight: 600; padding: 0; margin-bottom: 8px; }
.choices { display: grid; gap: 8px; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); }
.choice { display: flex; gap: 8px; align-items: flex-start; padding: 10px 12px; cursor: pointer;
  border: 1px solid var(--meetingd-color-border, #d0d7de); border-radius: var(--meetingd-radius, 8px); }
.choice:has(input:checked) { border-color: var(--meetingd-color-accent, #0b57d0);
  box-shadow: inset 0 0 0 1px var(--meetingd-color-accent, #0b57d0); }
.field { display: grid; gap: 4px; }
.field label { font-weight: 600; }
.check { display: flex; gap: 8px; align-items: baseline; }
input[type=text], select { font: inherit; padding: 6px 8px; border-radius: var(--meetingd-radius, 8px);
  border: 1px solid var(--meetingd-color-border, #d0d7de); background: var(--meetingd-color-surface, #fff); color: inherit; }
[aria-invalid=true] { border-color: var(--meetingd-color-error, #cf222e); }
a { color: var(--meetingd-color-accent, #0b57d0); }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;
let sheet = null;
function styleInto(root) {
  if ('adoptedStyleSheets' in ShadowRoot.prototype && 'replaceSync' in CSSStyleSheet.prototype) {
    // A constructed sheet is not an inline style: a host page's strict CSP does not block it.
    if (!sheet) { sheet = new CSSStyleSheet(); sheet.replaceSync(css); }
    root.adoptedStyleSheets = [sheet];
  } else {
    root.append(h('style', {}, css));
  }
}

/** An element with attributes (`on*` functions become listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

function platformName(platform, platforms) {
  return platforms?.find((p) => p.platform === platform)?.display_name ?? NAMES[platform] ?? platform ?? '';
}

/** The shared base: token and base URL, requests, the live region, events, refresh on change. */
class MeetingdElement extends HTMLElement {
  static observedAttributes = ['base-url'];

  constructor() {
    super();
    this.attachShadow({ mode: 'open' });
    styleInto(this.shadowRoot);
    this.body = h('div', { part: 'container', class: 'stack' });
    this.statusRegion = h('div', { class: 'sr-only', role: 'status', 'aria-live': 'polite' });
    this.shadowRoot.append(this.body, this.statusRegion);
    this._token = undefined;
  }

  /** The bearer token for this element alone (a string or a function), over `configure`'s. */
  set token(value) { this._token = value; this.refreshSoon(); }
  get token() { return this._token; }

  get baseUrl() { return this.getAttribute('base-url') ?? settings.baseUrl ?? ''; }
  set baseUrl(value) { this.setAttribute('base-url', value); }

  connectedCallback() {
    live.add(this);
    this.refreshSoon();
  }

  /** One refresh after the current script, however many changes ask for it: a page that sets
   * the token and the attributes right after adding the element loads it once, with them. */
  refreshSoon() {
    if (this.refreshing) return;
    this.refreshing = true;
    queueMicrotask(() => {
      this.refreshing = false;
      if (this.isConnected) this.refresh();
    });
  }

  /** A number for this load; `stale(n)` says a later load began since (its answer wins). */
  begin() { this.loads = (this.loads ?? 0) + 1; return this.loads; }
  stale(n) { return n !== this.loads; }
  disconnectedCallback() { live.delete(this); }
  attributeChangedCallback(_name, before, after) { if (before !== after) this.refreshSoon(); }

  async bearer() {
    let token = this._token ?? settings.token;
    if (typeof token === 'function') token = await token();
    if (!token) {
      throw new MeetingdApiError(0, 'no_token', 'No sign-in token was handed to this component yet.');
    }
    return token;
  }

  /** One API call; JSON (or the raw Response with `raw`), or a MeetingdApiError. */
  async api(method, path, body, { raw = false } = {}) {
    const headers = { Authorization: `Bearer ${await this.bearer()}`, Accept: raw ? '*/*' : 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(this.baseUrl.replace(/\/$/, '') + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin',
      });
    } catch {
      throw new MeetingdApiError(0, 'unreachable', 'The meeting service cannot be reached. Check your connection.');
    }
    if (response.ok) return raw ? response : response.status === 204 ? null : response.json();
    let error = {};
    try { error = (await response.json()).error ?? {}; } catch { /* not JSON */ }
    if (response.status === 401) {
      this.emit('meetingd:unauthorized', { status: 401 });
      error.message = 'Your session has expired. Sign in again.';
    }
    throw new MeetingdApiError(response.status, error.code ?? 'http_' + response.status,
      error.message ?? `The meeting service answered ${response.status}.`, error.location);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  announce(text) {
    this.statusRegion.textContent = '';
    // A change of text in an existing live region is what screen readers read out.
    setTimeout(() => { this.statusRegion.textContent = text; }, 100);
  }

  show(...nodes) { this.body.replaceChildren(...nodes); }
  loading(text) { this.setAttribute('aria-busy', 'true'); this.show(h('p', { part: 'loading', class: 'muted' }, text)); }
  done() { this.removeAttribute('aria-busy'); }
  failed(error, retry) {
    this.done();
    if (error.code === 'no_token') {
      // Not an error yet: the host page has not handed its token over.
      this.show(h('p', { part: 'empty', class: 'muted' }, 'Waiting for sign-in…'));
      return;
    }
    this.show(h('div', { part: 'error message', class: 'message', 'data-tone': 'error', role: 'alert' },
      error.message, ' ', retry ? h('button', { type: 'button', part: 'button', onclick: retry }, 'Try again') : null));
    this.emit('meetingd:error', { code: error.code, status: error.status, message: error.message });
  }

  /** Starts connecting `platform`: meetingd sets its state cookie and answers the consent
   * screen's URL, where the browser goes unless a `meetingd:navigate` listener prevents it. */
  async connect(platform) {
    const answer = await this.api('POST', platform.connect_path);
    const go = new CustomEvent('meetingd:navigate', {
      detail: { url: answer.authorization_url, platform: platform.platform }, bubbles: true, composed: true, cancelable: true,
    });
    if (this.dispatchEvent(go)) window.location.assign(answer.authorization_url);
  }
}

/** <meetingd-integrations>: a card per platform with accounts, to connect, reconnect or disconnect it. */
class MeetingdIntegrations extends MeetingdElement {
  constructor() {
    super();
    this.notice = this.returnNotice();
  }

  /** What the OAuth callback's redirect says (`?connected=` / `?error=`), once. */
  returnNotice() {
    const query = new URLSearchParams(window.location.search);
    const connected = query.get('connected');
    const error = query.get('error');
    if (connected) return { tone: 'ok', platform: connected, text: `${NAMES[connected] ?? connected} is connected.` };
    if (error) return { tone: 'error', text: RETURN_ERRORS[error] ?? `The connection failed (${error}).` };
    return null;
  }

  async refresh() {
    const load = this.begin();
    if (!this.platforms) this.loading('Loading your integrations…');
    let platforms;
    try {
      platforms = await this.api('GET', '/api/platforms');
    } catch (error) {
      if (!this.stale(load)) this.failed(error, () => this.refresh());
      return;
    }
    if (this.stale(load)) return;
    this.platforms = platforms;
    this.done();
    this.render();
  }

  render() {
    const accounts = this.platforms.filter((p) => p.needs_account);
    const notice = this.notice
      ? h('p', { part: 'message', class: 'message', 'data-tone': this.notice.tone, role: this.notice.tone === 'error' ? 'alert' : 'status' }, this.notice.text)
      : null;
    if (accounts.length === 0) {
      this.show(notice, h('p', { part: 'empty', class: 'muted' }, 'No platform on this server needs an account: meetings are made without one.'));
      return;
    }
    this.show(notice, ...accounts.map((p) => this.card(p)));
  }

  card(p) {
    const [label, tone] = p.connected ? ['Connected', 'ok']
      : p.status === 'needs_reconnect' ? ['Needs reconnecting', 'error']
      : p.status === 'expiring' ? ['Expiring soon', 'warn'] : ['Not connected', null];
    const hint = p.connected && p.status === 'expiring' ? 'Reconnect soon to keep meetings coming.'
      : p.status === 'needs_reconnect' ? `${p.display_name} refused the connection: reconnect it so meetings are made there again.`
      : p.connected ? 'Meetings of your services are made in this account.'
      : `Connect ${p.display_name} to have your meetings made there.`;
    const act = (action, text, cls) => h('button', {
      type: 'button', part: `button ${cls === 'primary' ? 'button-primary' : 'button-' + action}`, class: cls,
      'data-action': action, 'data-platform': p.platform, 'aria-label': `${text} ${p.display_name}`,
      onclick: (e) => this.act(action, p, e.currentTarget),
    }, text);
    const buttons = [];
    if (!p.connected && p.status !== 'needs_reconnect') buttons.push(act('connect', 'Connect', 'primary'));
    if (p.status === 'needs_reconnect' || p.status === 'expiring') buttons.push(act('connect', 'Reconnect', 'primary'));
    if (p.connected || p.status) buttons.push(act('disconnect', 'Disconnect', 'danger'));
    const id = `meetingd-card-${p.platform}`;
    return h('section', { part: 'card', class: 'card', 'data-platform': p.platform, 'aria-labelledby': id },
      h('div', { class: 'row' },
        h('div', {},
          h('h3', { part: 'card-title', class: 'title', id }, p.display_name, ' ',
            h('span', { part: 'status', class: 'badge', 'data-tone': tone, 'data-status': p.connected ? 'connected' : (p.status ?? 'not_connected') }, label)),
          h('p', { part: 'hint', class: 'muted' }, hint)),
        h('div', { class: 'actions' }, buttons)),
      h('p', { part: 'error', class: 'error', role: 'alert', hidden: true }));
  }

  async act(action, p, button) {
    const card = button.closest('.card');
    const error = card.querySelector('.error');
    error.hidden = true;
    button.disabled = true;
    try {
      if (action === 'connect') {
        this.announce(`Opening ${p.display_name}…`);
        await this.connect(p);
        button.disabled = false;
        return;
      }
      if (!card.querySelector('[data-confirm]')) {
        // Disconnecting stops meetings on that platform: one more press, on a button that says so.
        button.disabled = false;
        button.replaceWith(h('span', { class: 'actions', 'data-confirm': '' },
          h('button', { type: 'button', part: 'button button-confirm', class: 'danger', 'data-action': 'confirm-disconnect',
            'data-platform': p.platform, onclick: (e) => this.act('disconnect', p, e.currentTarget) }, `Yes, disconnect ${p.display_name}`),
          h('button', { type: 'button', part: 'button', onclick: () => this.render() }, 'Cancel')));
        card.querySelector('[data-action=confirm-disconnect]').focus();
        return;
      }
      await this.api('DELETE', `/api/integrations/${encodeURIComponent(p.platform)}`);
      this.notice = { tone: 'ok', text: `${p.display_name} is disconnected.` };
      this.announce(this.notice.text);
      this.emit('meetingd:change', { element: 'integrations', platform: p.platform, connected: false });
      await this.refresh();
    } catch (e) {
      button.disabled = false;
      error.textContent = e.message;
      error.hidden = false;
      this.emit('meetingd:error', { code: e.code, status: e.status, message: e.message });
    }
  }

  connectedCallback() {
    super.connectedCallback();
    if (this.notice?.platform) this.emit('meetingd:change', { element: 'integrations', platform: this.notice.platform, connected: true });
  }
}

/** <meetingd-platform-selector service-id="…">: a service's platform and meeting options. */
class MeetingdPlatformSelector extends MeetingdElement {
  static observedAttributes = ['base-url', 'service-id'];

  get serviceId() { return this.getAttribute('service-id'); }
  set serviceId(value) { this.setAttribute('service-id', value); }

  async refresh() {
    if (!this.serviceId) {
      this.done();
      this.show(h('p', { part: 'empty', class: 'muted' }, 'No service chosen.'));
      return;
    }
    const load = this.begin();
    const serviceId = this.serviceId;
    if (this.service?.id !== serviceId) this.loading('Loading the meeting settings…');
    let platforms, service;
    try {
      const path = `/api/services/${encodeURIComponent(serviceId)}/meeting`;
      [platforms, service] = await Promise.all([this.api('GET', '/api/platforms'), this.api('GET', path)]);
    } catch (error) {
      if (!this.stale(load)) this.failed(error, () => this.refresh());
      return;
    }
    if (this.stale(load)) return;
    // What the provider has chosen but not saved yet stays, when it is the same service.
    const keep = this.dirty && this.service?.id === serviceId;
    this.platforms = platforms;
    this.service = { ...service, id: serviceId };
    if (!keep) {
      this.choice = service.platform;
      this.values = { ...(service.settings ?? {}) };
      this.dirty = false;
    }
    this.done();
    this.render();
  }

  render(message) {
    const offered = this.platforms;
    const id = (s) => `meetingd-${s}`;
    const radios = offered.map((p) => h('label', { part: 'choice', class: 'choice' },
      h('input', { type: 'radio', name: 'platform', value: p.platform, checked: p.platform === this.choice,
        'aria-describedby': id('platform-error'), onchange: () => { this.collect(); this.dirty = true; this.choice = p.platform; this.render(); } }),
      h('span', {}, h('span', { class: 'title' }, p.display_name),
        h('span', { class: 'muted sub' },
          !p.needs_account ? 'No account needed' : p.connected ? 'Connected' : 'Not connected',
          p.fallback ? ' · the fallback' : ''))));
    if (!this.service.is_online) {
      radios.unshift(h('label', { part: 'choice', class: 'choice' },
        h('input', { type: 'radio', name: 'platform', value: '', checked: !this.choice, onchange: () => { this.collect(); this.dirty = true; this.choice = null; this.render(); } }),
        h('span', {}, h('span', { class: 'title' }, 'None'), h('span', { class: 'muted sub' }, 'An in-person service'))));
    }
    const chosen = offered.find((p) => p.platform === this.choice);
    const prompt = chosen && chosen.needs_account && !chosen.connected
      ? h('div', { part: 'connect-prompt message', class: 'message', 'data-tone': 'error', role: 'status' },
        `Connect ${chosen.display_name} before choosing it. `,
        h('button', { type: 'button', part: 'button button-primary', class: 'primary', 'data-action': 'connect',
          'data-platform': chosen.platform, onclick: (e) => this.connectFrom(chosen, e.currentTarget) }, `Connect ${chosen.display_name}`),
        this.location ? [' or ', h('a', { href: this.location, part: 'link' }, 'open Integrations')] : null)
      : null;
    const fields = [this.textField('title', 'Meeting title', 'Placeholders: {service}, {customer}, {provider}.')];
    for (const option of chosen?.options ?? []) fields.push(this.optionField(option));
    this.show(h('form', { part: 'form', class: 'stack card', novalidate: true, oninput: () => { this.dirty = true; },
      onsubmit: (e) => { e.preventDefault(); this.save(); } },
      h('fieldset', { part: 'field', 'aria-describedby': id('platform-error') },
        h('legend', {}, 'Meeting platform'),
        h('div', { class: 'choices', role: 'presentation' }, radios),
        h('p', { part: 'error', class: 'error', id: id('platform-error'), 'data-field': 'platform', hidden: true })),
      prompt,
      ...fields,
      h('div', { class: 'row' },
        h('button', { type: 'submit', part: 'button button-primary', class: 'primary', 'data-action': 'save' }, 'Save'),
        message ? h('p', { part: 'message', class: 'message', 'data-tone': message.tone, role: 'status' }, message.text) : null)));
  }

  textField(key, label, hint) {
    const id = `meetingd-${key}`;
    return h('div', { part: 'field', class: 'field' },
      h('label', { for: id, part: 'label' }, label),
      h('input', { type: 'text', id, name: key, value: this.values[key] ?? '', 'aria-describedby': `${id}-hint ${id}-error` }),
      h('span', { class: 'muted', id: `${id}-hint` }, hint),
      h('p', { part: 'error', class: 'error', id: `${id}-error`, 'data-field': key, hidden: true }));
  }

  optionField(key) {
    const id = `meetingd-${key}`;
    const info = OPTIONS[key] ?? { label: key, hint: '' };
    const control = key === 'recording'
      ? h('select', { id, name: key, 'aria-describedby': `${id}-hint ${id}-error` },
        ['none', 'local', 'cloud'].map((v) => h('option', { value: v, selected: (this.values[key] ?? 'none') === v },
          { none: 'Off', local: 'On the host’s computer', cloud: 'In the cloud' }[v])))
      : h('input', { type: 'checkbox', id, name: key, checked: this.values[key] === true, 'aria-describedby': `${id}-hint ${id}-error` });
    return h('div', { part: 'field', class: 'field' },
      key === 'recording' ? [h('label', { for: id, part: 'label' }, info.label), control]
        : h('span', { class: 'check' }, control, h('label', { for: id, part: 'label' }, info.label)),
      h('span', { class: 'muted', id: `${id}-hint` }, info.hint),
      h('p', { part: 'error', class: 'error', id: `${id}-error`, 'data-field': key, hidden: true }));
  }

  async connectFrom(platform, button) {
    button.disabled = true;
    try { await this.connect(platform); } catch (e) { this.fieldError('platform', e.message); }
    button.disabled = false;
  }

  /** Takes the form's fields (all but the platform) into `values`. */
  collect() {
    for (const control of this.body.querySelectorAll('input[name]:not([type=radio]), select[name]')) {
      this.values[control.name] = control.type === 'checkbox' ? control.checked : control.value.trim();
    }
  }

  /** The settings to send: the text fields, and only the options the chosen platform honours. */
  payload() {
    this.collect();
    const chosen = this.platforms.find((p) => p.platform === this.choice);
    const out = {};
    for (const [key, value] of Object.entries(this.values)) {
      if (key in OPTIONS && !(chosen?.options ?? []).includes(key)) continue;
      if (value === '' || value === null || value === undefined) continue;
      out[key] = value;
    }
    return { platform: this.choice || null, settings: out };
  }

  async save() {
    const button = this.body.querySelector('[data-action=save]');
    for (const el of this.body.querySelectorAll('.error')) el.hidden = true;
    for (const el of this.body.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    button.disabled = true;
    const body = this.payload();
    try {
      const saved = await this.api('PUT', `/api/services/${encodeURIComponent(this.serviceId)}/meeting`, body);
      this.service = { ...saved, id: this.serviceId };
      this.values = { ...(saved.settings ?? {}) };
      this.dirty = false;
      const text = `Saved: ${platformName(saved.platform, this.platforms) || 'no platform'}.`
        + (saved.rearmed ? ` ${saved.rearmed} upcoming booking${saved.rearmed === 1 ? '' : 's'} will follow.` : '');
      this.render({ tone: 'ok', text });
      this.announce(text);
      this.emit('meetingd:change', { element: 'platform-selector', serviceId: this.serviceId, platform: saved.platform, settings: saved.settings });
    } catch (e) {
      button.disabled = false;
      if (e.code === 'platform_not_connected') {
        this.location = e.location;
        const chosen = this.platforms.find((p) => p.platform === this.choice);
        if (chosen) chosen.connected = false;
        this.render();
      }
      this.fieldError(this.fieldOf(e), e.message);
      this.emit('meetingd:error', { code: e.code, status: e.status, message: e.message });
    }
  }

  /** Which field a refusal is about: the platform, an option the sentence names, or the title. */
  fieldOf(e) {
    if (['platform_required', 'unknown_platform', 'platform_unavailable', 'platform_not_connected'].includes(e.code)) return 'platform';
    if (e.code === 'unsupported_option' || e.code === 'invalid_settings') {
      const named = Object.keys(OPTIONS).find((k) => e.message.includes(`"${k}"`));
      if (named && this.body.querySelector(`[data-field=${named}]`)) return named;
      if (/title/.test(e.message)) return 'title';
    }
    return 'platform';
  }

  fieldError(field, text) {
    const spot = this.body.querySelector(`.error[data-field="${field}"]`) ?? this.body.querySelector('.error[data-field=platform]');
    spot.textContent = text;
    spot.hidden = false;
    const control = this.body.querySelector(`[name="${field}"]`);
    if (control) { control.setAttribute('aria-invalid', 'true'); control.focus(); }
    this.announce(text);
  }
}

/** <meetingd-meeting-link booking-id="…">: a booking's meeting, refreshed until it is settled. */
class MeetingdMeetingLink extends MeetingdElement {
  static observedAttributes = ['base-url', 'booking-id'];
  static SETTLED = ['ready', 'manual', 'deleted', 'failed'];

  get bookingId() { return this.getAttribute('booking-id'); }
  set bookingId(value) { this.setAttribute('booking-id', value); }

  /** First wait between polls, in seconds (`poll-interval`, default 2); it grows by half each
   * time up to `poll-max` (default 30) until the meeting is settled (linked, manual, deleted or failed). */
  get pollInterval() { return Number(this.getAttribute('poll-interval')) || 2; }
  get pollMax() { return Number(this.getAttribute('poll-max')) || 30; }

  connectedCallback() {
    this.onVisible = () => { if (document.visibilityState === 'visible' && this.timer) this.refresh(); };
    document.addEventListener('visibilitychange', this.onVisible);
    super.connectedCallback();
  }

  disconnectedCallback() {
    super.disconnectedCallback();
    document.removeEventListener('visibilitychange', this.onVisible);
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** Loads the meeting now, and polls again from the first interval. */
  refresh() {
    clearTimeout(this.timer);
    this.timer = null;
    this.wait = this.pollInterval;
    return this.load();
  }

  async load() {
    if (!this.bookingId) {
      this.done();
      this.show(h('p', { part: 'empty', class: 'muted' }, 'No booking chosen.'));
      return;
    }
    const load = this.begin();
    const bookingId = this.bookingId;
    if (this.meeting?.booking_id?.toLowerCase() !== bookingId.toLowerCase()) { this.meeting = null; this.loading('Loading the meeting…'); }
    try {
      const meeting = await this.api('GET', `/api/bookings/${encodeURIComponent(bookingId)}/meeting`);
      if (this.stale(load)) return;
      const changed = !this.meeting || this.meeting.meeting_status !== meeting.meeting_status || this.meeting.meeting_link !== meeting.meeting_link;
      this.meeting = meeting;
      this.done();
      if (changed) {
        this.render();
        const said = { ready: 'The meeting link is ready.', manual: 'The meeting link is ready.', failed: 'The meeting could not be created.' };
        if (said[meeting.meeting_status]) this.announce(said[meeting.meeting_status]);
        this.emit('meetingd:change', { element: 'meeting-link', bookingId: this.bookingId, status: meeting.meeting_status, link: meeting.meeting_link });
      }
      if (MeetingdMeetingLink.SETTLED.includes(meeting.meeting_status)) return;
    } catch (error) {
      if (this.stale(load)) return;
      if (error.status === 401 || error.status === 404 || error.code === 'no_token') { this.failed(error, () => this.refresh()); return; }
      if (!this.meeting) this.failed(error, () => this.refresh());
    }
    if (!this.isConnected) return;
    this.timer = setTimeout(() => this.load(), this.wait * 1000);
    this.wait = Math.min(this.wait * 1.5, this.pollMax);
  }

  render() {
    const m = this.meeting;
    const platform = platformName(m.meeting_platform);
    const link = safeLink(m.meeting_link);
    const [label, tone, text] = {
      ready: ['Ready', 'ok', null],
      manual: ['Link from the provider', 'ok', null],
      pending: ['Being created', null, 'The meeting is being created; its link appears here.'],
      failed: ['Failed', 'error', m.meeting_error ?? 'The meeting could not be created. The provider has been told.'],
      deleted: ['No meeting', null, 'This booking has no meeting any more.'],
    }[m.meeting_status] ?? ['Not yet', null, 'The meeting link appears here once the booking is confirmed.'];
    this.show(h('div', { part: 'card', class: 'card stack' },
      h('div', { class: 'row' },
        h('p', { part: 'card-title', class: 'title' }, platform ? `${platform} meeting` : 'Online meeting'),
        h('span', { part: 'status', class: 'badge', 'data-tone': tone, 'data-status': m.meeting_status ?? 'none' }, label)),
      text ? h('p', { part: m.meeting_status === 'failed' ? 'error' : 'hint', class: m.meeting_status === 'failed' ? 'error' : 'muted',
        'data-role': m.meeting_status === 'failed' ? 'meeting-error' : 'hint' }, text) : null,
      m.meeting_link ? h('p', { part: 'link', class: 'muted url', 'data-role': 'link-text' }, m.meeting_link) : null,
      h('div', { class: 'actions' },
        link ? h('a', { part: 'link button-primary', class: 'button primary', href: link, target: '_blank', rel: 'noopener noreferrer',
          'data-role': 'join' }, 'Join meeting') : null,
        h('button', { type: 'button', part: 'button button-calendar', 'data-action': 'calendar', onclick: (e) => this.calendar(e.currentTarget) },
          'Add to calendar')),
      h('p', { part: 'message', class: 'muted', 'data-role': 'calendar-status', role: 'status', hidden: true })));
  }

  /** The booking's .ics, fetched with the bearer token and handed to the browser as a download. */
  async calendar(button) {
    const status = this.body.querySelector('[data-role=calendar-status]');
    button.disabled = true;
    try {
      const response = await this.api('GET', `/api/bookings/${encodeURIComponent(this.bookingId)}/calendar.ics`, undefined, { raw: true });
      const url = URL.createObjectURL(await response.blob());
      const a = h('a', { href: url, download: `booking-${this.bookingId}.ics`, hidden: true });
      this.shadowRoot.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      status.textContent = 'Calendar file downloaded.';
      this.emit('meetingd:calendar', { bookingId: this.bookingId });
    } catch (e) {
      status.textContent = e.message;
    }
    status.hidden = false;
    button.disabled = false;
  }
}

/** The link as an https URL, else null (a link the app stored by hand could be anything). */
function safeLink(raw) {
  try { return raw && new URL(raw).protocol === 'https:' ? new URL(raw).href : null; } catch { return null; }
}

for (const [name, cls] of [['meetingd-integrations', MeetingdIntegrations],
  ['meetingd-platform-selector', MeetingdPlatformSelector], ['meetingd-meeting-link', MeetingdMeetingLink]]) {
  if (!customElements.get(name)) customElements.define(name, cls);
}

export { MeetingdIntegrations, MeetingdPlatformSelector, MeetingdMeetingLink };
globalThis.MeetingdElements = { configure, MeetingdApiError };
