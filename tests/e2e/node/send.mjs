#!/usr/bin/env node
// Drive the real @segment/analytics-node SDK, unchanged, against a Headwater server.
//
//   node send.mjs --host http://127.0.0.1:PORT --write-key KEY --count N
//                 [--batch-size M] [--path /v1/batch] [--max-retries R]
//                 [--timeout-ms T] [--sdk-ids] [--wire]
//
// Sends N calls cycling track/identify/page/screen/group/alias, waits for
// closeAndFlush(), then prints ONE line of JSON to stdout:
//   {"sent":[{"messageId","type"}...], "errors":[...], "requests":[{"status","events"}...]}
// With --wire each request also carries "body": the JSON the SDK posted, as it posted it.
// and exits 1 if any event was not delivered (SDK callback error or no callback).
import { parseArgs } from 'node:util'
import { randomUUID } from 'node:crypto'
import { Analytics } from '@segment/analytics-node'

const { values: opt } = parseArgs({
  options: {
    host: { type: 'string' },
    'write-key': { type: 'string' },
    count: { type: 'string', default: '10' },
    'batch-size': { type: 'string', default: '15' }, // SDK default flushAt
    path: { type: 'string', default: '/v1/batch' },
    'max-retries': { type: 'string', default: '3' }, // SDK default is 10 (backoff up to 60s)
    'timeout-ms': { type: 'string', default: '30000' }, // closeAndFlush timeout
    'sdk-ids': { type: 'boolean', default: false }, // let the SDK assign messageIds
    wire: { type: 'boolean', default: false }, // add each request's body to "requests"
  },
})
if (!opt.host || !opt['write-key']) {
  console.error('usage: node send.mjs --host URL --write-key KEY --count N [--batch-size M] [--path P] [--sdk-ids] [--wire]')
  process.exit(2)
}
const count = Number(opt.count)

const analytics = new Analytics({
  writeKey: opt['write-key'],
  host: opt.host,
  path: opt.path,
  flushAt: Number(opt['batch-size']),
  flushInterval: 500,
  httpRequestTimeout: 10000,
  maxRetries: Number(opt['max-retries']),
})

const requests = []
analytics.on('http_response', (r) => {
  const body = JSON.parse(r.body)
  requests.push({ status: r.status, events: body.batch.length, ...(opt.wire ? { body } : {}) })
})

const run = randomUUID().slice(0, 8)
const sent = []
const errors = []
const pending = new Map() // messageId we asked for (or index) -> type

function call(i) {
  const type = ['track', 'identify', 'page', 'screen', 'group', 'alias'][i % 6]
  const userId = `e2e-${run}-user-${i % 7}`
  const base = opt['sdk-ids'] ? {} : { messageId: `e2e-${run}-${i}` }
  const key = base.messageId ?? `#${i}`
  pending.set(key, type)
  const done = (err, ctx) => {
    pending.delete(key)
    const messageId = ctx?.event?.messageId ?? base.messageId ?? null
    if (err) errors.push({ messageId, type, error: String(err?.message ?? err) })
    else sent.push({ messageId, type })
  }
  const ts = new Date()
  switch (type) {
    case 'track':
      return analytics.track(
        { ...base, userId, event: 'Order Completed', timestamp: ts,
          properties: { orderId: `o-${i}`, revenue: 10.5 + i, currency: 'USD', items: [{ sku: 'a', qty: 2 }] } },
        done)
    case 'identify':
      return analytics.identify(
        { ...base, userId, traits: { email: `user${i}@example.com`, name: `User ${i}`, plan: 'pro' } }, done)
    case 'page':
      return analytics.page(
        { ...base, anonymousId: `e2e-${run}-anon-${i}`, category: 'Docs', name: 'Pricing',
          properties: { url: 'https://example.com/pricing', title: 'Pricing' } }, done)
    case 'screen':
      return analytics.screen({ ...base, userId, name: 'Home', properties: { variant: 'b' } }, done)
    case 'group':
      return analytics.group(
        { ...base, userId, groupId: `e2e-${run}-org-${i % 3}`, traits: { name: 'Acme', employees: 42 } }, done)
    case 'alias':
      return analytics.alias({ ...base, userId, previousId: `e2e-${run}-anon-${i}` }, done)
  }
}

for (let i = 0; i < count; i++) call(i)
await analytics.closeAndFlush({ timeout: Number(opt['timeout-ms']) })
// Callbacks fire >=300ms after dispatch; give stragglers a moment after a timeout.
for (let t = 0; pending.size && t < 20; t++) await new Promise((r) => setTimeout(r, 100))
for (const [key, type] of pending) {
  errors.push({ messageId: key.startsWith('#') ? null : key, type, error: 'no callback (flush timed out?)' })
}

// Exit only once the line is written: stdout to a pipe is asynchronous, and process.exit()
// would cut off a report bigger than the pipe buffer (64 KB).
process.stdout.write(JSON.stringify({ sent, errors, requests }) + '\n', () =>
  process.exit(errors.length ? 1 : 0))
