#!/usr/bin/env node
// Mock of the WhatsApp Business Cloud API send endpoint, for tests.
//
//   node mock_cloud_api.js [--host 127.0.0.1] [--port 0] [--no-record]
//                          [--latency MS] [--port-file PATH]
//                          [--max-records N] [--strict]
//                          [--keep-alive-timeout MS] [--received PATH]
//                          [--tls-cert PEM --tls-key PEM [--tls-port 0]]
//
// Implements POST /{version}/{phone_number_id}/messages and .../media
// (multipart uploads, answered with a media id), plus a control
// API under /_mock/ on the same port. See README.md next to this file.
// Node standard library only.
'use strict';

const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { performance } = require('node:perf_hooks');

const USAGE =
  'usage: node mock_cloud_api.js [--host 127.0.0.1] [--port 0] [--no-record]\n' +
  '                              [--latency MS] [--port-file PATH]\n' +
  '                              [--max-records N] [--strict]\n' +
  '                              [--keep-alive-timeout MS] [--received PATH]\n' +
  '                              [--tls-cert PEM --tls-key PEM [--tls-port 0]]\n';

// ---------------------------------------------------------------- CLI

function die(msg) {
  process.stderr.write('mock_cloud_api: ' + msg + '\n');
  process.exit(2);
}

