import { openDurableStore } from './support/durable-stores.ts'
import { createCallbackTasks, createMemoryStore } from 'endpoint-callback'
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const inputs = () => Array.from({ length: 1000 }, () => ({ callbackUrl: 'http://127.0.0.1:3000/cb', event: 'report.ready', payload }))
const noStore: any = { ...createMemoryStore(), insertMany: async (t: any[]) => t.map((task) => ({ task, created: true })) }
for (const [name, store] of [['nostore', noStore], ['memory', createMemoryStore()]] as const) {
  const sender = { store, secret, urlPolicy }
  const times = []
  for (let i = 0; i < 10; i++) { const s = performance.now(); await createCallbackTasks(inputs(), sender); times.push((performance.now() - s).toFixed(1)) }
  console.log(name, times.join(' '))
}
for (const kind of ['postgres', 'redis'] as const) {
  const d = await openDurableStore(kind, { max: 20 })
  const sender = { store: d.store, secret, urlPolicy }
  const times = []
  for (let i = 0; i < 10; i++) { const s = performance.now(); await createCallbackTasks(inputs(), sender); times.push((performance.now() - s).toFixed(1)) }
  console.log(kind, times.join(' '))
  await d.drop()
}
