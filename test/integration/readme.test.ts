/**
 * A new user's path through the README: the shell commands it shows, run as written, against the
 * package as npm would ship it.
 *
 * The package is built with tsc into a temporary copy of the repository (dist/ never appears in the
 * checkout) and packed with `npm pack`; a fresh project then runs every command of the README's
 * ```sh blocks, in order, in one carried-over shell environment (so `export CALLBACK_SECRET=$(…)`
 * holds for the commands after it). The test reads the README each time: change a command there and
 * this runs the new one. Where a command cannot run literally, the change is the smallest that keeps
 * it meaning the same, and each one is named here:
 *
 * - `npm install endpoint-callback` installs the packed tarball: this version is not on the
 *   registry, and the tarball is exactly what `npm publish` would upload.
 * - `npx endpoint-callback …` runs as `npx --no-install endpoint-callback …`, with npm set offline
 *   and its registry pointed at a closed local port: it must run the installed bin, never fetch a
 *   package of that name.
 * - `listen` keeps running, so it starts in the background (as in "another terminal"), and the test
 *   waits for the address it prints. Its port is swapped for a free one, in every command that names
 *   it: the machine is shared and 4000 may be taken.
 * - `verify --headers F --body B --now T` checks a capture; the test writes F (raw `name: value`
 *   lines after a request line, as a proxy log shows them) and B for a callback signed with
 *   `$CALLBACK_SECRET` at time T, the one thing a user would bring.
 * - The first block is for a checkout of this repository (`npm install && npm run demo`, `npm test`),
 *   not for a user's project: `npm run demo` is run by test/integration/demo.test.ts, and `npm test`
 *   is the suite this file belongs to; the test checks both are still what those lines name.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { access, cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { signPayload } from 'endpoint-callback'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** The commands of each ```sh block: one per line, comment-only and blank lines dropped. */
function shellBlocks(markdown: string): string[][] {
  const blocks: string[][] = []
  for (const match of markdown.matchAll(/^```(?:sh|bash|shell)[^\n]*\n([\s\S]*?)^```/gm)) {
    blocks.push(
      match[1]!
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => line !== '' && !line.startsWith('#'))
    )
  }
  return blocks
}

/** A line without its trailing `# comment` (the README puts none inside quotes). */
const withoutComment = (line: string) => line.replace(/\s+#.*$/, '').trim()

/** Lines meant for a checkout of this repository, each mapped to what covers it. */
const CHECKOUT_LINES = new Map([
  ['npm install && npm run demo', 'test/integration/demo.test.ts'],
  ['npm test', 'the suite itself (package.json "test")'],
])

/** Environment of a command: the caller's, without anything from the test runner or npm's own run. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined) continue
    // npm_config_* from `npm test` would point npm at this checkout; NODE_OPTIONS could add the
    // source condition and hide a broken dist/.
    if (/^npm_/i.test(name) || name === 'INIT_CWD' || name === 'NODE_OPTIONS' || name === 'NODE_TEST_CONTEXT') continue
    if (name.startsWith('CALLBACK_')) continue
    env[name] = value
  }
  // The npm cache answers for packages seen before; the registry only for what it lacks.
  return { ...env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false', npm_config_prefer_offline: 'true' }
}

/** What npx may use: nothing but what is installed in the project. */
const NO_REGISTRY = { npm_config_offline: 'true', npm_config_registry: 'http://127.0.0.1:9/' }

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function run(file: string, args: string[], options: { cwd: string; env: Record<string, string>; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { cwd: options.cwd, env: options.env, timeout: options.timeoutMs ?? 120_000, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null
        resolve({ code, stdout, stderr })
      }
    )
  })
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

