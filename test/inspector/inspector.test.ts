/**
 * What the framework-free inspector promises beyond what every mount does: options checked at
 * creation, everything escaped, no secret shown, `redact`, `readOnly`, the bulk redeliver of a
 * search, and store failures that never leak. (Mounts: adapters.test.ts; a real browser:
 * test/integration/inspector-browser.test.ts.)
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import pg from 'pg'
import { createMemoryStore, generateSecret } from 'endpoint-callback'
import type { CallbackStore, SenderOptions } from 'endpoint-callback'
import { createInspector } from 'endpoint-callback/inspector'
import type { Inspector, InspectorOptions } from 'endpoint-callback/inspector'
import { createPostgresStore, migratePostgres } from 'endpoint-callback/postgres'
import { createRedisStore } from 'endpoint-callback/redis'
import { seedTasks } from '../support/inspector-seed.ts'
import { createTestTransport } from '../support/sender.ts'
import { DATABASE_URL, REDIS_URL, serviceSkip, serviceTests, uniqueName } from '../support/services.ts'

const ORIGIN = 'http://inspector.test'
const redisSkip = await serviceSkip('redis')

const get = (inspector: Inspector, path: string, headers: Record<string, string> = {}) => inspector(new Request(`${ORIGIN}${path}`, { headers }))

/** Posts `form` after a visit of the page at `from`, with the token its forms carry (the cookie's). */
async function postFrom(inspector: Inspector, from: string, action: string, form: Record<string, string> = {}): Promise<Response> {
  const page = await get(inspector, from)
  const cookie = page.headers.getSetCookie()[0]?.split(';')[0]
  assert.ok(cookie, 'the page set the CSRF cookie')
  const token = cookie.split('=')[1]!
  return inspector(
    new Request(`${ORIGIN}${action}`, {
      method: 'POST',
      headers: { cookie, origin: ORIGIN, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ csrf: token, ...form }).toString(),
    })
  )
}

async function seeded(store: CallbackStore = createMemoryStore(), extra: Partial<SenderOptions> = {}) {
  const transport = createTestTransport((request) =>
    request.url.includes('busy') ? { status: 503 } : request.url.includes('bad') ? { status: 400, body: 'nope' } : { status: 204 }
  )
  const sender: SenderOptions = { store, secret: generateSecret(), transport, retry: { schedule: [60_000], jitter: 0 }, ...extra }
  const ids = await seedTasks(sender, { ok: 'https://ok.example/h', busy: 'https://busy.example/h', bad: 'https://bad.example/h' })
  return { sender, ids }
}

const open = (options: Partial<InspectorOptions> & Pick<InspectorOptions, 'store'>) => createInspector({ public: true, refreshSeconds: 0, ...options })

describe('createInspector', () => {
  test('refuses to exist without authorize or an explicit public: true, and names every bad option', () => {
    const store = createMemoryStore()
    assert.throws(() => createInspector({ store }), /give `authorize\(request\)`/)
    assert.throws(() => createInspector({ store, public: false }), TypeError)
    assert.throws(() => createInspector({ store, public: true, basePath: 'admin' }), /basePath/)
    assert.throws(() => createInspector({ store, public: true, pageSize: 0 }), /pageSize/)
    assert.throws(() => createInspector({ store, authorize: 'yes' as never }), /authorize/)
    const { list: _list, ...withoutList } = store
    assert.throws(() => createInspector({ store: withoutList, public: true }), /list\(\)/)
  })

  test('calls authorize with every request, assets included, and shows nothing when it refuses', async () => {
    const { sender, ids } = await seeded()
    const seen: string[] = []
    const inspector = createInspector({ store: sender.store, authorize: (request) => (seen.push(new URL(request.url).pathname), request.headers.get('x-op') === 'yes') })
    for (const path of ['/', '/tasks', `/tasks/${ids.failed}`, '/assets/inspector.js']) {
      const refused = await get(inspector, path)
      assert.equal(refused.status, 403, path)
      assert.ok(!(await refused.text()).includes(ids.failed))
    }
    assert.equal((await get(inspector, '/', { 'x-op': 'yes' })).status, 200)
    assert.deepEqual(seen, ['/', '/tasks', `/tasks/${ids.failed}`, '/assets/inspector.js', '/'])
  })
})

