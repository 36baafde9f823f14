import { openDurableStore } from './support/durable-stores.ts'
import { createCallbackTasks } from 'endpoint-callback'
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const inputs = (n: number) => Array.from({ length: n }, () => ({ callbackUrl: 'http://127.0.0.1:3000/cb', event: 'report.ready', payload }))
const med = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!.toFixed(1)
const d = await openDurableStore('postgres', { max: 20 })
const sender = { store: d.store, secret, urlPolicy }
async function run(label: string) {
  const t: number[] = []
  for (let i = 0; i < 12; i++) { const s = performance.now(); await createCallbackTasks(inputs(1000), sender); t.push(performance.now() - s) }
  console.log(label, med(t), 'ms per 1000 (median of 12)')
}
await createCallbackTasks(inputs(10), sender)
await run('all indexes')
await d.sql!(`DROP INDEX "${d.name}".tasks_host_updated_idx`)
await run('without the host search index')
await d.sql!(`DROP INDEX "${d.name}".tasks_event_updated_idx; DROP INDEX "${d.name}".tasks_updated_idx; DROP INDEX "${d.name}".tasks_status_updated_idx`)
await run('without the 4 search indexes')
await d.drop()
