import { openDurableStore } from './support/durable-stores.ts'
import { createCallbackTasks } from 'endpoint-callback'
import PgBoss from 'pg-boss'
import { DATABASE_URL, uniqueName } from './support/services.ts'
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const N = Number(process.env.CALLS ?? 5)
const ours: number[] = [], boss: number[] = [], oursCold: number[] = [], bossCold: number[] = []
for (let round = 0; round < Number(process.env.ROUNDS ?? 4); round++) {
  {
    const d = await openDurableStore('postgres', { max: 20 })
    const sender = { store: d.store, secret, urlPolicy }
    for (let i = 0; i < N; i++) {
      const inputs = Array.from({ length: 1000 }, () => ({ callbackUrl: 'http://127.0.0.1:3000/cb', event: 'report.ready', payload }))
      const s = performance.now(); await createCallbackTasks(inputs, sender); (i === 0 ? oursCold : ours).push(performance.now() - s)
    }
    await d.drop()
  }
  {
    const schema = uniqueName('bench_pgboss')
    const b = new PgBoss({ connectionString: DATABASE_URL, schema, max: 20, supervise: false, schedule: false })
    b.on('error', () => {})
    await b.start(); await b.createQueue('callbacks')
    for (let i = 0; i < N; i++) {
      const jobs = Array.from({ length: 1000 }, () => ({ name: 'callbacks', data: payload, retryLimit: 1, retryDelay: 0 }))
      const s = performance.now(); await b.insert(jobs); (i === 0 ? bossCold : boss).push(performance.now() - s)
    }
    await b.stop({ graceful: false, wait: true })
    const cleanup = new (await import('pg')).default.Pool({ connectionString: DATABASE_URL })
    await cleanup.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`); await cleanup.end()
  }
}
const med = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!.toFixed(1)
console.log(`cold: ours ${med(oursCold)} ms, pg-boss ${med(bossCold)} ms | warm: ours ${med(ours)} ms, pg-boss ${med(boss)} ms`)