function parseNonNegNumber(name, v) {
  const n = Number(v);
  if (v === undefined || v === '' || !Number.isFinite(n) || n < 0) die(`${name} needs a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}

function parseArgs(argv) {
  const o = {
    host: '127.0.0.1', port: 0, record: true, latency: 0, portFile: null, maxRecords: 0, strict: false,
    keepAliveTimeout: 65000, tlsCert: null, tlsKey: null, tlsPort: 0, received: null,
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let val;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { val = a.slice(eq + 1); a = a.slice(0, eq); }
    const next = () => (val !== undefined ? val : argv[++i]);
    switch (a) {
      case '--host': o.host = next(); break;
      case '--port': {
        const p = next();
        if (!/^\d+$/.test(p || '') || Number(p) > 65535) die(`--port needs 0..65535, got ${JSON.stringify(p)}`);
        o.port = Number(p);
        break;
      }
      case '--no-record': o.record = false; break;
      case '--latency': o.latency = parseNonNegNumber('--latency', next()); break;
      case '--port-file': o.portFile = next(); if (!o.portFile) die('--port-file needs a path'); break;
      case '--max-records': o.maxRecords = Math.floor(parseNonNegNumber('--max-records', next())); break;
      case '--strict': o.strict = true; break;
      case '--keep-alive-timeout': o.keepAliveTimeout = parseNonNegNumber('--keep-alive-timeout', next()); break;
      case '--received': o.received = next(); if (!o.received) die('--received needs a path'); break;
      case '--tls-cert': o.tlsCert = next(); if (!o.tlsCert) die('--tls-cert needs a path'); break;
      case '--tls-key': o.tlsKey = next(); if (!o.tlsKey) die('--tls-key needs a path'); break;
      case '--tls-port': {
        const p = next();
        if (!/^\d+$/.test(p || '') || Number(p) > 65535) die(`--tls-port needs 0..65535, got ${JSON.stringify(p)}`);
        o.tlsPort = Number(p);
        break;
      }
      case '-h': case '--help': process.stdout.write(USAGE); process.exit(0); break;
      default: die(`unknown argument ${JSON.stringify(argv[i])}\n${USAGE}`);
    }
  }
  if ((o.tlsCert === null) !== (o.tlsKey === null)) die('--tls-cert and --tls-key go together');
  return o;
}

// Only loopback addresses: this mock must never be reachable from elsewhere.
function loopbackHost(h) {
  if (h === undefined || h === null || h === '') return null;
  if (h === 'localhost') return '127.0.0.1';
  const bare = h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
  if (net.isIPv4(bare)) return bare.split('.')[0] === '127' ? bare : null;
  if (net.isIPv6(bare)) {
    const l = bare.toLowerCase();
    if (l === '::1' || /^0{0,4}(:0{0,4}){6}:0{0,3}1$/.test(l)) return bare;
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(l);
    if (m && net.isIPv4(m[1]) && m[1].split('.')[0] === '127') return bare;
  }
  return null;
}

const opts = parseArgs(process.argv.slice(2));
const HOST = loopbackHost(opts.host);
if (!HOST) die(`refusing --host ${JSON.stringify(opts.host)}: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed`);

// ---------------------------------------------------------------- Meta errors

// code -> [http status, title, details]
const META_ERRORS = new Map([
  [130429, [429, 'Rate limit hit', 'Cloud API message throughput has been reached.']],
  [131056, [429, '(Business Account, Consumer Account) pair rate limit hit',
    'Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.']],
  [131026, [400, 'Message undeliverable', 'Message could not be delivered to the recipient.']],
  [131047, [400, 'Re-engagement message',
    'Message failed to send because more than 24 hours have passed since the customer last replied to this number.']],
  [131049, [400, 'This message was not delivered to maintain healthy ecosystem engagement.',
    'In order to maintain healthy ecosystem engagement, the message failed to be delivered.']],
  [132001, [404, 'Template name does not exist in the translation',
    'The template does not exist in the specified language or has not been approved.']],
  [190, [401, 'Invalid OAuth access token', 'The access token has expired or could not be parsed.']],
  [0, [401, 'AuthException', 'We were unable to authenticate the app user.']],
  [131000, [500, 'Something went wrong', 'Message failed to send due to an unknown error.']],
  [131016, [503, 'Service unavailable', 'A service is temporarily unavailable.']],
  [80007, [429, 'Rate limit issues', 'The WhatsApp Business Account has reached its rate limit.']],
  [4, [429, 'Application request limit reached', 'The app has reached its API call rate limit.']],
  [131050, [400, 'User has stopped marketing messages',
    'Unable to deliver the marketing message because the user chose to stop receiving marketing messages from this business.']],
  [100, [400, 'Invalid parameter', 'A parameter is invalid, unsupported or misspelled.']],
  [131008, [400, 'Required parameter is missing', 'A required parameter is missing.']],
]);
const META_SUBCODES = new Map([[130429, 2494055]]);

function fbtraceId() {
  return crypto.randomBytes(18).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
}

// Returns {status, body(object)} for a Meta error code.
function metaError(code, details, subcode) {
  const known = META_ERRORS.get(code);
  const status = known ? known[0] : 400;
  const title = known ? known[1] : `Mock error ${code}`;
  const err = {
    message: `(#${code}) ${title}`,
    type: 'OAuthException',
    code,
    error_data: { messaging_product: 'whatsapp', details: details != null ? String(details) : (known ? known[2] : `Mock error ${code}`) },
  };
  const sub = subcode !== undefined ? subcode : META_SUBCODES.get(code);
  if (sub !== undefined && sub !== null) err.error_subcode = sub;
  err.fbtrace_id = fbtraceId();
  return { status, body: { error: err } };
}

// Body for a rule that gives only an error "status": code 2 for 5xx, 100 otherwise.
function genericErrorBody(status) {
  const code = status >= 500 ? 2 : 100;
  return {
    error: {
      message: `(#${code}) Mock HTTP ${status}`,
      type: 'OAuthException',
      code,
      error_data: { messaging_product: 'whatsapp', details: `Mock HTTP ${status}` },
      fbtrace_id: fbtraceId(),
    },
  };
}

// ---------------------------------------------------------------- state

const MALFORMED_BODY = '{"messages":[{"id":';
const VERSION_RE = /^v\d+(\.\d+)?$/;

let wamidCounter = 0; // never reset: message ids stay unique for the process lifetime
let seq = 0; // never reset: "since" stays meaningful across /_mock/reset

const state = {
  records: [],
  total: 0, // every request outside /_mock/
  messages: 0, // POST /{version}/{phone_number_id}/messages
  noCallback: 0, // message posts without biz_opaque_callback_data
  byCallback: new Map(),
  byStatus: new Map(),
  rules: [],
  ruleSeq: 0,
  latency: opts.latency,
  hung: new Set(),
};

function resetState() {
  state.records = [];
  state.total = 0;
  state.messages = 0;
  state.noCallback = 0;
  state.byCallback = new Map();
  state.byStatus = new Map();
  state.rules = [];
  state.latency = opts.latency;
  for (const res of state.hung) res.destroy();
  state.hung.clear();
}

// ---------------------------------------------------------------- rules

const MATCH_KEYS = new Set(['to', 'callback', 'phone_number_id', 'version', 'type', 'any']);
const ACTION_KEYS = new Set(['latency_ms', 'status', 'body', 'meta_error', 'retry_after', 'reset', 'hang',
  'malformed', 'headers', 'content_type', 'details', 'error_subcode', 'message_status', 'body_bytes', 'chunked']);
const RULE_KEYS = new Set(['match', 'times', 'action', 'name']);

function isObj(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }

function validateRule(r, i) {
  const where = `rule[${i}]`;
  if (!isObj(r)) throw new Error(`${where}: must be an object`);
  for (const k of Object.keys(r)) if (!RULE_KEYS.has(k)) throw new Error(`${where}: unknown key "${k}"`);
  const m = r.match === undefined ? {} : r.match;
  if (!isObj(m)) throw new Error(`${where}.match: must be an object`);
  for (const k of Object.keys(m)) if (!MATCH_KEYS.has(k)) throw new Error(`${where}.match: unknown key "${k}"`);
  if ('any' in m && typeof m.any !== 'boolean') throw new Error(`${where}.match.any: must be a boolean`);
  if (r.times !== undefined && r.times !== null && !(Number.isInteger(r.times) && r.times >= 0)) {
    throw new Error(`${where}.times: must be a non-negative integer`);
  }
  const a = r.action === undefined ? {} : r.action;
  if (!isObj(a)) throw new Error(`${where}.action: must be an object`);
  for (const k of Object.keys(a)) if (!ACTION_KEYS.has(k)) throw new Error(`${where}.action: unknown key "${k}"`);
  const nonNeg = (k) => {
    if (a[k] !== undefined && !(typeof a[k] === 'number' && Number.isFinite(a[k]) && a[k] >= 0)) {
      throw new Error(`${where}.action.${k}: must be a non-negative number`);
    }
  };
  nonNeg('latency_ms');
  nonNeg('retry_after');
  if (a.body_bytes !== undefined && !(Number.isSafeInteger(a.body_bytes) && a.body_bytes >= 0)) {
    throw new Error(`${where}.action.body_bytes: must be a non-negative integer`);
  }
  if (a.status !== undefined && !(Number.isInteger(a.status) && a.status >= 100 && a.status <= 599)) {
    throw new Error(`${where}.action.status: must be an integer 100..599`);
  }
  if (a.meta_error !== undefined && !Number.isInteger(a.meta_error)) throw new Error(`${where}.action.meta_error: must be an integer`);
  if (a.headers !== undefined && !isObj(a.headers)) throw new Error(`${where}.action.headers: must be an object`);
  if (a.content_type !== undefined && typeof a.content_type !== 'string') throw new Error(`${where}.action.content_type: must be a string`);
  for (const k of ['reset', 'hang', 'malformed', 'chunked']) {
    if (a[k] !== undefined && typeof a[k] !== 'boolean') throw new Error(`${where}.action.${k}: must be a boolean`);
  }
  return {
    id: 0, // assigned once the whole batch is valid
    name: r.name === undefined ? null : r.name,
    match: m,
    times: r.times === undefined ? null : r.times,
    remaining: r.times === undefined || r.times === null ? null : r.times,
    hits: 0,
    action: a,
  };
}

// Rule value vs request value; a rule value may be a list of alternatives.
// Phone numbers also match when their digits are equal ("+52 1..." vs "521...").
function valueMatches(want, got, phone) {
  if (Array.isArray(want)) return want.some((w) => valueMatches(w, got, phone));
  if (got === null || got === undefined) return want === null;
  if (want === null) return false;
  const w = String(want);
  const g = typeof got === 'string' ? got : (typeof got === 'object' ? JSON.stringify(got) : String(got));
  if (w === g) return true;
  if (phone) {
    const wd = w.replace(/\D/g, '');
    return wd !== '' && wd === g.replace(/\D/g, '');
  }
  return false;
}

function ruleMatches(rule, ctx) {
  const m = rule.match;
  if (m.any === false) return false;
  if ('to' in m && !valueMatches(m.to, ctx.to, true)) return false;
  if ('callback' in m && !valueMatches(m.callback, ctx.callback, false)) return false;
  if ('phone_number_id' in m && !valueMatches(m.phone_number_id, ctx.phone_number_id, false)) return false;
  if ('version' in m && !valueMatches(m.version, ctx.version, false)) return false;
  if ('type' in m && !valueMatches(m.type, ctx.json && typeof ctx.json === 'object' ? ctx.json.type : null, false)) return false;
  return true;
}

function findRule(ctx) {
  const rules = state.rules;
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (r.remaining !== null && r.remaining <= 0) continue;
    if (!ruleMatches(r, ctx)) continue;
    if (r.remaining !== null) r.remaining--;
    r.hits++;
    return r;
  }
  return null;
}

