// The demo page's glue: the token and ids come from the fragment (#token=…&service=…&bookings=a,b)
// or the form, and are kept in this tab's sessionStorage only, so they survive the trip through
// a platform's consent screen. The fragment is removed from the address bar at once.
import { configure } from '/ui/meetingd-elements.js';

const KEYS = ['token', 'service', 'bookings'];
const form = document.getElementById('setup');

function saved() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const values = {};
  for (const key of KEYS) {
    const value = fragment.get(key) ?? sessionStorage.getItem(`meetingd-demo-${key}`) ?? '';
    values[key] = value;
    sessionStorage.setItem(`meetingd-demo-${key}`, value);
  }
  if (window.location.hash) history.replaceState(null, '', window.location.pathname + window.location.search);
  return values;
}

function apply({ token, service, bookings }) {
  form.token.value = token;
  form.service.value = service;
  form.bookings.value = bookings;
  configure({ token: token || null });
  const selector = document.getElementById('selector');
  if (service) selector.setAttribute('service-id', service); else selector.removeAttribute('service-id');
  const list = document.getElementById('bookings-list');
  const ids = bookings.split(',').map((s) => s.trim()).filter(Boolean);
  list.replaceChildren(...ids.map((id) => {
    const item = document.createElement('div');
    const title = document.createElement('h3');
    title.textContent = `booking ${id}`;
    const el = document.createElement('meetingd-meeting-link');
    el.setAttribute('booking-id', id);
    item.append(title, el);
    return item;
  }));
  if (ids.length === 0) {
    const p = document.createElement('p');
    p.className = 'hint';
    p.textContent = 'Enter booking ids above to follow their meetings.';
    list.append(p);
  }
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  const values = Object.fromEntries(KEYS.map((k) => [k, form[k].value.trim()]));
  for (const key of KEYS) sessionStorage.setItem(`meetingd-demo-${key}`, values[key]);
  apply(values);
});

const events = document.getElementById('events');
for (const name of ['meetingd:change', 'meetingd:error', 'meetingd:navigate', 'meetingd:calendar', 'meetingd:unauthorized']) {
  document.addEventListener(name, (e) => {
    const li = document.createElement('li');
    li.textContent = `${new Date().toLocaleTimeString()} ${name} ${JSON.stringify(e.detail)}`;
    events.prepend(li);
  });
}

apply(saved());