describe('what the pages show', () => {
  test('text from clients, receivers and stores is escaped on every page, under a strict CSP', async () => {
    const store = createMemoryStore()
    const hostile = '<svg onload="alert(1)">'
    const id = `msg_${randomUUID()}`
    // straight into the store, as a user's own store might hand anything back
    await store.insert({ id, callbackUrl: 'https://evil.example/h', event: hostile, metadata: { x: hostile }, createdAt: new Date() })
    const held = await store.attach(id, { body: JSON.stringify({ type: hostile }) }, { now: new Date(), leaseMs: 60_000 })
    assert.ok(held)
    await store.complete(held, { attempt: 1, startedAt: new Date(), durationMs: 5, error: `ERR_CALLBACK_TIMEOUT: ${hostile}`, responseBody: hostile, outcome: 'failed' }, { status: 'failed', lastError: hostile })
    const inspector = open({ store })
    for (const path of ['/', '/tasks?status=failed', `/tasks/${id}`, `/tasks?event=${encodeURIComponent(hostile)}`, `/tasks?host=${encodeURIComponent(hostile)}`]) {
      const response = await get(inspector, path)
      const body = await response.text()
      assert.ok(!body.includes('<svg onload'), `${path} carries markup from the store`)
      assert.match(response.headers.get('content-security-policy') ?? '', /default-src 'none'; script-src 'self'; style-src 'self'/)
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff')
    }
    assert.match(await (await get(inspector, `/tasks/${id}`)).text(), /&lt;svg onload=&quot;alert\(1\)&quot;&gt;/)
  })

  test('the destinations page says so when the store keeps no destinations, and lists a PostgreSQL store’s', async (t) => {
    const { listDestinations: _listDestinations, ...withoutDestinations } = createMemoryStore()
    const plain = await get(open({ store: withoutDestinations }), '/destinations')
    assert.equal(plain.status, 200)
    assert.match(await plain.text(), /data-destinations="unsupported">This store keeps no destinations/)
    const postgresSkip = await serviceSkip('postgres')
    if (postgresSkip) return t.skip(postgresSkip)
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
    const schema = uniqueName('ec_inspector_dest')
    try {
      await migratePostgres(pool, { schema })
      const store = createPostgresStore({ pool, schema, listen: false })
      const now = new Date()
      await store.setDestination!('https://slow.example', { state: 'throttled', until: new Date(now.getTime() + 120_000), reason: 'HTTP 429: Retry-After asked to wait 120 s', openings: 0 }, now)
      const body = await (await get(open({ store, now: () => now }), '/destinations')).text()
      const until = new Date(now.getTime() + 120_000).toISOString()
      assert.match(body, new RegExp(`<tr data-destination="https://slow.example">.*dest-throttled.*datetime="${until}".*HTTP 429: Retry-After asked to wait 120 s`, 's'))
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      await pool.end()
    }
  })

  test('never shows a task’s own secret, and passes each task through redact before rendering it', async () => {
    const taskSecret = generateSecret()
    const { sender } = await seeded()
    const { createCallbackTask } = await import('endpoint-callback')
    const task = await createCallbackTask({ callbackUrl: 'https://ok.example/h', event: 'report.ready', secret: taskSecret }, sender)
    const redacted: unknown[] = []
    const inspector = open({
      store: sender.store,
      redact: (shown) => {
        redacted.push(shown.secret)
        return { ...shown, metadata: { redacted: true } }
      },
    })
    const body = await (await get(inspector, `/tasks/${task.id}`)).text()
    assert.ok(!body.includes(taskSecret.slice(6)), 'the secret is on the page')
    assert.ok(!body.includes(sender.secret as string), 'the sender’s secret is on the page')
    assert.deepEqual(redacted, ['(hidden)'], 'redact never sees the secret')
    assert.match(body, /&quot;redacted&quot;: true/)
    assert.match(body, /the task’s own secret \(not shown\)/)
  })

  test('readOnly shows no action and refuses every POST, changing nothing', async () => {
    const { sender, ids } = await seeded()
    const inspector = open({ store: sender.store, readOnly: true })
    for (const path of [`/tasks/${ids.failed}`, `/tasks/${ids.retrying}`, '/tasks?status=failed']) {
      assert.doesNotMatch(await (await get(inspector, path)).text(), /method="post"/, path)
    }
    const response = await postFrom(inspector, '/tasks?status=failed', `/tasks/${ids.failed}/redeliver`)
    assert.equal(response.status, 403)
    assert.equal((await sender.store.get(ids.failed))?.status, 'failed')
  })

  test('a store that fails answers 500 without what it said', async () => {
    const store = createMemoryStore()
    const failing: CallbackStore = { ...store, list: async () => Promise.reject(new Error('connect to postgres://admin:hunter2@db failed')) }
    const response = await get(open({ store: failing }), '/tasks?status=failed')
    assert.equal(response.status, 500)
    assert.doesNotMatch(await response.text(), /hunter2/)
  })

  test('a bad search says what is wrong with it (400) rather than failing', async () => {
    const inspector = open({ store: createMemoryStore() })
    const response = await get(inspector, '/tasks?from=yesterday')
    assert.equal(response.status, 400)
    assert.match(await response.text(), /updated from: not a date and time/)
    assert.equal((await inspector(new Request(`${ORIGIN}/tasks`, { method: 'PUT' }))).status, 405)
  })
})