// ---------------------------------------------------------------- responses

function successBody(to, messageId, messageStatus) {
  const input = to === undefined ? null : to;
  const waId = typeof input === 'string' ? (input.charCodeAt(0) === 43 ? input.slice(1) : input) : input;
  const msg = { id: messageId };
  if (messageStatus !== undefined) msg.message_status = messageStatus;
  return JSON.stringify({ messaging_product: 'whatsapp', contacts: [{ input, wa_id: waId }], messages: [msg] });
}

function sendJson(res, status, obj, extraHeaders) {
  const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
  const h = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) };
  if (extraHeaders) Object.assign(h, extraHeaders);
  res.writeHead(status, h);
  res.end(body);
}

// Streams a large array as JSON in batches, so no single huge string is built.
function sendJsonArray(res, arr) {
  if (arr.length <= 1000) return sendJson(res, 200, arr);
  res.writeHead(200, { 'Content-Type': 'application/json' });
  let i = 0;
  const pump = () => {
    while (i < arr.length) {
      const end = Math.min(i + 1000, arr.length);
      let chunk = i === 0 ? '[' : ',';
      chunk += JSON.stringify(arr.slice(i, end)).slice(1, -1);
      i = end;
      if (i === arr.length) chunk += ']';
      if (!res.write(chunk)) { res.once('drain', pump); return; }
    }
    res.end();
  };
  res.on('close', () => { i = arr.length + 1; });
  pump();
}

