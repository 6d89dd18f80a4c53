// Conductor's dashboard: polls /api/status once a second and redraws the page from it. Every
// value goes into the page as text (textContent), never as markup: client names and log lines
// come from the network.
'use strict';

const POLL_MILLISECONDS = 1000;
const QUEUE_ROWS = 50;

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text === undefined || text === null ? '' : String(text);
  if (className) td.className = className;
  return td;
}

function bar(value, max) {
  const progress = document.createElement('progress');
  progress.max = Math.max(max, 1);
  progress.value = Math.min(Math.max(value, 0), progress.max);
  progress.textContent = value + '/' + max;
  return progress;
}

function barCell(value, max) {
  const td = document.createElement('td');
  td.appendChild(bar(value, max));
  return td;
}

function shortId(id) {
  return String(id || '').slice(0, 8);
}

function seconds(value) {
  if (typeof value !== 'number' || !isFinite(value) || value < 0) return '';
  if (value < 60) return value.toFixed(1) + 's';
  const total = Math.round(value);
  const h = Math.floor(total / 3600), m = Math.floor(total / 60) % 60, s = total % 60;
  const pad = (n) => String(n).padStart(2, '0');
  return h > 0 ? h + 'h' + pad(m) + 'm' + pad(s) + 's' : m + 'm' + pad(s) + 's';
}

function number(value) {
  return typeof value === 'number' && isFinite(value) ? Number(value.toPrecision(6)).toString() : '-';
}

// Replaces the rows of `table` with one row per entry of `list`, or one "none" row.
function fillRows(table, list, makeRow, emptyText) {
  const body = table.tBodies[0];
  const rows = list.map(makeRow);
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(emptyText, 'empty');
    td.colSpan = table.tHead.rows[0].cells.length;
    tr.appendChild(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function versionRow(version) {
  const tr = document.createElement('tr');
  tr.dataset.version = version.name;
  const name = cell(version.name, 'name');
  if (version.current) {
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = 'current';
    name.appendChild(badge);
  }
  tr.append(name, barCell(version.stored, version.target),
            cell(version.stored + '/' + version.target, 'models number'),
            cell(version.queued, 'queued number'), cell(version.active, 'active number'));
  return tr;
}

// One line per item the client runs (a client with several slots runs several at once).
function clientRow(client) {
  const tr = document.createElement('tr');
  tr.dataset.client = client.id;
  const items = Array.isArray(client.items) ? client.items : [];
  const several = (client.slots || 1) > 1;
  const itemCell = document.createElement('td');
  itemCell.className = 'item';
  const epochCell = document.createElement('td');
  epochCell.className = 'epoch';
  if (items.length === 0) {
    itemCell.textContent = '-';
    epochCell.textContent = '-';
  }
  items.forEach((item, index) => {
    if (index > 0) {
      itemCell.appendChild(document.createElement('br'));
      epochCell.appendChild(document.createElement('br'));
    }
    itemCell.append((several ? '[' + item.slot + '] ' : '') + shortId(item.item) + ' ' + item.item_version);
    if (item.total_epochs > 0) {
      epochCell.append(bar(item.epoch, item.total_epochs), ' ' + item.epoch + '/' + item.total_epochs);
    } else {
      epochCell.append('epoch unknown');
    }
  });
  const slots = (client.busy_slots !== undefined ? client.busy_slots + '/' : '') + (client.slots || 1);
  tr.append(cell(client.host + (client.reserved ? ' (reserve)' : ''), 'host'), cell(client.type, 'type'),
            cell(client.state, 'state state-' + client.state), cell(slots, 'slots number'), itemCell,
            epochCell);
  return tr;
}

function activeRow(item) {
  const tr = document.createElement('tr');
  tr.dataset.item = item.id;
  tr.append(cell(shortId(item.id)), cell(item.type), cell(item.version), cell(item.attempt, 'number'),
            cell(item.client), cell(seconds(item.running_seconds), 'number'));
  return tr;
}

function queuedRow(item) {
  const tr = document.createElement('tr');
  tr.dataset.item = item.id;
  tr.append(cell(shortId(item.id)), cell(item.type), cell(item.version), cell(item.attempt, 'number'));
  return tr;
}

function ensembleRow(result) {
  const tr = document.createElement('tr');
  tr.dataset.request = result.request;
  tr.append(cell(shortId(result.request)), cell(result.version),
            cell(result.values.length + '/' + result.expected, 'answers number'),
            cell(number(result.mean), 'mean number'), cell(number(result.median), 'median number'),
            cell(number(result.stddev), 'number'), cell(result.failures.length, 'failures number'));
  return tr;
}

function queueSummary(status) {
  const byType = {};
  for (const item of status.queued) byType[item.type] = (byType[item.type] || 0) + 1;
  const parts = Object.keys(byType).sort().map((type) => byType[type] + ' ' + type);
  let text = status.queued_count + ' queued';
  if (parts.length > 0 && status.queued_count === status.queued.length) text += ' (' + parts.join(', ') + ')';
  text += ', ' + status.active.length + ' active, ' + status.pending_predictions + ' prediction request(s) running';
  if (status.queued.length > QUEUE_ROWS) text += '; the first ' + QUEUE_ROWS + ' queued are listed';
  return text;
}

function render(status) {
  const stored = status.versions.reduce((sum, v) => sum + v.stored, 0);
  const target = status.versions.reduce((sum, v) => sum + v.target, 0);
  document.getElementById('clients-count').textContent = status.clients.length;
  document.getElementById('queued-count').textContent = status.queued_count;
  document.getElementById('active-count').textContent = status.active.length;
  document.getElementById('models-count').textContent = stored + '/' + target;
  document.getElementById('uptime').textContent = seconds(status.server.uptime_seconds);
  fillRows(document.getElementById('versions'), status.versions, versionRow, 'no versions');
  fillRows(document.getElementById('clients'), status.clients, clientRow, 'no clients connected');
  document.getElementById('queue-summary').textContent = queueSummary(status);
  fillRows(document.getElementById('active'), status.active, activeRow, 'nothing running');
  fillRows(document.getElementById('queue'), status.queued.slice(0, QUEUE_ROWS), queuedRow, 'the queue is empty');
  fillRows(document.getElementById('ensembles'), status.ensembles, ensembleRow, 'no predictions yet');
  const log = document.getElementById('log');
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = status.log.join('\n');
  if (atEnd) log.scrollTop = log.scrollHeight;
}

// Answers drawn since the page loaded, also as data-polls on #connection (the dashboard's
// test reads it to see the page redraw itself).
let polls = 0;

function showConnection(text, stale) {
  const connection = document.getElementById('connection');
  connection.textContent = text;
  connection.className = stale ? 'stale' : '';
  connection.dataset.polls = String(polls);
}

async function refresh() {
  try {
    const response = await fetch('/api/status', { cache: 'no-store' });
    if (!response.ok) throw new Error('HTTP ' + response.status);
    render(await response.json());
    polls += 1;
    showConnection('updated ' + new Date().toLocaleTimeString(), false);
  } catch (error) {
    showConnection('no answer from the server (' + error.message + '); retrying', true);
  } finally {
    setTimeout(refresh, POLL_MILLISECONDS);
  }
}

refresh();
