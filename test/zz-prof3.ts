import { openDurableStore } from './support/durable-stores.ts'
import { createCallbackTasks } from 'endpoint-callback'
import pg from 'pg'
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const inputs = () => Array.from({ length: 1000 }, () => ({ callbackUrl: 'http://127.0.0.1:3000/cb', event: 'report.ready', payload }))
const d = await openDurableStore('postgres', { max: 20 })
const sender = { store: d.store, secret, urlPolicy }
await createCallbackTasks(inputs(), sender)
const client = new pg.Client({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test' })
await client.connect()
await client.query(`SET search_path TO "${d.name}"`)
await client.query('BEGIN')
const orig = client.query.bind(client)
// capture the statement through the transaction option
let captured: any
const spy: any = { query: (q: any, v?: any) => { captured = typeof q === 'string' ? { text: q, values: v } : q; return orig(q, v) } }
await createCallbackTasks(inputs(), { ...sender, transaction: spy })
await client.query('ROLLBACK')
for (const explainOf of ['']) {
  const r = await client.query({ text: 'EXPLAIN (ANALYZE, BUFFERS, TIMING) ' + captured.text, values: captured.values })
  console.log(r.rows.map((x: any) => x['QUERY PLAN']).join('\n'))
}
await client.end()
await d.drop()