function bump(map, key) { map.set(key, (map.get(key) || 0) + 1); }

// Decides the answer to a POST .../messages. Returns
// {kind:'respond'|'reset'|'hang', latency, status, headers, body, messageId, rule}.
function decide(ctx) {
  const rule = state.rules.length ? findRule(ctx) : null;
  const a = rule ? rule.action : null;
  if (!a) {
    const messageId = 'wamid.MOCK' + (++wamidCounter);
    return {
      kind: 'respond', latency: state.latency, status: 200, headers: null,
      body: successBody(ctx.to, messageId), messageId, rule: null,
    };
  }
  const latency = a.latency_ms !== undefined ? a.latency_ms : state.latency;
  if (a.reset) return { kind: 'reset', latency, rule };
  if (a.hang) return { kind: 'hang', latency, rule };

  let status;
  let body;
  let messageId = null;
  if (a.malformed) {
    status = a.status !== undefined ? a.status : 200;
    body = a.body !== undefined ? (typeof a.body === 'string' ? a.body : JSON.stringify(a.body)) : MALFORMED_BODY;
  } else if (a.meta_error !== undefined) {
    const me = metaError(a.meta_error, a.details, a.error_subcode);
    status = a.status !== undefined ? a.status : me.status;
    body = a.body !== undefined ? (typeof a.body === 'string' ? a.body : JSON.stringify(a.body)) : JSON.stringify(me.body);
  } else if (a.body !== undefined) {
    status = a.status !== undefined ? a.status : 200;
    body = typeof a.body === 'string' ? a.body : JSON.stringify(a.body);
  } else if (a.status !== undefined && a.status >= 300) {
    status = a.status;
    body = JSON.stringify(genericErrorBody(status));
  } else {
    status = a.status !== undefined ? a.status : 200;
    messageId = 'wamid.MOCK' + (++wamidCounter);
    body = successBody(ctx.to, messageId, a.message_status);
  }
  const headers = {};
  if (a.content_type !== undefined) headers['Content-Type'] = a.content_type;
  if (a.retry_after !== undefined) headers['Retry-After'] = String(a.retry_after);
  if (a.headers) for (const k of Object.keys(a.headers)) headers[k] = String(a.headers[k]);
  return {
    kind: 'respond', latency, status, headers, body, messageId, rule,
    bodyBytes: a.body_bytes, chunked: a.chunked === true,
  };
}

// The answer's JSON object padded with a "padding" member to exactly n
// bytes (or left alone when it is already that long): [prefix, pad length,
// suffix].  Padding is streamed, so a body of gigabytes costs no memory.
function paddedParts(body, n) {
  const len = Buffer.byteLength(body);
  const t = body.trimEnd();
  if (n <= len || !t.endsWith('}')) return [body, 0, ''];
  const open = t.slice(0, -1).trimEnd();
  const prefix = open + (open.endsWith('{') ? '' : ',') + '"padding":"';
  const suffix = '"}';
  const pad = n - Buffer.byteLength(prefix) - suffix.length;
  return pad < 0 ? [body, 0, ''] : [prefix, pad, suffix];
}

const PAD_CHUNK = Buffer.alloc(64 * 1024, 'x');

