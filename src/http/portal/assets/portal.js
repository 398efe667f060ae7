// The BYOK setup page. Loads everything from /portal/api with the session cookie, sends the
// session's CSRF token on every change, and writes every value as text (textContent), never as
// markup, so a key ARN, an error or an event field can never become HTML or script.
'use strict';

const state = { csrf: '', key: null, eventsAfter: null, pollTimer: null, confirmAction: null };

const $ = (id) => document.getElementById(id);

function show(id, visible) { $(id).hidden = !visible; }

function setText(id, text) { $(id).textContent = text == null || text === '' ? '—' : String(text); }

async function api(method, path, body) {
  const headers = { 'Accept': 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = state.csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch('/portal/api' + path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const error = new Error((data && data.message) || ('HTTP ' + response.status));
    error.status = response.status;
    error.code = data && data.code;
    throw error;
  }
  return data;
}

// Plain words for each way a key check can fail, and what to fix.
const VERDICTS = {
  key_disabled: ['The key is disabled', 'Enable the key in the AWS KMS console (Key actions → Enable), then verify again.'],
  wrong_key_spec: ['The key has the wrong type', 'Create a symmetric key (key spec SYMMETRIC_DEFAULT) with key usage "Encrypt and decrypt"; other key types cannot wrap data keys.'],
  access_denied: ['Access denied', 'The role cannot use the key. Attach the role permissions policy above to the role, and check that the key policy allows the role (or your account) to use the key.'],
  role_not_assumable: ['The broker cannot assume the role', 'Check the role ARN, and that the role trust policy names the broker\'s AWS identity with exactly the external id shown above.'],
  key_not_found: ['Key not found', 'No key with this ARN exists where the broker looked. Check the key id and account, and the region in the ARN: it must be the region the key was created in (a key in another region is not found).'],
  key_invalid_state: ['The key is pending deletion or unusable', 'Cancel the key\'s scheduled deletion (or pick another key), then verify again.'],
  round_trip_failed: ['The key did not work end to end', 'A test encryption with the key did not round-trip. Check the key and try again.'],
  invalid_key: ['KMS refused to use the key', 'Check that the key is a symmetric encryption key the role may use.'],
  invalid_key_arn: ['That is not a key ARN', 'Paste the key ARN (arn:aws:kms:<region>:<account>:key/<key id>) from the KMS console; aliases are not accepted.'],
  invalid_role_arn: ['That is not a role ARN', 'Paste the role ARN (arn:aws:iam::<account>:role/<name>) from the IAM console.'],
  role_arn_required: ['A role is required', 'Enter the ARN of the role you created for the broker.'],
  already_exists: ['A key is already connected', 'This organization already has a key: use "Rotate to a new key" below instead.'],
  kms_unavailable: ['AWS KMS did not answer', 'This is temporary: try again in a moment.'],
  kms_busy: ['AWS KMS is busy', 'This is temporary: try again in a moment.'],
};

function verdictFor(error) {
  let reason = error.code;
  if (error.code === 'byok_verification_failed') {
    const match = /\(([a-z_]+)\)/.exec(error.message || '');
    reason = match ? match[1] : 'invalid_key';
  }
  const known = VERDICTS[reason];
  return known ? { reason, title: known[0], text: known[1], detail: error.message }
    : { reason, title: 'The key could not be connected', text: error.message, detail: '' };
}

function showVerdict(good, title, text, reason) {
  const box = $('verdict');
  box.className = 'verdict ' + (good ? 'good' : 'bad');
  box.dataset.reason = reason || '';
  setText('verdict-title', title);
  setText('verdict-text', text);
  box.hidden = false;
}

function showResult(good, text) {
  const box = $('action-result');
  box.className = 'verdict ' + (good ? 'good' : 'bad');
  box.textContent = text;
  box.hidden = false;
}

async function loadSession() {
  const session = await api('GET', '/session');
  state.csrf = session.csrf_token;
  setText('organization', session.organization_id);
  if (session.return_url) { $('return-link').href = session.return_url; show('return-link', true); }
  if (session.success_url) { $('success-link').href = session.success_url; }
  state.successUrl = session.success_url;
}

async function loadSetup() {
  const setup = await api('GET', '/setup');
  setText('doc-key-settings', JSON.stringify(setup.key_settings, null, 2));
  setText('doc-external-id', setup.external_id);
  setText('doc-trust-policy', JSON.stringify(setup.trust_policy, null, 2));
  setText('doc-role-policy', JSON.stringify(setup.role_policy, null, 2));
  if (setup.event_rule) {
    setText('doc-event-rule', JSON.stringify(setup.event_rule, null, 2));
    show('event-rule', true);
  }
}

function renderKey(key) {
  state.key = key;
  show('step-status', Boolean(key));
  setText('connect-title', key ? '2. Rotate to a new key' : '2. Connect your key');
  setText('verify', key ? 'Verify and rotate' : 'Verify and connect');
  if (!key) return;
  const stateCell = $('key-state');
  stateCell.textContent = key.state;
  stateCell.className = 'state-' + key.state;
  setText('key-reason', key.reason);
  setText('key-checked', key.last_checked_at);
  setText('key-current', key.key_arn);
  const rotation = key.rotation || {};
  setText('key-rotation', rotation.enabled == null ? (rotation.warning || 'not read yet')
    : rotation.enabled ? ('on' + (rotation.period_days ? ', every ' + rotation.period_days + ' days' : '') + (rotation.next_rotation_at ? ', next ' + rotation.next_rotation_at : ''))
      : ('off: ' + (rotation.warning || '')));
  const underTenant = (key.keks || []).reduce((sum, kek) => sum + (kek.objects || 0), 0);
  setText('objects-tenant', String(underTenant));
  setText('objects-platform', String(key.objects_under_other_keys));
  const earlier = (key.keks || []).filter((kek) => !kek.current).reduce((sum, kek) => sum + (kek.objects || 0), 0);
  const toMove = key.state === 'retired' ? underTenant : key.objects_under_other_keys + earlier;
  setText('onboard', key.state === 'retired' ? 'Move my data back to platform keys' : 'Move existing data to my key');
  $('onboard').disabled = !(key.state === 'active' || key.state === 'retired') || toMove === 0;
  $('disable').hidden = key.state === 'disabled' || key.state === 'retired';
  $('enable').hidden = key.state !== 'disabled';
  $('retire').hidden = key.state === 'retired';
  show('success-link', Boolean(state.successUrl) && key.state === 'active');
}

async function loadKeys() {
  const keys = await api('GET', '/keys');
  renderKey(keys.data.length ? keys.data[0] : null);
}

function eventDetails(data) {
  const shown = {};
  for (const [name, value] of Object.entries(data || {})) {
    if (name !== 'organization_id') shown[name] = value;
  }
  return JSON.stringify(shown);
}

async function loadEvents(more) {
  const path = '/events' + (more && state.eventsAfter ? '?after=' + encodeURIComponent(state.eventsAfter) : '');
  const page = await api('GET', path);
  const body = $('events');
  if (!more) body.replaceChildren();
  for (const event of page.data) {
    const row = document.createElement('tr');
    for (const [text, cls] of [[event.created_at, ''], [event.event, ''], [eventDetails(event.data), 'details']]) {
      const cell = document.createElement('td');
      cell.textContent = text;
      if (cls) cell.className = cls;
      row.appendChild(cell);
    }
    body.appendChild(row);
  }
  state.eventsAfter = page.list_metadata && page.list_metadata.after;
  show('events-more', Boolean(state.eventsAfter));
}

async function connect(event) {
  event.preventDefault();
  const body = { key_arn: $('key-arn').value, role_arn: $('role-arn').value };
  $('verify').disabled = true;
  showVerdict(true, 'Checking the key…', 'The broker is assuming your role and testing the key.', 'checking');
  try {
    const key = state.key
      ? await api('POST', '/keys/' + encodeURIComponent(state.key.id) + '/rotate', body)
      : await api('POST', '/keys', body);
    showVerdict(true, 'Key verified and connected', 'New data of your organization is now protected by this key.', 'ok');
    renderKey(key);
  } catch (error) {
    if (error.status === 401) return sessionEnded(error);
    const verdict = verdictFor(error);
    showVerdict(false, verdict.title, verdict.text, verdict.reason);
  } finally {
    $('verify').disabled = false;
    loadEvents(false).catch(() => {});
  }
}

function progressOf(jobs) {
  const total = jobs.reduce((sum, job) => sum + job.total, 0);
  const done = jobs.reduce((sum, job) => sum + job.done + job.skipped, 0);
  const finished = jobs.every((job) => job.state !== 'running');
  return { total, done, finished, failed: jobs.reduce((sum, job) => sum + job.failed, 0) };
}

function renderProgress(jobs) {
  const { total, done, finished, failed } = progressOf(jobs);
  const percent = total === 0 ? 100 : Math.min(100, Math.floor((done * 100) / total));
  $('progress').value = finished && failed === 0 ? 100 : percent;
  setText('progress-text', (finished && failed === 0 ? 100 : percent) + ' % (' + done + ' of ' + total + ' objects)' + (failed ? ', ' + failed + ' failed' : ''));
  $('progress-box').dataset.finished = finished ? 'true' : 'false';
  show('progress-box', true);
  return finished;
}

async function onboard() {
  $('onboard').disabled = true;
  try {
    let jobs = (await api('POST', '/keys/' + encodeURIComponent(state.key.id) + '/onboard')).data;
    renderProgress(jobs);
    const poll = async () => {
      jobs = await Promise.all(jobs.map((job) => api('GET', '/rewrap-jobs/' + encodeURIComponent(job.id))));
      if (renderProgress(jobs)) {
        await loadKeys();
        await loadEvents(false);
        return;
      }
      state.pollTimer = setTimeout(poll, 500);
    };
    state.pollTimer = setTimeout(poll, 300);
  } catch (error) {
    showResult(false, error.message);
    $('onboard').disabled = false;
  }
}

const CONFIRMATIONS = {
  disable: ['Disable the key in the broker? Your organization\'s data cannot be read or written until you re-enable it. Nothing changes in your AWS account.', 'Yes, disable'],
  enable: ['Re-enable the key? The broker checks the key again before serving with it.', 'Yes, re-enable'],
  retire: ['Retire the key (offboarding)? New data goes back under the provider\'s platform keys; existing data stays readable only while your key stays usable, until it is moved back. This cannot be undone from this page.', 'Yes, retire'],
};

function askConfirmation(action) {
  const [text, label] = CONFIRMATIONS[action];
  state.confirmAction = action;
  setText('confirm-text', text);
  setText('confirm-yes', label);
  show('confirm', true);
}

async function confirmed() {
  const action = state.confirmAction;
  show('confirm', false);
  state.confirmAction = null;
  try {
    const key = await api('POST', '/keys/' + encodeURIComponent(state.key.id) + '/' + action);
    renderKey(key);
    showResult(true, { disable: 'The key is disabled in the broker.', enable: 'The key is enabled again.', retire: 'The key is retired.' }[action]);
  } catch (error) {
    if (error.status === 401) return sessionEnded(error);
    const verdict = verdictFor(error);
    showResult(false, verdict.title + ': ' + verdict.text);
  }
  loadEvents(false).catch(() => {});
}

function sessionEnded(error) {
  const box = $('session-error');
  box.textContent = 'Your session has ended (' + error.message + '). Open a new link from your provider.';
  box.hidden = false;
  for (const id of ['step-prepare', 'step-connect', 'step-status', 'step-activity']) show(id, false);
}

async function copy(event) {
  const source = $(event.target.dataset.copy);
  try {
    await navigator.clipboard.writeText(source.textContent);
    event.target.textContent = 'Copied';
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    event.target.textContent = 'Selected: press Ctrl+C';
  }
  setTimeout(() => { event.target.textContent = 'Copy'; }, 2000);
}

async function signOut() {
  try { await api('POST', '/sign_out'); } catch (_) { /* ended already */ }
  sessionEnded({ message: 'signed out' });
}

async function start() {
  for (const button of document.querySelectorAll('button.copy')) button.addEventListener('click', copy);
  $('connect-form').addEventListener('submit', connect);
  $('onboard').addEventListener('click', onboard);
  for (const action of ['disable', 'enable', 'retire']) $(action).addEventListener('click', () => askConfirmation(action));
  $('confirm-yes').addEventListener('click', confirmed);
  $('confirm-no').addEventListener('click', () => show('confirm', false));
  $('events-more').addEventListener('click', () => loadEvents(true));
  $('events-refresh').addEventListener('click', () => loadEvents(false));
  $('sign-out').addEventListener('click', signOut);
  try {
    await loadSession();
    await Promise.all([loadSetup(), loadKeys(), loadEvents(false)]);
    document.body.dataset.ready = 'true';
  } catch (error) {
    sessionEnded(error);
    document.body.dataset.ready = 'true';
  }
}

document.addEventListener('DOMContentLoaded', start);
