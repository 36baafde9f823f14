/**
 * Real services for the tests that need them. An unreachable service fails those tests, wherever
 * they run, unless skipping was asked for explicitly with CALLBACK_TEST_SKIP_SERVICES=1: then each
 * test that needs the service is reported skipped (counted in the run's summary), with the reason.
 */
import { connect } from 'node:net'
import * as nodeTest from 'node:test'

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

/** The one variable that lets service-backed tests skip when their service is down. */
export const SKIP_SERVICES_VARIABLE = 'CALLBACK_TEST_SKIP_SERVICES'

/**
 * `false` when the service is reachable. When it is not: a skip reason if CALLBACK_TEST_SKIP_SERVICES
 * is `1`, and otherwise an error (the test file fails, saying how to start or skip).
 */
export async function serviceSkip(name: 'postgres' | 'redis', env: NodeJS.ProcessEnv = process.env): Promise<false | string> {
  const url = name === 'postgres' ? DATABASE_URL : REDIS_URL
  if (await reachable(url, name === 'postgres' ? 5432 : 6379)) return false
  const reason = `${name} is not reachable at ${new URL(url).host}`
  if (env[SKIP_SERVICES_VARIABLE] !== '1') {
    throw new Error(`${reason}: start it, or set ${SKIP_SERVICES_VARIABLE}=1 to skip the tests that need it`)
  }
  console.warn(`# skipping ${name} tests (${SKIP_SERVICES_VARIABLE}=1): ${reason}`)
  return reason
}

/**
 * `node:test`'s functions for a file or suite whose tests need a service: as they are when `skip`
 * is false; otherwise every test is registered as skipped with the reason (so the summary counts
 * it), suites still run to register them, and hooks (which would need the service) do nothing.
 */
export function serviceTests(skip: false | string) {
  const { describe, it, test, before, after, beforeEach, afterEach } = nodeTest
  if (skip === false) return { describe, it, test, before, after, beforeEach, afterEach }
  const skipped = ((name: string) => it(name, { skip }, () => {})) as unknown as typeof it
  const suite = ((name: string, ...rest: unknown[]) => {
    const body = rest.find((arg) => typeof arg === 'function') as () => void
    const { skip: _ignored, ...options } = (rest.find((arg) => typeof arg === 'object' && arg !== null) ?? {}) as { skip?: unknown }
    return describe(name, options, body)
  }) as unknown as typeof describe
  const hook = (() => {}) as typeof before
  return { describe: suite, it: skipped, test: skipped, before: hook, after: hook, beforeEach: hook, afterEach: hook }
}

/** A name unique to this test run, for schemas and key prefixes. */
export function uniqueName(base: string): string {
  return `${base}_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
}
