/**
 * Real services for the tests that need them. Outside CI an unreachable service skips those tests
 * with the reason printed; under CI=true it fails them, so a green CI always means they ran.
 */
import { connect } from 'node:net'

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

function reachable(url: string, defaultPort: number): Promise<boolean> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port || defaultPort) })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(2000, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}

/**
 * `false` when the tests may run; a skip reason otherwise. Throws under CI, where the service
 * must be up.
 */
export async function serviceSkip(name: 'postgres' | 'redis'): Promise<false | string> {
  const url = name === 'postgres' ? DATABASE_URL : REDIS_URL
  if (await reachable(url, name === 'postgres' ? 5432 : 6379)) return false
  const reason = `${name} is not reachable at ${new URL(url).host}`
  if (process.env.CI === 'true') throw new Error(`${reason}, and CI requires it`)
  console.warn(`# skipping ${name} tests: ${reason}`)
  return reason
}

/** A name unique to this test run, for schemas and key prefixes. */
export function uniqueName(base: string): string {
  return `${base}_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
}
