import { createCallbackTasks, createMemoryStore } from 'endpoint-callback'
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const inputs = () => Array.from({ length: 1000 }, () => ({ callbackUrl: 'http://127.0.0.1:3000/cb', event: 'report.ready', payload }))
const noStore: any = { ...createMemoryStore(), insertMany: async (t: any[]) => t.map((task) => ({ task, created: true })) }
const sender = { store: noStore, secret, urlPolicy }
const s = performance.now()
for (let i = 0; i < 200; i++) await createCallbackTasks(inputs(), sender)
console.log('per 1000:', ((performance.now() - s) / 200).toFixed(2), 'ms')
