/**
 * The inspector over a PostgreSQL store holding 1,000,000 tasks: how long the overview and search
 * pages take to render, from the Web `Request` to the whole HTML (every query and the markup), in
 * process, no socket. Target: under 50 ms each.
 *
 * The tasks are seeded with one INSERT … SELECT generate_series (and one more for their attempts):
 * spread evenly over the last 30 days (about 33,000 per day), 95 % delivered, 3 % failed, 1.5 %
 * scheduled (a third of them due), 0.5 % cancelled, over 1,000 callback hosts and 20 events, one
 * attempt each. Then VACUUM ANALYZE, as autovacuum would have done by then. Each page is rendered
 * 3 times to warm up, then 25 times; the median and the slowest are printed. The schema is dropped
 * at the end. About 2 minutes, most of it seeding.
 *
 *   node --conditions=endpoint-callback-source --import tsx bench/inspector.ts
 */
import pg from 'pg'
import { createInspector } from 'endpoint-callback/inspector'
import { createPostgresStore, migratePostgres } from 'endpoint-callback/postgres'
import { DATABASE_URL, serviceSkip, uniqueName } from '../test/support/services.ts'

const TASKS = Number(process.env.BENCH_INSPECTOR_TASKS ?? 1_000_000)
const WARMUP = 3
const RUNS = 25
const TARGET_MS = 50

const skip = await serviceSkip('postgres').catch((error: Error) => error.message)
if (skip) {
  console.log(`inspector: skipped (${skip})`)
  process.exit(0)
}

const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 })
const schema = uniqueName('ec_bench_inspector')
const now = new Date()

// BENCH_INSPECTOR_SCHEMA=<a schema kept by BENCH_INSPECTOR_KEEP=1> measures again without seeding
const reuse = process.env.BENCH_INSPECTOR_SCHEMA

try {
  if (reuse === undefined) await seed()
  await measure(reuse ?? schema)
} finally {
  // BENCH_INSPECTOR_KEEP=1 keeps the seeded schema to look at query plans; drop it by hand afterwards
  if (process.env.BENCH_INSPECTOR_KEEP === '1' || reuse !== undefined) console.log(`kept schema ${reuse ?? schema}`)
  else await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
  await pool.end()
}

async function seed() {
  await migratePostgres(pool, { schema })
  const s = `"${schema}"`
  let started = performance.now()
  // i = 1 is the newest task; task i was last updated i × (30 days / TASKS) ago
  await pool.query(
    `INSERT INTO ${s}.tasks (id, status, callback_url, event, idempotency_key, metadata, body, attempts, next_attempt_at, last_error, created_at, updated_at)
SELECT 'msg_bench_' || lpad(i::text, 8, '0'),
  CASE WHEN i % 200 < 190 THEN 'delivered' WHEN i % 200 < 196 THEN 'failed' WHEN i % 200 < 199 THEN 'scheduled' ELSE 'cancelled' END,
  'https://client-' || ((i / 7) % 997) || '.example/hooks/' || i,
  'event.' || (i % 20),
  CASE WHEN i % 2 = 0 THEN 'key-' || i END,
  json_build_object('order', i),
  json_build_object('type', 'event.' || (i % 20), 'timestamp', $1::timestamptz, 'data', json_build_object('order', i))::text,
  1,
  CASE WHEN i % 200 BETWEEN 196 AND 198 THEN $1::timestamptz + ((i % 3) - 1) * interval '1 hour' END,
  CASE WHEN i % 200 BETWEEN 190 AND 198 THEN 'HTTP 503' END,
  $1::timestamptz - i * ($2::float8 / $3) * interval '1 second',
  $1::timestamptz - i * ($2::float8 / $3) * interval '1 second'
FROM generate_series(1, $3::int) AS i`,
    [now.toISOString(), 30 * 86_400, TASKS]
  )
  await pool.query(
    `INSERT INTO ${s}.attempts (task_id, attempt, started_at, duration_ms, status, response_body, outcome)
SELECT id, 1, updated_at - interval '50 milliseconds', 50,
  CASE WHEN status = 'delivered' THEN 204 ELSE 503 END, '',
  CASE status WHEN 'delivered' THEN 'delivered' WHEN 'failed' THEN 'failed' WHEN 'scheduled' THEN 'retry' ELSE 'cancelled' END
FROM ${s}.tasks`
  )
  await pool.query(`VACUUM ANALYZE ${s}.tasks`)
  await pool.query(`VACUUM ANALYZE ${s}.attempts`)
  console.log(`seeded ${TASKS.toLocaleString('en-US')} tasks and their attempts in ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

async function measure(schema: string) {
  const s = `"${schema}"`
  const now = new Date((await pool.query(`SELECT max(updated_at) AS at FROM ${s}.tasks`)).rows[0].at)
  let started: number
  const store = createPostgresStore({ pool, schema, listen: false })
  const inspector = createInspector({ store, public: true, now: () => now })
  const anHourAgo = new Date(now.getTime() - 3_600_000).toISOString()
  const pages: [string, string][] = [
    ['overview', '/'],
    ['search: every task (newest first)', '/tasks'],
    ['search: failed', '/tasks?status=failed'],
    ['search: by host', '/tasks?host=client-42.example'],
    ['search: by host, failed', '/tasks?host=client-42.example&status=failed'],
    ['search: by event, delivered, last hour', `/tasks?event=event.7&status=delivered&from=${encodeURIComponent(anHourAgo)}`],
    ['search: by idempotency key', '/tasks?key=key-500000'],
    ['search: by id', '/tasks?id=msg_bench_00500000'],
    ['search: page 2 of a host', ''] // filled in below from page 1's cursor
  ]
  const first = await (await inspector(new Request('http://bench.test/tasks?host=client-42.example'))).text()
  const next = /rel="next" href="([^"]+)"/.exec(first)?.[1]?.replaceAll('&amp;', '&')
  pages[pages.length - 1]![1] = next ?? '/tasks?host=client-42.example'

  console.log(`\n${'page'.padEnd(44)} ${'median'.padStart(9)} ${'slowest'.padStart(9)}  rows`)
  let worst = 0
  for (const [name, path] of pages) {
    const times: number[] = []
    let rows = 0
    for (let run = 0; run < WARMUP + RUNS; run++) {
      started = performance.now()
      const response = await inspector(new Request(`http://bench.test${path}`))
      const body = await response.text()
      const ms = performance.now() - started
      if (response.status !== 200) throw new Error(`${path} answered ${response.status}`)
      if (run >= WARMUP) times.push(ms)
      rows = (body.match(/<tr data-task=/g) ?? []).length
    }
    times.sort((a, b) => a - b)
    const median = times[Math.floor(times.length / 2)]!
    worst = Math.max(worst, median)
    console.log(`${name.padEnd(44)} ${median.toFixed(1).padStart(6)} ms ${times[times.length - 1]!.toFixed(1).padStart(6)} ms  ${path === '/' ? '' : rows}`)
  }
  console.log(`\nslowest median ${worst.toFixed(1)} ms: target < ${TARGET_MS} ms ${worst < TARGET_MS ? 'met' : 'NOT met'}`)
  const { rows } = await pool.query(`SELECT pg_size_pretty(pg_total_relation_size('${s}.tasks')) AS tasks, pg_size_pretty(pg_indexes_size('${s}.tasks')) AS indexes`)
  console.log(`tasks table ${rows[0].tasks} (indexes ${rows[0].indexes})`)
}
