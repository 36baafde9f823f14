/**
 * The inspection commands of the real `endpoint-callback` binary (built with tsc, run as child
 * processes) against the real PostgreSQL and Redis on this machine, each in its own schema or key
 * prefix. Tasks are made and checked through the library; the binary only sees the store URL.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { cp, mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { Redis } from 'ioredis'
import { createCallbackTask, deliver, generateSecret } from 'endpoint-callback'
import type { CallbackStore, SenderOptions } from 'endpoint-callback'
import { createPostgresStore, migratePostgres } from 'endpoint-callback/postgres'
import { createRedisStore } from 'endpoint-callback/redis'
import { buildCli, runCli } from '../support/cli-binary.ts'
import type { BuiltCli } from '../support/cli-binary.ts'
import { createTestClock, createTestTransport } from '../support/sender.ts'
import { DATABASE_URL, REDIS_URL, serviceSkip, serviceTests, uniqueName } from '../support/services.ts'

const postgresSkip = await serviceSkip('postgres')
const redisSkip = await serviceSkip('redis')

let cli: BuiltCli

before(async () => {
  cli = await buildCli()
})

after(async () => {
  await cli?.remove()
})

/** stderr holds exactly one line, `endpoint-callback: …`. */
function assertOneLineError(stderr: string, pattern: RegExp): void {
  assert.match(stderr, /^endpoint-callback: [^\n]+\n$/, `stderr is not one line: ${JSON.stringify(stderr)}`)
  assert.match(stderr, pattern)
}

function jsonLines(stdout: string): Array<Record<string, any>> {
  return stdout
    .trim()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, any>)
}

interface Backend {
  name: 'postgres' | 'redis'
  skip: string | false
  /** A fresh store and the CLI flags that name it. */
  open(): Promise<{ store: CallbackStore; flags: string[]; cleanup(): Promise<void> }>
}

const backends: Backend[] = [
  {
    name: 'postgres',
    skip: postgresSkip,
    async open() {
      const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })
      const schema = uniqueName('ec_cli_inspect')
      await migratePostgres(pool, { schema })
      return {
        store: createPostgresStore({ pool, schema, listen: false }),
        flags: ['--store', DATABASE_URL, '--schema', schema],
        async cleanup() {
          await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
          await pool.end()
        },
      }
    },
  },
  {
    name: 'redis',
    skip: redisSkip,
    async open() {
      const client = new Redis(REDIS_URL)
      const prefix = uniqueName('ec_cli_inspect')
      return {
        store: createRedisStore({ client, prefix, subscribe: false }),
        flags: ['--store', REDIS_URL, '--prefix', prefix],
        async cleanup() {
          let cursor = '0'
          do {
            const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500)
            if (keys.length > 0) await client.del(...keys)
            cursor = next
          } while (cursor !== '0')
          await client.quit()
        },
      }
    },
  },
]