// Writes a body_bytes answer, honoring backpressure; the record says whether
// the client read it all (response_complete true) or closed first (false).
function streamPadded(res, d, rec) {
  const [prefix, pad, suffix] = paddedParts(d.body, d.bodyBytes);
  const total = Buffer.byteLength(prefix) + pad + Buffer.byteLength(suffix);
  if (rec) {
    rec.response_bytes = total;
    res.on('finish', () => { rec.response_complete = true; });
    res.on('close', () => { if (rec.response_complete !== true) rec.response_complete = false; });
  }
  const h = { 'Content-Type': 'application/json' };
  if (!d.chunked) h['Content-Length'] = total;
  if (d.headers) {
    for (const k of Object.keys(d.headers)) {
      if (k.toLowerCase() === 'content-type') h['Content-Type'] = d.headers[k];
      else h[k] = d.headers[k];
    }
  }
  res.writeHead(d.status, h);
  let left = pad;
  let closed = false;
  res.on('close', () => { closed = true; });
  const pump = () => {
    while (!closed && left > 0) {
      const n = Math.min(left, PAD_CHUNK.length);
      left -= n;
      if (!res.write(n === PAD_CHUNK.length ? PAD_CHUNK : PAD_CHUNK.subarray(0, n))) {
        res.once('drain', pump);
        return;
      }
    }
    if (!closed) res.end(suffix);
  };
  if (!res.write(prefix)) res.once('drain', pump);
  else pump();
}

function writeDecision(req, res, d, rec) {
  if (res.destroyed || res.writableEnded) return;
  if (d.kind === 'reset') {
    const s = req.socket;
    if (typeof s.resetAndDestroy === 'function') s.resetAndDestroy();
    else s.destroy();
    return;
  }
  if (d.kind === 'hang') {
    state.hung.add(res);
    res.on('close', () => state.hung.delete(res));
    return;
  }
  if (d.bodyBytes !== undefined) return streamPadded(res, d, rec);
  const h = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(d.body) };
  if (d.chunked) delete h['Content-Length'];
  if (d.headers) {
    for (const k of Object.keys(d.headers)) {
      if (k.toLowerCase() === 'content-type') h['Content-Type'] = d.headers[k];
      else h[k] = d.headers[k];
    }
  }
  res.writeHead(d.status, h);
  res.end(d.body);
}

// Waits at least ms after `start` (performance.now()) before calling fn.
function after(ms, start, fn) {
  const tick = () => {
    const left = ms - (performance.now() - start);
    if (left > 0) setTimeout(tick, Math.ceil(left));
    else fn();
  };
  setTimeout(tick, Math.ceil(ms));
}

// ---------------------------------------------------------------- API side

function readBody(req, cb) {
  const chunks = [];
  let len = 0;
  req.on('data', (c) => { chunks.push(c); len += c.length; });
  req.on('end', () => cb(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, len)));
}

function splitApiPath(url) {
  const q = url.indexOf('?');
  const p = q >= 0 ? url.slice(0, q) : url;
  const segs = p.split('/');
  let version = null;
  let pnid = null;
  let isMessages = false;
  let isMedia = false;
  if (segs.length >= 2 && VERSION_RE.test(segs[1])) {
    version = segs[1];
    if (segs.length >= 3 && segs[2] !== '') {
      try { pnid = decodeURIComponent(segs[2]); } catch { pnid = segs[2]; }
    }
    isMessages = pnid !== null && segs[3] === 'messages' &&
      (segs.length === 4 || (segs.length === 5 && segs[4] === ''));
    isMedia = pnid !== null && segs[3] === 'media' && segs.length === 4;
  }
  return { version, pnid, isMessages, isMedia };
}

// Parses a multipart/form-data body (POST /{phone_number_id}/media) into
// its parts: { name, filename, type, data (Buffer) }; null if malformed.
function parseMultipart(contentType, buf) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType || '');
  if (!m) return null;
  const boundary = Buffer.from('--' + (m[1] || m[2]).trim());
  const parts = [];
  let pos = buf.indexOf(boundary);
  if (pos < 0) return null;
  for (;;) {
    pos += boundary.length;
    if (buf.slice(pos, pos + 2).toString() === '--') return parts;
    pos += 2; // CRLF
    const headEnd = buf.indexOf('\r\n\r\n', pos);
    if (headEnd < 0) return null;
    const head = buf.slice(pos, headEnd).toString('utf8');
    const next = buf.indexOf(boundary, headEnd + 4);
    if (next < 0) return null;
    const data = buf.slice(headEnd + 4, next - 2); // CRLF before the boundary
    const name = /name="([^"]*)"/i.exec(head);
    const filename = /filename="([^"]*)"/i.exec(head);
    const type = /content-type:\s*([^\r\n]+)/i.exec(head);
    parts.push({ name: name ? name[1] : null, filename: filename ? filename[1] : null,
      type: type ? type[1].trim() : null, data });
    pos = next;
  }
}

