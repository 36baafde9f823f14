import { openDurableStore } from './support/durable-stores.ts'
import { createCallbackTasks } from 'endpoint-callback'
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const inputs = (n: number) => Array.from({ length: n }, () => ({ callbackUrl: 'http://127.0.0.1:3000/cb', event: 'report.ready', payload }))
const d = await openDurableStore('postgres', { max: 20 })
const sender = { store: d.store, secret, urlPolicy }
await createCallbackTasks(inputs(10), sender)
const s = performance.now()
for (let i = 0; i < 40; i++) await createCallbackTasks(inputs(1000), sender)
console.log('per call', ((performance.now() - s) / 40).toFixed(1))
await d.drop()
