import { openDurableStore } from './support/durable-stores.ts'
import { createCallbackTasks } from 'endpoint-callback'
import pg from 'pg'
import { DATABASE_URL } from './support/services.ts'
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const inputs = (n: number) => Array.from({ length: n }, () => ({ callbackUrl: 'http://127.0.0.1:3000/cb', event: 'report.ready', payload }))
const d = await openDurableStore('postgres', { max: 20 })
const sender = { store: d.store, secret, urlPolicy }
for (let i = 0; i < 10; i++) await createCallbackTasks(inputs(1000), sender)
const s = performance.now()
for (let i = 0; i < 60; i++) await createCallbackTasks(inputs(1000), sender)
console.log('per call', ((performance.now() - s) / 60).toFixed(1))
if (process.env.EXPLAIN) {
  const client = new pg.Client({ connectionString: DATABASE_URL }); await client.connect()
  let captured: any
  const spy: any = { query: (q: any, v?: any) => { captured = typeof q === 'string' ? { text: q, values: v } : { text: q.text, values: q.values }; return client.query(q, v) } }
  await client.query('BEGIN'); await createCallbackTasks(inputs(1000), { ...sender, transaction: spy }); await client.query('ROLLBACK')
  for (let r = 0; r < 6; r++) {
    await client.query('BEGIN')
    const res = await client.query({ text: 'EXPLAIN (ANALYZE, BUFFERS, WAL) ' + captured.text, values: captured.values })
    await client.query('ROLLBACK')
    if (r === 5) console.log(res.rows.map((x: any) => x['QUERY PLAN']).join('\n'))
  }
  await client.end()
}
await d.drop()