let work: string
let project: string
let tarball: string
const running = new Set<ChildProcess>()

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'endpoint-callback-readme-'))
  const copy = join(work, 'package')
  await mkdir(copy)
  for (const entry of ['package.json', 'README.md', 'LICENSE', 'BENCHMARKS.md', 'bin', 'src', 'scripts', 'docs', 'examples', 'tsconfig.json', 'tsconfig.build.json']) {
    await cp(join(root, entry), join(copy, entry), { recursive: true })
  }
  // Type definitions for the build only; npm pack never includes node_modules.
  await symlink(join(root, 'node_modules'), join(copy, 'node_modules'), 'dir')
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const build = await run(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: copy, env: baseEnv() })
  // Other files' type errors fail `npm test`'s type check; here only the emitted package matters.
  await access(join(copy, 'dist', 'index.js')).catch(() => {
    throw new Error(`tsc emitted no dist/index.js:\n${build.stdout}${build.stderr}`)
  })
  const pack = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: copy, env: { ...baseEnv(), ...NO_REGISTRY } })
  assert.equal(pack.code, 0, `npm pack failed:\n${pack.stderr}`)
  const [packed] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>
  tarball = join(work, packed!.filename)
  project = join(work, 'project')
  await mkdir(project)
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'readme-user', private: true, type: 'module' }, null, 2))
})

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal)
  } catch {
    // already gone
  }
}

after(async () => {
  for (const child of running) killGroup(child, 'SIGKILL')
  if (work !== undefined) await rm(work, { recursive: true, force: true })
})

/** A `listen` started in the background: every stdout line so far, and a way to wait for one. */
function background(line: string, env: Record<string, string>) {
  // Its own process group: npx runs the bin in a child of its own, and both must stop together.
  const child = spawn('bash', ['-c', `exec ${line}`], { cwd: project, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  running.add(child)
  const lines: string[] = []
  let stderr = ''
  let pending = ''
  const wakers = new Set<() => void>()
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (pending + chunk).split('\n')
    pending = parts.pop() ?? ''
    lines.push(...parts)
    for (const wake of wakers) wake()
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child)
      for (const wake of wakers) wake()
      resolve({ code, signal })
    })
  )
  return {
    lines,
    waitFor(predicate: (line: string) => boolean, what: string, timeoutMs = 15_000): Promise<string> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(predicate)
          if (found !== undefined) finish(() => resolve(found))
          else if (child.exitCode !== null) finish(() => reject(new Error(`${line} exited (${child.exitCode}) before ${what}: ${stderr}`)))
        }
        const timer = setTimeout(() => finish(() => reject(new Error(`${line}: no ${what} within ${timeoutMs} ms: ${lines.join('\n')} ${stderr}`))), timeoutMs)
        const finish = (settle: () => void) => {
          clearTimeout(timer)
          wakers.delete(check)
          settle()
        }
        wakers.add(check)
        check()
      })
    },
    /** Stops it as Ctrl-C in its terminal would: SIGINT to the whole group. */
    async stop() {
      killGroup(child, 'SIGINT')
      const timer = setTimeout(() => killGroup(child, 'SIGKILL'), 5_000)
      try {
        return await exited
      } finally {
        clearTimeout(timer)
      }
    },
  }
}

/** Parses `NAME=value\0…` as `env -0` prints it. */
function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const entry of text.split('\0')) {
    const at = entry.indexOf('=')
    if (at > 0) env[entry.slice(0, at)] = entry.slice(at + 1)
  }
  for (const name of ['_', 'SHLVL', 'PWD', 'OLDPWD']) delete env[name]
  return env
}

test('the README shows a checkout block, an install block and a command-line block', async () => {
  const blocks = shellBlocks(await readFile(join(root, 'README.md'), 'utf8'))
  const lines = blocks.flat().map(withoutComment)
  assert.ok(lines.includes('npm install endpoint-callback'), 'no "npm install endpoint-callback" in the README')
  assert.ok(lines.some((line) => /endpoint-callback\s+listen\b/.test(line)), 'no listen command in the README')
  assert.ok(lines.some((line) => /endpoint-callback\s+send\b/.test(line)), 'no send command in the README')
  assert.ok(lines.some((line) => /endpoint-callback\s+verify\b/.test(line)), 'no verify command in the README')
})

