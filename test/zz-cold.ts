import { openDurableStore } from './support/durable-stores.ts'
import { createCallbackTasks } from 'endpoint-callback'
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const inputs = (n: number) => Array.from({ length: n }, () => ({ callbackUrl: 'http://127.0.0.1:3000/cb', event: 'report.ready', payload }))
for (const warm of ['none', 'check', 'one', 'none', 'check', 'one']) {
  const d = await openDurableStore('postgres', { max: 20 })
  const sender = { store: d.store, secret, urlPolicy }
  await createCallbackTasks(inputs(1000), { store: (await import('endpoint-callback')).createMemoryStore(), secret, urlPolicy })
  let w = performance.now()
  if (warm === 'check') await d.store.check?.()
  if (warm === 'one') await createCallbackTasks(inputs(1), sender)
  w = performance.now() - w
  const s = performance.now(); await createCallbackTasks(inputs(1000), sender); const t = performance.now() - s
  const s2 = performance.now(); await createCallbackTasks(inputs(1000), sender); const t2 = performance.now() - s2
  console.log(warm, 'warmup', w.toFixed(1), 'first', t.toFixed(1), 'second', t2.toFixed(1))
  await d.drop()
}