for (const backend of backends) {
  // shadows node:test's: with the service down (and skipping asked for) each test is reported skipped
  const { before, after, test } = serviceTests(backend.skip)
  describe(`inspection commands on ${backend.name}`, () => {
    let opened: Awaited<ReturnType<Backend['open']>>
    let sender: SenderOptions
    const clientSecret = generateSecret()
    const clock = createTestClock(new Date('2030-05-01T10:00:00.000Z'))
    const ids = {} as Record<'early' | 'late' | 'waiting' | 'delivered', string>
    const run = (...args: string[]) => runCli(cli.bin, [...args, ...opened.flags])

    before(async () => {
      opened = await backend.open()
      // 400 for /bad, 503 for /busy, 204 otherwise: no socket is opened.
      const transport = createTestTransport((request) => ({
        status: request.url.includes('/bad') ? 400 : request.url.includes('/busy') ? 503 : 204,
        body: request.url.includes('/bad') ? 'no such account' : '',
      }))
      sender = { store: opened.store, secret: generateSecret(), transport, now: clock.now, retry: { schedule: [60_000], jitter: 0, failStatuses: [400] } }
      const make = async (path: string, secret?: string) => {
        const task = await createCallbackTask({ callbackUrl: `https://client.example${path}?token=t`, event: 'report.ready', idempotencyKey: `key${path}`, ...(secret === undefined ? {} : { secret }) }, sender)
        await deliver(task, { path }, sender)
        return task.id
      }
      ids.early = await make('/bad/early', clientSecret)
      clock.advance(60_000)
      ids.late = await make('/bad/late')
      ids.waiting = await make('/busy')
      ids.delivered = await make('/ok')
    })

    after(async () => {
      await opened?.cleanup()
    })

    test('tasks lists the failed tasks newest first, with their last error and never a secret or body', async () => {
      const text = await run('tasks')
      assert.equal(text.code, 0, text.stderr)
      const lines = text.stdout.trim().split('\n')
      assert.equal(lines.length, 2)
      assert.match(lines[0]!, new RegExp(`^${ids.late}  failed  1 attempt  2030-05-01T10:01:00\\.\\d{3}Z  report\\.ready  https://client\\.example/bad/late\\?token=t  HTTP 400$`))
      assert.match(lines[1]!, new RegExp(`^${ids.early}  failed  `))

      const json = await run('tasks', '--json', '--status', 'failed')
      assert.equal(json.code, 0, json.stderr)
      const tasks = jsonLines(json.stdout)
      assert.deepEqual(tasks.map((task) => task.id), [ids.late, ids.early])
      assert.equal(tasks[1]!.lastError, 'HTTP 400')
      assert.equal(tasks[1]!.attempts, 1)
      for (const task of tasks) assert.deepEqual(Object.keys(task).filter((key) => ['secret', 'body', 'encryptionKey'].includes(key)), [])
      assert.ok(!(json.stdout + text.stdout).includes(clientSecret.slice(6, 20)), 'the listing shows part of the task secret')

      const since = await run('tasks', '--json', '--since', '2030-05-01T10:00:30Z')
      assert.deepEqual(jsonLines(since.stdout).map((task) => task.id), [ids.late])

      const page = await run('tasks', '--json', '--limit', '1')
      const [first, more] = jsonLines(page.stdout)
      assert.equal(first!.id, ids.late)
      assert.equal(typeof more!.cursor, 'string')
      const next = await run('tasks', '--json', '--limit', '1', '--cursor', more!.cursor)
      assert.deepEqual(jsonLines(next.stdout).map((task) => task.id), [ids.early])
    })

    test('tasks finds tasks in any status by event, host, id, idempotency key and time range', async () => {
      const found = async (...args: string[]) => {
        const result = await run('tasks', '--json', ...args)
        assert.equal(result.code, 0, result.stderr)
        return jsonLines(result.stdout).map((task) => task.id)
      }
      assert.deepEqual(await found('--status', 'delivered'), [ids.delivered])
      assert.deepEqual((await found('--status', 'any')).sort(), Object.values(ids).sort())
      assert.deepEqual((await found('--status', 'any', '--host', 'CLIENT.example', '--event', 'report.ready')).sort(), Object.values(ids).sort())
      assert.deepEqual(await found('--status', 'any', '--host', 'other.example'), [])
      assert.deepEqual(await found('--status', 'any', '--id', ids.waiting), [ids.waiting])
      assert.deepEqual(await found('--status', 'any', '--key', 'key/busy'), [ids.waiting])
      assert.deepEqual(await found('--status', 'any', '--until', '2030-05-01T10:00:30Z'), [ids.early])
      assert.deepEqual(await found('--status', 'failed', '--since', '2030-05-01T10:00:30Z', '--event', 'report.ready'), [ids.late])
      const bad = await run('tasks', '--status', 'lost')
      assert.equal(bad.code, 2)
      assertOneLineError(bad.stderr, /status must be one of .* or any/)
    })

    test('CALLBACK_STORE_SCHEMA / CALLBACK_STORE_PREFIX name the schema or key prefix for every store command; the other kind of store\'s variable is ignored', async () => {
      const [, url, , name] = opened.flags as [string, string, string, string]
      const env = {
        CALLBACK_STORE_URL: url,
        CALLBACK_STORE_SCHEMA: backend.name === 'postgres' ? name : 'not_this_schema',
        CALLBACK_STORE_PREFIX: backend.name === 'redis' ? name : 'not-this-prefix',
      }
      const tasks = await runCli(cli.bin, ['tasks', '--json'], { env })
      assert.equal(tasks.code, 0, tasks.stderr)
      assert.deepEqual(jsonLines(tasks.stdout).map((task) => task.id), [ids.late, ids.early])
      const attempts = await runCli(cli.bin, ['attempts', ids.early], { env })
      assert.equal(attempts.code, 0, attempts.stderr)
      assert.match(attempts.stdout, /^#1 .* HTTP 400 /)
      // The flag still wins over the variable.
      const flagged = await runCli(cli.bin, ['attempts', ids.early, backend.name === 'postgres' ? '--schema' : '--prefix', uniqueName('ec_cli_elsewhere')], { env })
      assert.equal(flagged.code, 1)
      for (const command of [['redeliver', 'msg_nowhere'], ['cancel', 'msg_nowhere']]) {
        const result = await runCli(cli.bin, command, { env })
        assert.equal(result.code, 1, result.stderr)
        assertOneLineError(result.stderr, new RegExp(`ERR_CALLBACK_TASK_NOT_FOUND: task msg_nowhere does not exist in the .* store at .*"${name}"`))
      }
    })

    test('an empty listing says on stderr which store, schema or prefix and filter it searched, and stdout stays empty', async () => {
      const since = await run('tasks', '--since', '2099-01-01T00:00:00Z')
      assert.equal(since.code, 0, since.stderr)
      assert.equal(since.stdout, '')
      const [, url, , name] = opened.flags as [string, string, string, string]
      const server = (backend.name === 'postgres' ? `${new URL(url).host}${new URL(url).pathname}` : new URL(url).host).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
      const where = backend.name === 'postgres' ? `PostgreSQL store at ${server}, schema "${name}"` : `Redis store at ${server}, key prefix "${name}"`
      assertOneLineError(since.stderr, new RegExp(`no failed tasks \\(updated since 2099-01-01T00:00:00\\.000Z\\) in the ${where}`))
      if (backend.name === 'redis') {
        const wrong = uniqueName('ec_cli_wrong')
        const result = await runCli(cli.bin, ['tasks', '--json', '--store', opened.flags[1]!, '--prefix', wrong])
        assert.equal(result.code, 0, result.stderr)
        assert.equal(result.stdout, '')
        assertOneLineError(result.stderr, new RegExp(`no failed tasks in the Redis store at ${server}, key prefix "${wrong}" \\(--prefix or CALLBACK_STORE_PREFIX\\)`))
      }
    })

    test('attempts prints a task’s attempts, and an unknown task is exit 1 with one line', async () => {
      const text = await run('attempts', ids.early)
      assert.equal(text.code, 0, text.stderr)
      assert.match(text.stdout, /^#1  2030-05-01T10:00:00\.000Z  HTTP 400  \d+ ms  failed  "no such account"\n$/)
      const json = await run('attempts', ids.waiting, '--json')
      assert.deepEqual(
        jsonLines(json.stdout).map(({ attempt, status, outcome }) => ({ attempt, status, outcome })),
        [{ attempt: 1, status: 503, outcome: 'retry' }]
      )
      const unknown = await run('attempts', 'msg_no_such_task')
      assert.equal(unknown.code, 1)
      assertOneLineError(unknown.stderr, /ERR_CALLBACK_TASK_NOT_FOUND: task msg_no_such_task does not exist in the (?:PostgreSQL store at \S+, schema|Redis store at \S+, key prefix) "ec_cli_inspect/)
    })

    test('redeliver makes one failed task due now, refuses a delivered one, and --all-failed --since takes the rest', async () => {
      const one = await run('redeliver', ids.late)
      assert.equal(one.code, 0, one.stderr)
      assert.match(one.stdout, new RegExp(`^redelivered ${ids.late}: due `))
      const late = await opened.store.get(ids.late)
      assert.ok(late)
      assert.equal(late.status, 'scheduled')
      assert.ok(late.nextAttemptAt !== undefined && Math.abs(late.nextAttemptAt.getTime() - Date.now()) < 60_000, 'due at the real now')
      assert.equal(late.attempts, 1)
      assert.deepEqual((await opened.store.attempts(ids.late)).map((attempt) => attempt.status), [400], 'history kept')

      const refused = await run('redeliver', ids.delivered)
      assert.equal(refused.code, 1)
      assertOneLineError(refused.stderr, /ERR_CALLBACK_TASK_STATE: task \S+ is delivered: only failed tasks are redelivered/)
      assert.equal((await opened.store.get(ids.delivered))?.status, 'delivered')

      const usage = await run('redeliver', '--all-failed')
      assert.equal(usage.code, 2)
      assertOneLineError(usage.stderr, /--all-failed needs --since/)

      const all = await run('redeliver', '--all-failed', '--since', '2030-01-01T00:00:00Z', '--json')
      assert.equal(all.code, 0, all.stderr)
      assert.deepEqual(jsonLines(all.stdout), [{ redelivered: [ids.early] }])
      assert.equal((await opened.store.get(ids.early))?.status, 'scheduled')
      assert.equal((await run('tasks')).stdout, '', 'no failed task is left')
    })

    test('destinations lists a destination held back, with its state, until when and why', async () => {
      const until = new Date('2030-05-01T11:00:00.000Z')
      await opened.store.setDestination!('https://client.example', { state: 'open', until, reason: 'ERR_CALLBACK_TIMEOUT: no answer', openings: 2 }, clock.now())
      const json = await run('destinations', '--json')
      assert.equal(json.code, 0, json.stderr)
      const listed = jsonLines(json.stdout).find((one) => one.destination === 'https://client.example')
      assert.deepEqual(
        { state: listed?.state, until: listed?.until, openings: listed?.openings, lastError: listed?.lastError },
        { state: 'open', until: until.toISOString(), openings: 2, lastError: 'ERR_CALLBACK_TIMEOUT: no answer' }
      )
      const text = await run('destinations')
      assert.match(text.stdout, /^https:\/\/client\.example\topen\t2030-05-01T11:00:00\.000Z\tin-flight=0\tdue=\d+\tERR_CALLBACK_TIMEOUT: no answer$/m)
      await opened.store.setDestination!('https://client.example', null, clock.now())
    })

    test('cancel ends a task waiting for its retry; cancelling it again is exit 1', async () => {
      const cancelled = await run('cancel', ids.waiting)
      assert.equal(cancelled.code, 0, cancelled.stderr)
      assert.equal(cancelled.stdout, `cancelled ${ids.waiting}\n`)
      assert.equal((await opened.store.get(ids.waiting))?.status, 'cancelled')
      const again = await run('cancel', ids.waiting)
      assert.equal(again.code, 1)
      assertOneLineError(again.stderr, /ERR_CALLBACK_TASK_STATE: task \S+ is cancelled: it has already ended/)
    })

  })
}

describe('inspection commands: usage', () => {
  test('--help shows the inspection exit codes for every inspection command', async () => {
    for (const command of ['tasks', 'attempts', 'redeliver', 'cancel']) {
      const result = await runCli(cli.bin, [command, '--help'])
      assert.equal(result.code, 0)
      assert.match(result.stdout, new RegExp(`^Usage: endpoint-callback ${command}`))
      assert.match(result.stdout, /--store <url>/)
      assert.match(result.stdout, /Exit codes:\n {2}0 .*\n {2}1 .*unknown task.*\n {2}2 .*usage or configuration/)
    }
  })

  test('a store URL that is neither PostgreSQL nor Redis, or a missing --store, is exit 2 without echoing the URL', async () => {
    const mysql = await runCli(cli.bin, ['tasks', '--store', 'mysql://admin:hunter2@db.example/app'])
    assert.equal(mysql.code, 2)
    assertOneLineError(mysql.stderr, /--store must be a postgres:\/\/, postgresql:\/\/, redis:\/\/ or rediss:\/\/ URL, not mysql:\/\/…/)
    assert.doesNotMatch(mysql.stderr, /hunter2/)

    const missing = await runCli(cli.bin, ['tasks'])
    assert.equal(missing.code, 2)
    assertOneLineError(missing.stderr, /required option '--store <url>' not specified/)

    const schemaOnRedis = await runCli(cli.bin, ['tasks', '--store', 'redis://127.0.0.1:6379', '--schema', 'x'])
    assert.equal(schemaOnRedis.code, 2)
    assertOneLineError(schemaOnRedis.stderr, /--schema is for a PostgreSQL store/)
  })

  test('without the pg package installed, a postgres:// store is exit 2 with the npm command to run', async () => {
    // The built package again, but with a node_modules that lacks pg (every other package linked).
    const root = fileURLToPath(new URL('../../', import.meta.url))
    const dir = await mkdtemp(join(tmpdir(), 'endpoint-callback-cli-nopg-'))
    try {
      const built = dirname(dirname(cli.bin))
      // copies, not links: node resolves a module from its real path, which would find pg again
      for (const entry of ['dist', 'bin', 'package.json']) await cp(join(built, entry), join(dir, entry), { recursive: true })
      await mkdir(join(dir, 'node_modules'))
      for (const name of await readdir(join(root, 'node_modules'))) {
        if (name !== 'pg' && name !== '.bin') await symlink(join(root, 'node_modules', name), join(dir, 'node_modules', name))
      }
      const result = await runCli(join(dir, 'bin', 'endpoint-callback.js'), ['tasks', '--store', 'postgres://postgres@127.0.0.1:5432/test'])
      assert.equal(result.code, 2)
      assertOneLineError(result.stderr, /--store postgres:\/\/… needs the pg package: npm install pg/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