test("the checkout commands are the repository's own scripts, and the demo has its own test", async () => {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  const demoTest = await readFile(join(root, 'test/integration/demo.test.ts'), 'utf8')
  assert.match(pkg.scripts.demo ?? '', /examples\/demo\.ts/)
  assert.match(demoTest, /examples\/demo\.ts/, 'demo.test.ts no longer runs what `npm run demo` runs')
  assert.match(pkg.scripts.test ?? '', /--test/)
})

test('every command the README shows runs as written in a fresh project with the packed package', { timeout: 300_000 }, async (t) => {
  const started = performance.now()
  const readme = await readFile(join(root, 'README.md'), 'utf8')
  const blocks = shellBlocks(readme)
  let env = baseEnv()
  let listener: ReturnType<typeof background> | undefined
  const portSwaps = new Map<string, string>()
  let sends = 0

  for (const original of blocks.flat()) {
    const bare = withoutComment(original)
    if (CHECKOUT_LINES.has(bare)) continue // see the header: covered elsewhere
    let line = original
    for (const [from, to] of portSwaps) line = line.replaceAll(from, to)

    if (/^npm (?:install|i)\s+endpoint-callback(?:\s|$)/.test(bare)) {
      line = line.replace(/endpoint-callback/, tarball)
    }
    const usesNpx = /\bnpx\s+endpoint-callback\b/.test(line)
    line = line.replace(/\bnpx\s+endpoint-callback\b/g, 'npx --no-install endpoint-callback')
    const lineEnv = usesNpx ? { ...env, ...NO_REGISTRY } : env

    if (/endpoint-callback\s+listen\b/.test(line)) {
      const asked = /--port\s+(\d+)/.exec(line)?.[1]
      if (asked !== undefined) {
        const port = String(await freePort())
        for (const host of ['127.0.0.1', 'localhost', '[::1]']) portSwaps.set(`${host}:${asked}`, `${host}:${port}`)
        line = line.replace(`--port ${asked}`, `--port ${port}`)
      }
      listener = background(line, lineEnv)
      await listener.waitFor((text) => /http:\/\/\S+/.test(text), 'address')
      continue
    }

    const verifyFiles = /endpoint-callback\s+verify\b/.test(line) ? await prepareCapture(line, env) : undefined

    const envFile = join(work, 'env')
    const result = await run('bash', ['-c', `${line}\nstatus=$?\nenv -0 > ${JSON.stringify(envFile)}\nexit $status`], {
      cwd: project,
      env: lineEnv,
    })
    assert.equal(result.code, 0, `\`${original}\` exited ${result.code}:\n${result.stdout}\n${result.stderr}`)
    const after = parseEnv(await readFile(envFile, 'utf8'))
    if (usesNpx) for (const name of Object.keys(NO_REGISTRY)) if (env[name] === undefined) delete after[name]
    env = after

    // What a user would look at after each kind of command.
    if (/endpoint-callback\s+secret\b/.test(line) && !/\$\(/.test(line)) {
      if (/--json\b/.test(line)) {
        const keys = JSON.parse(result.stdout) as { signingKey?: string; publicKey?: string }
        assert.match(keys.signingKey ?? '', /^whsk_[A-Za-z0-9+/]+=*$/)
        assert.match(keys.publicKey ?? '', /^whpk_[A-Za-z0-9+/]+=*$/)
      } else if (!/--ed25519\b/.test(line)) {
        assert.match(result.stdout, /^whsec_[A-Za-z0-9+/]+=*\n$/)
      }
    }
    const exported = /^export\s+(\w+)=/.exec(bare)?.[1]
    if (exported !== undefined) assert.ok(env[exported], `\`${original}\` left ${exported} empty`)
    if (/^npm (?:install|i)\s/.test(bare)) {
      for (const name of bare.split(/\s+/).slice(2).filter((word) => !word.startsWith('-'))) {
        await access(join(project, 'node_modules', name, 'package.json'))
      }
    }
    if (/endpoint-callback\s+send\b/.test(line)) {
      sends++
      assert.match(result.stdout, /attempt 1: HTTP 2\d\d/)
      assert.match(result.stdout, /delivered \S+ after 1 attempt/)
      assert.ok(listener, 'send ran without a listen before it')
      const id = /webhook-id (\S+)/.exec(result.stdout)?.[1]
      const shown = await listener.waitFor((text) => text.includes(`"id":"${id}"`), `a line for ${id}`)
      const received = JSON.parse(shown) as { verified: boolean; status: number; type?: string; data?: unknown }
      assert.equal(received.verified, true, shown)
      assert.equal(received.status, 204)
      const event = /--event\s+(\S+)/.exec(line)?.[1]
      if (event !== undefined) assert.equal(received.type, event)
      const data = /--data\s+'([^']*)'/.exec(line)?.[1]
      if (data !== undefined) assert.deepEqual(received.data, JSON.parse(data))
    }
    if (verifyFiles !== undefined) {
      const verified = JSON.parse(result.stdout) as { id: string; type?: string; data?: unknown; timestamp: string }
      assert.deepEqual(verified, verifyFiles.expected)
    }
  }

  assert.ok(sends > 0, 'the README sent nothing to its listener')
  if (listener !== undefined) {
    const stopped = await listener.stop()
    // npx itself may end by the signal; the listen under it must not have been killed.
    assert.ok(stopped.code === 0 || stopped.signal === 'SIGINT', `listen ended with ${JSON.stringify(stopped)}`)
  }
  t.diagnostic(`README commands ran in ${((performance.now() - started) / 1000).toFixed(1)} s (after the build and pack)`)
})

