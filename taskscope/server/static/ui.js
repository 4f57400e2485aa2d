// taskscope ui: the run list and run detail pages. Hand-written, no build step, no dependency.
//
// Every value that came from a recorded run (names, inputs, outputs, errors, payloads, ids) is
// put in the page with textContent or as a text node, never through innerHTML, so captured
// text can never become markup or script. Links built from ids go through encodeURIComponent
// under a fixed path, so an id cannot become a javascript: URL.
'use strict';

(function () {
  const POLL_MS = 1000;
  const ROW_HEIGHT = 24;
  const OVERSCAN = 12;
  const SYMBOLS = {
    completed: '✓', failed: '✗', skipped: '↷', running: '…', pending: '·', cancelled: '⊘',
  };
  const STATUSES = ['completed', 'failed', 'skipped', 'running', 'pending', 'cancelled'];

  // -- small helpers ----------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function known(status) {
    return STATUSES.indexOf(status) >= 0 ? status : 'pending';
  }

  function badge(status) {
    const span = el('span', 'status status-' + known(status));
    span.textContent = (SYMBOLS[status] || '?') + ' ' + status;
    return span;
  }

  // The same wording as the terminal timeline: "83 ms", "12.4 s", "3m05s".
  function formatDuration(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return '–';
    if (ms < 10000) return Math.round(ms) + ' ms';
    if (ms < 600000) return (ms / 1000).toFixed(1) + ' s';
    const total = Math.round(ms / 1000);
    const minutes = Math.floor(total / 60);
    const seconds = total % 60;
    return minutes + 'm' + (seconds < 10 ? '0' : '') + seconds + 's';
  }

  function formatOffset(ms) {
    return '+' + formatDuration(Math.max(0, ms));
  }

  function formatTime(epochMs) {
    const text = new Date(epochMs).toISOString();
    return text.slice(0, 10) + ' ' + text.slice(11, 19);
  }

  function json(value) {
    if (value === undefined) return 'null';
    return JSON.stringify(value, null, 2);
  }

  function shortJson(value, width) {
    let text = typeof value === 'string' ? value : JSON.stringify(value);
    if (text === undefined) text = '';
    text = text.replace(/\s+/g, ' ');
    return text.length > width ? text.slice(0, width - 1) + '…' : text;
  }

  function pre(value, extra) {
    return el('pre', 'json' + (extra ? ' ' + extra : ''), json(value));
  }

  function textBlock(text, extra) {
    return el('pre', 'json' + (extra ? ' ' + extra : ''), text);
  }

  function setLive(text) {
    const live = document.getElementById('live');
    if (live) live.textContent = text;
  }

  function showMessage(text, isError) {
    const box = document.getElementById('message');
    if (!box) return;
    box.hidden = !text;
    box.textContent = text || '';
    box.className = 'message' + (isError ? ' error' : '');
  }

  async function getData(url) {
    const response = await fetch(url, {
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
      cache: 'no-store',
    });
    let body = null;
    try {
      body = await response.json();
    } catch (ignored) {
      body = null;
    }
    if (!response.ok || !body || body.error) {
      const error = new Error(
        body && body.error ? body.error.message : 'HTTP ' + response.status + ' from ' + url);
      error.status = response.status;
      throw error;
    }
    return body.data;
  }

  function clock() {
    return new Date().toISOString().slice(11, 19);
  }

  // -- the run list -----------------------------------------------------------------------

  function runsPage() {
    const PAGE_SIZE = 25;
    const params = new URLSearchParams(location.search);
    const state = {
      status: params.get('status') || '',
      name: params.get('name') || '',
      q: params.get('q') || '',
      page: Math.max(1, parseInt(params.get('page') || '1', 10) || 1),
    };
    const statusBox = document.getElementById('status');
    const nameBox = document.getElementById('name');
    const idBox = document.getElementById('q');
    statusBox.value = state.status;
    nameBox.value = state.name;
    idBox.value = state.q;
    let inFlight = false;
    let timer = null;
    let total = 0;

    function syncUrl() {
      const out = new URLSearchParams();
      if (state.status) out.set('status', state.status);
      if (state.name) out.set('name', state.name);
      if (state.q) out.set('q', state.q);
      if (state.page > 1) out.set('page', String(state.page));
      const query = out.toString();
      history.replaceState(null, '', location.pathname + (query ? '?' + query : ''));
    }

    function render(data) {
      const body = document.getElementById('runs-body');
      clear(body);
      total = data.total;
      if (!data.runs.length) {
        const row = el('tr');
        const cell = el('td', 'empty', total ? 'No runs on this page.' :
          (state.status || state.name || state.q) ? 'No run matches these filters.' :
            'No runs yet. Run an instrumented program, or send runs to this server.');
        cell.colSpan = 7;
        row.appendChild(cell);
        body.appendChild(row);
      }
      const now = Date.now();
      for (const run of data.runs) {
        const row = el('tr');
        row.dataset.runId = run.id;
        row.dataset.status = run.status;
        const nameCell = el('td', 'name');
        const link = el('a', null, run.name);
        link.href = '/runs/' + encodeURIComponent(run.id);
        nameCell.appendChild(link);
        row.appendChild(nameCell);
        const statusCell = el('td');
        statusCell.appendChild(badge(run.status));
        row.appendChild(statusCell);
        row.appendChild(el('td', 'mono', formatTime(run.start_ms)));
        const duration = run.duration_ms !== null ? formatDuration(run.duration_ms) :
          formatDuration(now - run.start_ms) + ' so far';
        row.appendChild(el('td', 'num', duration));
        row.appendChild(el('td', 'num', run.tasks.toLocaleString('en')));
        row.appendChild(el('td', 'num' + (run.failed ? ' failed-count' : ''),
          run.failed.toLocaleString('en')));
        const idCell = el('td', 'mono run-id', run.id);
        row.appendChild(idCell);
        body.appendChild(row);
      }
      const first = data.runs.length ? data.offset + 1 : 0;
      const last = data.offset + data.runs.length;
      const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
      document.getElementById('range').textContent =
        first + '–' + last + ' of ' + total.toLocaleString('en') +
        ' · page ' + state.page + ' of ' + pages;
      document.getElementById('prev').disabled = state.page <= 1;
      document.getElementById('next').disabled = last >= total;
      const running = data.runs.filter((run) => run.status === 'running').length;
      setLive('live · refreshed ' + clock() + (running ? ' · ' + running + ' running' : ''));
    }

    async function load() {
      if (inFlight) return;
      inFlight = true;
      const query = new URLSearchParams();
      if (state.status) query.set('status', state.status);
      if (state.name) query.set('name', state.name);
      if (state.q) query.set('q', state.q);
      query.set('limit', String(PAGE_SIZE));
      query.set('offset', String((state.page - 1) * PAGE_SIZE));
      try {
        render(await getData('/api/runs?' + query.toString()));
        showMessage('');
      } catch (error) {
        showMessage(error.message, true);
      } finally {
        inFlight = false;
        document.body.dataset.ready = '1';
      }
    }

    function changed() {
      state.status = statusBox.value;
      state.name = nameBox.value.trim();
      state.q = idBox.value.trim();
      state.page = 1;
      syncUrl();
      load();
    }

    let debounce = null;
    function typed() {
      clearTimeout(debounce);
      debounce = setTimeout(changed, 200);
    }
    statusBox.addEventListener('change', changed);
    nameBox.addEventListener('input', typed);
    idBox.addEventListener('input', typed);
    document.getElementById('filters').addEventListener('submit', (event) => {
      event.preventDefault();
      changed();
    });
    document.getElementById('prev').addEventListener('click', () => {
      state.page = Math.max(1, state.page - 1);
      syncUrl();
      load();
    });
    document.getElementById('next').addEventListener('click', () => {
      state.page += 1;
      syncUrl();
      load();
    });

    // Live refresh: new runs and running runs' progress show up without a reload.
    function poll() {
      timer = setTimeout(async () => {
        if (!document.hidden) await load();
        poll();
      }, POLL_MS);
    }
    load().then(poll);
    window.addEventListener('pagehide', () => clearTimeout(timer));
  }

  // -- the run detail ---------------------------------------------------------------------

  function runPage() {
    const runId = decodeURIComponent(location.pathname.replace(/^\/runs\//, ''));
    const apiUrl = '/api/runs/' + encodeURIComponent(runId);
    const viewport = document.getElementById('viewport');
    const spacer = document.getElementById('spacer');
    const model = {
      data: null,
      byId: new Map(),
      children: new Map(), // parent id ('' for the run) -> tasks in seq order
      depth: new Map(),
      failedPath: new Set(),
      eventsByTask: new Map(),
      rows: [], // flattened visible rows: {task|null, depth}
      collapsed: new Set(),
      selected: new URLSearchParams(location.search).get('task') || '',
      axis: 1,
    };
    let firstRender = true;

    function build(data) {
      model.data = data;
      model.byId = new Map();
      model.children = new Map();
      model.depth = new Map();
      model.failedPath = new Set();
      model.eventsByTask = new Map();
      for (const task of data.tasks) model.byId.set(task.id, task);
      for (const task of data.tasks) {
        const parent = task.parent_id && model.byId.has(task.parent_id) ? task.parent_id : '';
        if (!model.children.has(parent)) model.children.set(parent, []);
        model.children.get(parent).push(task);
      }
      for (const list of model.children.values()) list.sort((a, b) => a.seq - b.seq);
      for (const event of data.events) {
        const owner = event.task_id && model.byId.has(event.task_id) ? event.task_id : '';
        if (!model.eventsByTask.has(owner)) model.eventsByTask.set(owner, []);
        model.eventsByTask.get(owner).push(event);
      }
      // The failed path: every failed task and all its ancestors, so where it broke is one
      // line of red from the run down.
      for (const task of data.tasks) {
        if (task.status !== 'failed') continue;
        let cursor = task;
        const seen = new Set();
        while (cursor && !seen.has(cursor.id)) {
          seen.add(cursor.id);
          model.failedPath.add(cursor.id);
          cursor = cursor.parent_id ? model.byId.get(cursor.parent_id) : null;
        }
      }
      const run = data.run;
      model.axis = Math.max(run.axis_ms, 0.001);
      if (firstRender && data.tasks.length > 2000) {
        // Very large runs open with subtrees folded, except the ones on the failed path
        // and the one holding the selected task, so the first screen is readable.
        for (const [parent, list] of model.children) {
          if (parent && !model.failedPath.has(parent) && list.length) model.collapsed.add(parent);
        }
      }
      if (model.selected) revealTask(model.selected);
    }

    function revealTask(taskId) {
      let cursor = model.byId.get(taskId);
      const seen = new Set();
      while (cursor && cursor.parent_id && !seen.has(cursor.id)) {
        seen.add(cursor.id);
        model.collapsed.delete(cursor.parent_id);
        cursor = model.byId.get(cursor.parent_id);
      }
    }

    function flatten() {
      const rows = [{ task: null, depth: 0 }];
      // Iterative depth-first walk: a 5,000-deep chain must not overflow the stack.
      const stack = [];
      const roots = model.children.get('') || [];
      for (let i = roots.length - 1; i >= 0; i--) stack.push([roots[i], 1]);
      while (stack.length) {
        const [task, depth] = stack.pop();
        rows.push({ task: task, depth: depth });
        if (model.collapsed.has(task.id)) continue;
        const kids = model.children.get(task.id) || [];
        for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
      }
      model.rows = rows;
      spacer.style.height = rows.length * ROW_HEIGHT + 'px';
    }

    function descendants(taskId) {
      let count = 0;
      const stack = [taskId];
      while (stack.length) {
        const kids = model.children.get(stack.pop()) || [];
        count += kids.length;
        for (const kid of kids) stack.push(kid.id);
      }
      return count;
    }

    function percent(ms) {
      return Math.min(100, Math.max(0, (ms / model.axis) * 100));
    }

    function renderHeader() {
      const run = model.data.run;
      const header = document.getElementById('run-header');
      clear(header);
      document.title = run.name + ' · taskscope';
      const title = el('div', 'run-title');
      title.appendChild(el('h1', null, run.name));
      title.appendChild(badge(run.status));
      header.appendChild(title);
      const facts = el('div', 'facts');
      function fact(label, value, className) {
        const span = el('span', className);
        span.appendChild(document.createTextNode(label + ' '));
        span.appendChild(el('b', null, value));
        facts.appendChild(span);
      }
      fact('duration', run.duration_ms !== null ? formatDuration(run.duration_ms) :
        formatDuration(model.axis) + ' so far', 'run-duration');
      fact('started', formatTime(run.start_ms) + ' UTC');
      const counts = {};
      for (const task of model.data.tasks) counts[task.status] = (counts[task.status] || 0) + 1;
      const parts = STATUSES.filter((s) => counts[s]).map((s) => counts[s].toLocaleString('en') + ' ' + s);
      fact('tasks', model.data.tasks.length.toLocaleString('en') +
        (parts.length ? ' (' + parts.join(', ') + ')' : ''));
      fact('events', model.data.events.length.toLocaleString('en'));
      const usage = run.usage || {};
      const usageParts = Object.keys(usage).map((key) => key.replace(/_/g, ' ') + ' ' +
        Number(usage[key]).toLocaleString('en'));
      if (usageParts.length) fact('usage', usageParts.join(' · '), 'run-usage');
      fact('run id', run.id, 'mono');
      if (run.tags && run.tags.length) fact('tags', run.tags.join(', '));
      if (run.parent_run_id) fact('parent run', run.parent_run_id, 'mono');
      if (run.external_run_id) fact('external id', run.external_run_id, 'mono');
      header.appendChild(facts);
      if (run.error) header.appendChild(errorBox(run.error, 'run-error'));
      const values = el('div', 'values');
      for (const [label, value, id] of [['Input', run.input, 'run-input'],
        ['Output', run.output, 'run-output']]) {
        const box = el('div');
        box.appendChild(el('h3', null, label));
        const block = pre(value);
        block.id = id;
        box.appendChild(block);
        values.appendChild(box);
      }
      header.appendChild(values);
    }

    function errorBox(error, id) {
      const box = el('div', 'errorbox');
      if (id) box.id = id;
      box.textContent = (error.type ? error.type + ': ' : '') + (error.message || '');
      return box;
    }

    function renderLegend() {
      const legend = document.getElementById('legend');
      clear(legend);
      for (const status of ['completed', 'failed', 'skipped', 'running']) {
        const item = el('span');
        const swatch = el('i', 'swatch ' + status);
        item.appendChild(swatch);
        item.appendChild(document.createTextNode(status));
        legend.appendChild(item);
      }
    }

    function renderAxis() {
      const axis = document.getElementById('axis');
      clear(axis);
      for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
        const tick = el('div', 'tick' + (fraction === 1 ? ' last' : ''),
          formatDuration(model.axis * fraction));
        tick.style.left = fraction * 100 + '%';
        axis.appendChild(tick);
      }
      // Every event as a marker on the axis, merged per 0.25 % so 5,000 stay cheap.
      const buckets = new Map();
      for (const event of model.data.events) {
        const key = Math.round(percent(event.offset_ms) * 4);
        const bucket = buckets.get(key) || { count: 0, level: 'info', types: new Set() };
        bucket.count += 1;
        bucket.types.add(event.type);
        if (event.level === 'error' || (event.level === 'warn' && bucket.level !== 'error')) {
          bucket.level = event.level;
        }
        buckets.set(key, bucket);
      }
      for (const [key, bucket] of buckets) {
        const marker = el('div', 'axis-marker ' + bucket.level + (buckets.size > 80 ? ' dense' : ''));
        marker.style.left = key / 4 + '%';
        marker.title = bucket.count + ' event' + (bucket.count > 1 ? 's' : '') + ': ' +
          Array.from(bucket.types).slice(0, 5).join(', ');
        axis.appendChild(marker);
      }
    }

    function makeRow(entry, index) {
      const task = entry.task;
      const run = model.data.run;
      const row = el('div', 'row');
      row.style.top = index * ROW_HEIGHT + 'px';
      const status = task ? task.status : run.status;
      const id = task ? task.id : '';
      row.dataset.taskId = id;
      row.dataset.status = status;
      row.dataset.index = String(index);
      if (!task) row.classList.add('run-row');
      if (task ? model.failedPath.has(task.id) : model.failedPath.size > 0) {
        row.classList.add('failed-path');
      }
      if (id === model.selected) row.classList.add('selected');

      const label = el('div', 'label');
      label.style.paddingLeft = 6 + entry.depth * 14 + 'px';
      const kids = task ? model.children.get(task.id) : null;
      if (kids && kids.length) {
        const toggle = el('button', 'toggle', model.collapsed.has(task.id) ? '▸' : '▾');
        toggle.type = 'button';
        toggle.title = model.collapsed.has(task.id) ? 'expand' : 'collapse';
        toggle.dataset.toggle = task.id;
        label.appendChild(toggle);
      } else {
        label.appendChild(el('span', 'toggle-space'));
      }
      label.appendChild(el('span', 'sym sym-' + known(status), SYMBOLS[status] || '?'));
      const name = el('span', 'name', task ? task.name : 'run ' + run.name);
      name.title = task ? task.name : run.name;
      label.appendChild(name);
      if (task && task.metadata && task.metadata.skip_reason) {
        label.appendChild(el('span', 'note', '(' + shortJson(task.metadata.skip_reason, 40) + ')'));
      }
      if (task && model.collapsed.has(task.id)) {
        label.appendChild(el('span', 'folded', '+' + descendants(task.id).toLocaleString('en')));
      }
      row.appendChild(label);

      const start = task ? task.offset_ms : 0;
      const duration = task ? (task.duration_ms !== null ? task.duration_ms :
        Math.max(0, model.axis - start)) : model.axis;
      const durationText = task && task.duration_ms === null ? '…' : formatDuration(duration);
      row.appendChild(el('div', 'dur', durationText));

      const track = el('div', 'track');
      const bar = el('div', 'bar ' + known(status));
      bar.style.left = percent(start) + '%';
      bar.style.width = Math.min(percent(duration), 100 - percent(start)) + '%';
      bar.dataset.durationMs = String(duration);
      bar.title = (task ? task.name : run.name) + ' · ' + status + ' · ' + durationText;
      track.appendChild(bar);
      for (const event of model.eventsByTask.get(id) || []) {
        const marker = el('div', 'marker ' + (event.level === 'error' || event.level === 'warn' ?
          event.level : 'info'));
        marker.style.left = percent(event.offset_ms) + '%';
        marker.title = '#' + event.seq + ' ' + event.type + ' ' + formatOffset(event.offset_ms);
        track.appendChild(marker);
      }
      row.appendChild(track);
      return row;
    }

    // Virtualised rendering: only the rows in (or near) the viewport exist in the DOM, so a
    // 5,000-task run costs about as much as a 50-task one.
    let drawn = { from: -1, to: -1 };
    function drawRows(force) {
      const height = viewport.clientHeight || 600;
      const from = Math.max(0, Math.floor(viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
      const to = Math.min(model.rows.length,
        Math.ceil((viewport.scrollTop + height) / ROW_HEIGHT) + OVERSCAN);
      if (!force && from === drawn.from && to === drawn.to) return;
      drawn = { from: from, to: to };
      const fragment = document.createDocumentFragment();
      for (let i = from; i < to; i++) fragment.appendChild(makeRow(model.rows[i], i));
      clear(spacer);
      spacer.appendChild(fragment);
    }

    function renderEvents() {
      const body = document.getElementById('events-body');
      clear(body);
      const events = model.data.events;
      document.getElementById('event-count').textContent = '(' + events.length.toLocaleString('en') + ')';
      // Sequence order, as recorded. Beyond a few thousand rows a table stops being read.
      const LIMIT = 2000;
      const fragment = document.createDocumentFragment();
      for (const event of events.slice(0, LIMIT)) {
        const row = el('tr', event.level);
        row.dataset.seq = String(event.seq);
        row.dataset.taskId = event.task_id && model.byId.has(event.task_id) ? event.task_id : '';
        if (row.dataset.taskId && row.dataset.taskId === model.selected) row.classList.add('selected');
        row.appendChild(el('td', 'num', event.seq));
        row.appendChild(el('td', 'num', formatOffset(event.offset_ms)));
        row.appendChild(el('td', 'level', event.level));
        row.appendChild(el('td', 'mono type', event.type));
        const owner = model.byId.get(event.task_id);
        row.appendChild(el('td', 'task', owner ? owner.name : '(run)'));
        const payload = el('td', 'payload mono', shortJson(event.payload, 160));
        payload.title = shortJson(event.payload, 2000);
        row.appendChild(payload);
        fragment.appendChild(row);
      }
      if (events.length > LIMIT) {
        const row = el('tr');
        const cell = el('td', 'empty', (events.length - LIMIT).toLocaleString('en') +
          ' more events: select a task to see its own, or use /api/runs/ID.');
        cell.colSpan = 6;
        row.appendChild(cell);
        fragment.appendChild(row);
      }
      body.appendChild(fragment);
    }

    function field(list, label, value, className) {
      list.appendChild(el('dt', null, label));
      list.appendChild(el('dd', className, value));
    }

    // A model call (taskscope.instrument_openai/anthropic): the model that answered and the
    // tokens, without reading the metadata.
    function llmFields(list, meta) {
      const model = meta.response_model || meta.request_model;
      if (typeof model === 'string') field(list, 'model', model, 'llm-model');
      const parts = [['input_tokens', 'in'], ['output_tokens', 'out']]
        .filter(([key]) => typeof meta[key] === 'number')
        .map(([key, word]) => meta[key].toLocaleString('en') + ' ' + word);
      if (parts.length) field(list, 'tokens', parts.join(' · '), 'llm-tokens');
    }

    function section(panel, title, node, id) {
      const box = el('section');
      if (id) box.id = id;
      box.appendChild(el('h3', null, title));
      box.appendChild(node);
      panel.appendChild(box);
    }

    function renderDetail() {
      const panel = document.getElementById('detail');
      clear(panel);
      const task = model.selected ? model.byId.get(model.selected) : null;
      const run = model.data.run;
      if (!task) {
        const heading = el('h2', null, 'run ' + run.name);
        heading.appendChild(badge(run.status));
        panel.appendChild(heading);
        panel.appendChild(el('p', 'hint', 'Click a task in the timeline to see its input, ' +
          'output, error and metadata.'));
        const list = el('dl');
        field(list, 'duration', run.duration_ms !== null ? formatDuration(run.duration_ms) : 'running');
        field(list, 'run id', run.id, 'mono');
        panel.appendChild(list);
        if (run.error) {
          section(panel, 'Error', errorBox(run.error));
          if (run.error.traceback) section(panel, 'Traceback', textBlock(run.error.traceback, 'traceback'));
        }
        section(panel, 'Metadata', pre(run.metadata));
        panel.dataset.taskId = '';
        return;
      }
      panel.dataset.taskId = task.id;
      const heading = el('h2');
      heading.appendChild(el('span', 'detail-name', task.name));
      heading.appendChild(badge(task.status));
      panel.appendChild(heading);
      const list = el('dl');
      field(list, 'duration', task.duration_ms !== null ? formatDuration(task.duration_ms) : 'running');
      field(list, 'started', formatOffset(task.offset_ms) + ' after the run started');
      field(list, 'kind', task.kind);
      field(list, 'seq', task.seq);
      const parent = task.parent_id ? model.byId.get(task.parent_id) : null;
      field(list, 'parent', parent ? parent.name : '(the run)');
      field(list, 'task id', task.id, 'mono');
      if (task.metadata && task.metadata.skip_reason) {
        field(list, 'skipped because', task.metadata.skip_reason);
      }
      if (task.kind === 'llm' && task.metadata) llmFields(list, task.metadata);
      panel.appendChild(list);
      if (task.error) {
        section(panel, 'Error', errorBox(task.error, 'task-error'));
        if (task.error.traceback) {
          section(panel, 'Traceback', textBlock(task.error.traceback, 'traceback'), 'task-traceback');
        }
        if (task.error.detail !== undefined && task.error.detail !== null) {
          section(panel, 'Error detail', pre(task.error.detail));
        }
      }
      section(panel, 'Input', pre(task.input), 'task-input');
      section(panel, 'Output', pre(task.output), 'task-output');
      section(panel, 'Metadata', pre(task.metadata), 'task-metadata');
      const own = model.eventsByTask.get(task.id) || [];
      if (own.length) {
        const events = el('ol', 'task-events');
        for (const event of own.slice(0, 200)) {
          events.appendChild(el('li', event.level, '#' + event.seq + ' ' + event.type + ' ' +
            shortJson(event.payload, 200)));
        }
        section(panel, 'Events (' + own.length + ')', events);
      }
    }

    function select(taskId, push) {
      model.selected = taskId && model.byId.has(taskId) ? taskId : '';
      const query = new URLSearchParams(location.search);
      if (model.selected) query.set('task', model.selected);
      else query.delete('task');
      const text = query.toString();
      const url = location.pathname + (text ? '?' + text : '');
      if (push) history.pushState(null, '', url);
      else history.replaceState(null, '', url);
      if (model.selected && model.collapsed.size) {
        const before = model.collapsed.size;
        revealTask(model.selected);
        if (model.collapsed.size !== before) flatten();
      }
      drawRows(true);
      for (const row of document.querySelectorAll('#events-body tr')) {
        row.classList.toggle('selected', !!model.selected && row.dataset.taskId === model.selected);
      }
      renderDetail();
    }

    function scrollToSelected() {
      if (!model.selected) return;
      const index = model.rows.findIndex((entry) => entry.task && entry.task.id === model.selected);
      if (index < 0) return;
      const top = index * ROW_HEIGHT;
      if (top < viewport.scrollTop || top > viewport.scrollTop + viewport.clientHeight - ROW_HEIGHT) {
        viewport.scrollTop = Math.max(0, top - viewport.clientHeight / 3);
      }
    }

    function render() {
      if (!document.getElementById('legend').firstChild) renderLegend();
      renderHeader();
      renderAxis();
      flatten();
      if (firstRender) scrollToSelected();
      drawRows(true);
      renderEvents();
      renderDetail();
      firstRender = false;
    }

    viewport.addEventListener('scroll', () => drawRows(false), { passive: true });
    window.addEventListener('resize', () => drawRows(true));
    spacer.addEventListener('click', (event) => {
      const toggle = event.target.closest('[data-toggle]');
      if (toggle) {
        const id = toggle.dataset.toggle;
        if (model.collapsed.has(id)) model.collapsed.delete(id);
        else model.collapsed.add(id);
        flatten();
        drawRows(true);
        return;
      }
      const row = event.target.closest('.row');
      if (row) select(row.dataset.taskId, true);
    });
    viewport.addEventListener('keydown', (event) => {
      if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
      event.preventDefault();
      const index = model.rows.findIndex((entry) => (entry.task ? entry.task.id : '') === model.selected);
      const next = Math.min(model.rows.length - 1, Math.max(0, index + (event.key === 'ArrowDown' ? 1 : -1)));
      const entry = model.rows[next];
      select(entry.task ? entry.task.id : '', false);
      scrollToSelected();
    });
    document.getElementById('events-body').addEventListener('click', (event) => {
      const row = event.target.closest('tr');
      if (row && row.dataset.taskId !== undefined) {
        select(row.dataset.taskId, true);
        scrollToSelected();
      }
    });
    document.getElementById('expand-all').addEventListener('click', () => {
      model.collapsed.clear();
      flatten();
      scrollToSelected();
      drawRows(true);
    });
    document.getElementById('collapse-all').addEventListener('click', () => {
      for (const [parent, list] of model.children) if (parent && list.length) model.collapsed.add(parent);
      if (model.selected) revealTask(model.selected);
      flatten();
      scrollToSelected();
      drawRows(true);
    });
    window.addEventListener('popstate', () => {
      select(new URLSearchParams(location.search).get('task') || '', false);
      scrollToSelected();
    });

    let timer = null;
    async function load() {
      try {
        const data = await getData(apiUrl);
        build(data);
        render();
        showMessage('');
        if (data.run.status === 'running') {
          setLive('live · refreshed ' + clock());
          timer = setTimeout(load, POLL_MS);
        } else {
          setLive('');
        }
      } catch (error) {
        showMessage(error.status === 404 ? 'No run ' + runId + ' in this store.' : error.message,
          true);
        if (error.status !== 404) timer = setTimeout(load, POLL_MS * 3);
      } finally {
        document.body.dataset.ready = '1';
      }
    }
    load();
    window.addEventListener('pagehide', () => clearTimeout(timer));
  }

  function start() {
    const page = document.body.dataset.page;
    if (page === 'runs') runsPage();
    else if (page === 'run') runPage();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