// POST /{version}/{phone_number_id}/media: records what was uploaded and
// answers {"id": "<media id>"}, as Meta does.
function mediaDecision(req, buf, rec) {
  const parts = parseMultipart(req.headers['content-type'], buf);
  const field = (n) => { const p = parts && parts.find((x) => x.name === n && x.filename === null); return p ? p.data.toString('utf8') : null; };
  const file = parts && parts.find((x) => x.name === 'file');
  if (!file || field('messaging_product') !== 'whatsapp') {
    const me = metaError(100, 'Param file and messaging_product "whatsapp" are required (multipart/form-data)');
    return { kind: 'respond', latency: 0, status: 400, headers: null, body: JSON.stringify(me.body), messageId: null, rule: null };
  }
  const id = String(1000000000000000 + crypto.randomInt(0, 999999999999));
  state.media = (state.media || 0) + 1;
  if (rec) {
    rec.body = '';
    rec.media = { id, filename: file.filename, mime: file.type, type: field('type'),
      messaging_product: field('messaging_product'), size: file.data.length,
      sha256: crypto.createHash('sha256').update(file.data).digest('hex') };
  }
  return { kind: 'respond', latency: 0, status: 200, headers: null, body: JSON.stringify({ id }), messageId: null, rule: null };
}

// --received PATH: one JSON line per /messages POST, {"to": ..., "json": ...},
// appended at once and kept whatever /_mock/reset, --no-record or
// --max-records do, so that a test run can list every number and text the
// API was given (test/log_scan.pl looks for them in the server logs).
function noteReceived(to, json) {
  try {
    fs.appendFileSync(opts.received, JSON.stringify({ to, json }) + '\n');
  } catch (e) {
    process.stderr.write(`mock_cloud_api: could not append to ${opts.received}: ${e.message}\n`);
  }
}

function handleApi(req, res, t) {
  readBody(req, (buf) => {
    const arrived = performance.now();
    const { version, pnid, isMessages, isMedia } = splitApiPath(req.url);
    const body = buf.length && !isMedia ? buf.toString('utf8') : '';
    let json = null;
    if (body.length) { try { json = JSON.parse(body); } catch { json = null; } }
    const isObjBody = json !== null && typeof json === 'object' && !Array.isArray(json);
    const callback = isObjBody && json.biz_opaque_callback_data !== undefined ? json.biz_opaque_callback_data : null;
    const to = isObjBody && json.to !== undefined ? json.to : null;

    state.total++;
    seq++;
    if (opts.received && isMessages && isObjBody) noteReceived(to, json);
    let rec = null;
    if (opts.record) {
      rec = {
        seq, t, method: req.method, path: req.url, version, phone_number_id: pnid,
        headers: req.headers, body, json, callback, to,
        response_status: null, outcome: null, rule: null, message_id: null,
        response_bytes: null, response_complete: null,
      };
      state.records.push(rec);
      if (opts.maxRecords > 0 && state.records.length > opts.maxRecords) {
        state.records.splice(0, state.records.length - opts.maxRecords);
      }
    }

    let d;
    if (req.method !== 'POST') {
      const me = metaError(100, `Unsupported method ${req.method} on ${req.url.split('?')[0]}; the mock implements POST /{version}/{phone_number_id}/messages only`);
      me.body.error.message = `(#100) Unsupported method ${req.method}`;
      d = { kind: 'respond', latency: 0, status: 405, headers: { Allow: 'POST' }, body: JSON.stringify(me.body), messageId: null, rule: null };
    } else if (isMedia) {
      d = mediaDecision(req, buf, rec);
    } else if (!isMessages) {
      const me = metaError(100, `Unsupported post request: ${req.url.split('?')[0]}; the mock implements POST /{version}/{phone_number_id}/messages only`);
      d = { kind: 'respond', latency: 0, status: 400, headers: null, body: JSON.stringify(me.body), messageId: null, rule: null };
    } else {
      state.messages++;
      if (callback === null) state.noCallback++;
      else bump(state.byCallback, typeof callback === 'string' ? callback : JSON.stringify(callback));
      if (opts.strict && (!isObjBody || json.messaging_product !== 'whatsapp' || (json.to == null && json.recipient == null))) {
        const me = metaError(100, 'Strict mode: body must be a JSON object with messaging_product "whatsapp" and "to"');
        d = { kind: 'respond', latency: state.latency, status: 400, headers: null, body: JSON.stringify(me.body), messageId: null, rule: null };
      } else {
        d = decide({ to, callback, phone_number_id: pnid, version, json });
      }
    }

    const status = d.kind === 'respond' ? d.status : null;
    bump(state.byStatus, d.kind === 'respond' ? String(d.status) : d.kind);
    if (rec) {
      rec.response_status = status;
      rec.outcome = d.kind;
      rec.rule = d.rule ? d.rule.id : null;
      rec.message_id = d.messageId || null;
    }
    if (d.latency > 0 && d.kind !== 'hang') after(d.latency, arrived, () => writeDecision(req, res, d, rec));
    else writeDecision(req, res, d, rec);
  });
}