describe('actions', () => {
  test('cancel ends a retrying task; a second cancel says it has ended (409)', async () => {
    const { sender, ids } = await seeded()
    const inspector = open({ store: sender.store })
    const done = await postFrom(inspector, `/tasks/${ids.retrying}`, `/tasks/${ids.retrying}/cancel`)
    assert.equal(done.status, 303)
    assert.equal((await sender.store.get(ids.retrying))?.status, 'cancelled')
    const again = await postFrom(inspector, `/tasks/${ids.retrying}`, `/tasks/${ids.retrying}/cancel`)
    assert.equal(again.status, 409)
    assert.match(await again.text(), /ERR_CALLBACK_TASK_STATE|already ended/)
  })

  test('redeliver every failed task matching the search takes only the tasks of that search', async () => {
    const { sender, ids } = await seeded()
    const { ids: more } = await seeded(sender.store, {})
    const { createCallbackTask, deliver } = await import('endpoint-callback')
    const other = await createCallbackTask({ callbackUrl: 'https://bad-too.example/h', event: 'x' }, sender)
    await deliver(other, {}, { ...sender, retry: { schedule: [] } })
    assert.equal((await sender.store.get(other.id))?.status, 'failed')
    const inspector = open({ store: sender.store })
    const search = '/tasks?status=failed&host=bad.example'
    assert.match(await (await get(inspector, search)).text(), /Redeliver every failed task matching this search/)
    const done = await postFrom(inspector, search, '/actions/redeliver-failed', { status: 'failed', host: 'bad.example' })
    assert.equal(done.status, 303)
    assert.match(done.headers.get('location') ?? '', /notice=redelivered-all&count=2$/)
    assert.equal((await sender.store.get(ids.failed))?.status, 'scheduled')
    assert.equal((await sender.store.get(more.failed))?.status, 'scheduled')
    assert.equal((await sender.store.get(other.id))?.status, 'failed', 'another host’s failed task stays')
  })
})

describe('the overview of a store without summarize', () => {
  test('counts the newest tasks through list, and says so', async () => {
    const { summarize: _summarize, ...store } = createMemoryStore()
    await seeded(store)
    const body = await (await get(open({ store }), '/')).text()
    assert.match(body, /data-status="failed"><div class="label">failed<\/div><div class="value">1</)
    assert.match(body, /data-status="scheduled"><div class="label">scheduled<\/div><div class="value">1</)
    assert.match(body, /Counted among the newest 3 tasks/)
    assert.match(body, /bad\.example/)
  })
})

const overRedis = serviceTests(redisSkip)
describe('the overview over Redis', () => {
  overRedis.test('counts every task, its attempts and the failing hosts in one scan', async () => {
    const client = new Redis(REDIS_URL)
    const prefix = uniqueName('ec_inspector')
    try {
      const store = createRedisStore({ client, prefix, subscribe: false })
      await seeded(store)
      const body = await (await get(open({ store }), '/')).text()
      assert.match(body, /data-status="failed"><div class="label">failed<\/div><div class="value">1</)
      assert.match(body, /data-status="scheduled"><div class="label">scheduled<\/div><div class="value">1</)
      assert.match(body, /data-figure="failed-hour"><div class="label">failed, last hour<\/div><div class="value">2</)
      assert.doesNotMatch(body, /Counted among the newest/)
      assert.match(body, /bad\.example/)
    } finally {
      const keys = await client.keys(`${prefix}:*`)
      if (keys.length > 0) await client.del(...keys)
      await client.quit()
    }
  })
})

const postgresSkip = await serviceSkip('postgres')

const overPostgres = serviceTests(postgresSkip)
describe('the overview over PostgreSQL', () => {
  overPostgres.test('a count past countCap shows the estimate from the table statistics', async () => {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
    const schema = uniqueName('ec_inspector_estimate')
    try {
      await migratePostgres(pool, { schema })
      await pool.query(
        `INSERT INTO "${schema}".tasks (id, status, callback_url, event, attempts, created_at, updated_at)
         SELECT 'msg_' || i, CASE WHEN i <= 300 THEN 'delivered' ELSE 'failed' END, 'https://a.example/h', 'e', 1, now(), now()
         FROM generate_series(1, 305) AS i`
      )
      await pool.query(`ANALYZE "${schema}".tasks`)
      const inspector = open({ store: createPostgresStore({ pool, schema, listen: false }), countCap: 100 })
      const body = await (await get(inspector, '/')).text()
      assert.match(body, /data-status="delivered"><div class="label">delivered<\/div><div class="value"><span title="more than 100: [^"]*">≈ 300</)
      assert.match(body, /data-status="failed"><div class="label">failed<\/div><div class="value">5</)
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      await pool.end()
    }
  })
})