test('every entry point of the installed package loads with plain node, without the source condition', async () => {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { exports: Record<string, unknown> }
  // Installed by the README's own `npm install endpoint-callback` above, unless that test was filtered out.
  const installed = await access(join(project, 'node_modules', 'endpoint-callback', 'package.json')).then(() => true, () => false)
  if (!installed) {
    const install = await run('npm', ['install', tarball], { cwd: project, env: baseEnv() })
    assert.equal(install.code, 0, install.stderr)
  }
  const specifiers = Object.keys(pkg.exports)
    .filter((key) => key !== './package.json')
    .map((key) => `endpoint-callback${key.slice(1)}`)
  const script = `for (const s of ${JSON.stringify(specifiers)}) { const m = await import(s); if (Object.keys(m).length === 0) throw new Error(s + ' exports nothing'); console.log(s) }`
  const loaded = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: project, env: baseEnv() })
  assert.equal(loaded.code, 0, loaded.stderr)
  assert.deepEqual(loaded.stdout.trim().split('\n'), specifiers)
})

/**
 * Writes the headers and body files a `verify` line names, for a callback signed with
 * `$CALLBACK_SECRET` at its `--now` (or now), and returns what verify must print for it.
 */
async function prepareCapture(line: string, env: Record<string, string>) {
  const headersFile = /--headers\s+(\S+)/.exec(line)?.[1]
  const bodyFile = /--body\s+(\S+)/.exec(line)?.[1]
  const now = /--now\s+(\S+)/.exec(line)?.[1]
  assert.ok(headersFile !== undefined && bodyFile !== undefined, `verify line without --headers/--body: ${line}`)
  const secret = env.CALLBACK_SECRET
  assert.ok(secret, 'verify runs before CALLBACK_SECRET is set')
  const timestamp = now === undefined ? new Date() : new Date(now)
  const data = { reportUrl: 'https://files.example/reports/42.pdf' }
  const body = JSON.stringify({ type: 'report.ready', timestamp: timestamp.toISOString(), data })
  const id = 'msg_readme_capture'
  const headers = signPayload({ id, timestamp, body }, { secret })
  const lines = ['POST /hooks HTTP/1.1', 'host: 127.0.0.1:4000', 'content-type: application/json']
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`)
  await writeFile(join(project, headersFile), lines.join('\r\n') + '\r\n')
  await writeFile(join(project, bodyFile), body)
  const seconds = new Date(Math.floor(timestamp.getTime() / 1000) * 1000).toISOString()
  return { expected: { id, timestamp: seconds, type: 'report.ready', data } }
}