// ---------------------------------------------------------------- control API

function controlError(res, status, msg) { sendJson(res, status, { error: msg }); }

function parseJsonBody(buf) {
  const s = buf.toString('utf8');
  if (s.trim() === '') return undefined;
  return JSON.parse(s);
}

function lowerBound(records, since) {
  let lo = 0;
  let hi = records.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (records[mid].seq <= since) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function countsObject(url) {
  const cb = url.searchParams.get('callback');
  if (cb !== null) return { callback: cb, count: state.byCallback.get(cb) || 0 };
  let maxPer = 0;
  let dup = 0;
  for (const v of state.byCallback.values()) { if (v > maxPer) maxPer = v; if (v > 1) dup++; }
  return {
    total: state.total,
    messages: state.messages,
    no_callback: state.noCallback,
    distinct_callbacks: state.byCallback.size,
    duplicated_callbacks: dup,
    max_per_callback: maxPer,
    by_status: Object.fromEntries(state.byStatus),
    last_seq: seq,
    by_callback: Object.fromEntries(state.byCallback),
  };
}

function handleControl(req, res) {
  readBody(req, (buf) => {
    let url;
    try { url = new URL(req.url, 'http://127.0.0.1'); } catch { return controlError(res, 400, 'bad url'); }
    const p = url.pathname.replace(/\/+$/, '');
    const m = req.method;
    let body;
    try { body = m === 'POST' || m === 'PUT' ? parseJsonBody(buf) : undefined; } catch (e) {
      return controlError(res, 400, 'control body is not JSON: ' + e.message);
    }
    switch (p) {
      case '/_mock/health':
        if (m !== 'GET' && m !== 'HEAD') break;
        return sendJson(res, 200, '{"ok":true}');
      case '/_mock/config':
        if (m !== 'GET') break;
        return sendJson(res, 200, {
          host: HOST, port: server.address().port, record: opts.record, latency_ms: state.latency,
          cli_latency_ms: opts.latency, max_records: opts.maxRecords, strict: opts.strict, pid: process.pid,
          keep_alive_timeout_ms: opts.keepAliveTimeout,
          tls_port: tlsServer && tlsServer.listening ? tlsServer.address().port : null,
        });
      case '/_mock/requests': {
        if (m !== 'GET') break;
        const sinceS = url.searchParams.get('since');
        const since = sinceS === null || sinceS === '' ? 0 : Number(sinceS);
        if (!Number.isFinite(since)) return controlError(res, 400, 'since must be a number');
        const limitS = url.searchParams.get('limit');
        const limit = limitS === null || limitS === '' ? Infinity : Number(limitS);
        if (!(limit >= 0)) return controlError(res, 400, 'limit must be a non-negative number');
        const cb = url.searchParams.get('callback');
        const to = url.searchParams.get('to');
        const out = [];
        const recs = state.records;
        for (let i = lowerBound(recs, since); i < recs.length && out.length < limit; i++) {
          const r = recs[i];
          if (cb !== null && !valueMatches(cb, r.callback, false)) continue;
          if (to !== null && !valueMatches(to, r.to, true)) continue;
          out.push(r);
        }
        return sendJsonArray(res, out);
      }
      case '/_mock/counts':
        if (m !== 'GET') break;
        return sendJson(res, 200, countsObject(url));
      case '/_mock/cpu': {
        if (m !== 'GET') break;
        const cu = process.cpuUsage();
        const mu = process.memoryUsage();
        return sendJson(res, 200, {
          user_us: cu.user, system_us: cu.system, rss: mu.rss, heap_used: mu.heapUsed, uptime_s: process.uptime(),
        });
      }
      case '/_mock/reset':
        if (m !== 'POST') break;
        resetState();
        return sendJson(res, 200, { ok: true, last_seq: seq });
      case '/_mock/latency':
        if (m === 'GET') return sendJson(res, 200, { ms: state.latency });
        if (m !== 'POST') break;
        if (!isObj(body) || typeof body.ms !== 'number' || !Number.isFinite(body.ms) || body.ms < 0) {
          return controlError(res, 400, 'body must be {"ms": <non-negative number>}');
        }
        state.latency = body.ms;
        return sendJson(res, 200, { ok: true, ms: state.latency });
      case '/_mock/rules':
        if (m === 'GET') return sendJson(res, 200, state.rules);
        if (m === 'DELETE') { state.rules = []; return sendJson(res, 200, { ok: true }); }
        if (m !== 'POST') break;
        {
          if (body === undefined) return controlError(res, 400, 'body must be a rule object or an array of rules');
          const list = Array.isArray(body) ? body : [body];
          let added;
          try { added = list.map(validateRule); } catch (e) { return controlError(res, 400, e.message); }
          for (const r of added) r.id = ++state.ruleSeq;
          state.rules.push(...added);
          return sendJson(res, 200, { ok: true, ids: added.map((r) => r.id), count: state.rules.length });
        }
      case '/_mock/connections':
        if (m !== 'GET') break;
        return sendJson(res, 200, { open: openConnections(req.socket) });
      case '/_mock/close_connections': {
        if (m !== 'POST') break;
        // Answer first, then close: this connection is spared.
        const n = closeConnections(req.socket);
        return sendJson(res, 200, { ok: true, closed: n });
      }
      case '/_mock/release': {
        if (m !== 'POST') break;
        const n = state.hung.size;
        for (const r of state.hung) r.destroy();
        state.hung.clear();
        return sendJson(res, 200, { ok: true, released: n });
      }
      default:
        return controlError(res, 404, `unknown control endpoint ${url.pathname}`);
    }
    return controlError(res, 405, `method ${m} not allowed on ${url.pathname}`);
  });
}

// ---------------------------------------------------------------- server

function handleRequest(req, res) {
  const t = performance.timeOrigin + performance.now();
  const u = req.url;
  if (u.charCodeAt(1) === 95 /* _ */ && (u.startsWith('/_mock/') || u === '/_mock' || u.startsWith('/_mock?'))) {
    handleControl(req, res);
  } else {
    handleApi(req, res, t);
  }
}

const server = http.createServer({ noDelay: true, keepAlive: true }, handleRequest);

// With --tls-cert and --tls-key, the same API (and control API) over
// HTTPS (HTTP/1.1) on a second port, shown in /_mock/config as tls_port.
let tlsServer = null;
if (opts.tlsCert) {
  let key;
  let cert;
  try {
    cert = fs.readFileSync(opts.tlsCert);
    key = fs.readFileSync(opts.tlsKey);
  } catch (e) {
    die(`cannot read the TLS certificate or key: ${e.message}`);
  }
  tlsServer = https.createServer({ cert, key, noDelay: true, keepAlive: true }, handleRequest);
}
// Every TCP connection, so that tests can count and close them.
const sockets = new Set();
function trackSocket(s) {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
}
server.on('connection', trackSocket);
if (tlsServer) tlsServer.on('connection', trackSocket);

function openConnections(except) {
  return sockets.size - (sockets.has(except) ? 1 : 0);
}

// Closes every connection but `except` (FIN, like a server that drops its
// idle keep-alive connections); requests held by "hang" go too.
function closeConnections(except) {
  let n = 0;
  for (const s of sockets) {
    if (s === except) continue;
    s.destroy();
    n++;
  }
  state.hung.clear();
  return n;
}

for (const srv of tlsServer ? [server, tlsServer] : [server]) {
  srv.keepAliveTimeout = opts.keepAliveTimeout;
  srv.headersTimeout = 66000;
  srv.requestTimeout = 0;
  srv.timeout = 0;
  srv.maxRequestsPerSocket = 0;
}
// no server.maxConnections cap

for (const srv of tlsServer ? [server, tlsServer] : [server]) {
  srv.on('clientError', (err, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) { socket.destroy(); return; }
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });
  srv.on('error', (err) => {
    process.stderr.write(`mock_cloud_api: ${err.message}\n`);
    process.exit(1);
  });
}

// The port file is written once every listener is up.
let announced = false;
function listening() {
  if (announced || !server.listening || (tlsServer && !tlsServer.listening)) return;
  announced = true;
  const port = server.address().port;
  if (opts.portFile) {
    const tmp = `${opts.portFile}.tmp.${process.pid}`;
    fs.writeFileSync(tmp, `${port}\n`);
    fs.renameSync(tmp, opts.portFile);
  }
  process.stdout.write(`listening ${port}\n`);
  if (tlsServer) process.stdout.write(`listening-tls ${tlsServer.address().port}\n`);
}
server.listen({ host: HOST, port: opts.port }, listening);
if (tlsServer) tlsServer.listen({ host: HOST, port: opts.tlsPort }, listening);

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  for (const srv of tlsServer ? [server, tlsServer] : [server]) {
    srv.close();
    if (typeof srv.closeAllConnections === 'function') srv.closeAllConnections();
  }
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
