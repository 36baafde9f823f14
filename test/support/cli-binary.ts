/**
 * The real `endpoint-callback` binary for CLI tests: the package built with tsc into a temporary
 * directory laid out as installed (package.json, dist/, bin/, node_modules linked), then run as child
 * processes exactly as a user's shell would run `bin/endpoint-callback.js`.
 */
import { spawn, execFile } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { access, copyFile, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))

export interface BuiltCli {
  /** Path of `bin/endpoint-callback.js` inside the built package. */
  bin: string
  /** What tsc said when it exited non-zero but still emitted (errors in files other than the CLI's). */
  buildWarnings: string
  remove(): Promise<void>
}

/** Builds the package once into a temporary directory (about 3 s). */
export async function buildCli(): Promise<BuiltCli> {
  const dir = await mkdtemp(join(tmpdir(), 'endpoint-callback-cli-'))
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const args = [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', join(dir, 'dist'), '--declaration', 'false', '--sourceMap', 'false']
  const buildWarnings = await new Promise<string>((resolve) => {
    execFile(process.execPath, args, { cwd: root, timeout: 120_000 }, (error, stdout, stderr) => {
      resolve(error === null ? '' : `${stdout}${stderr}`)
    })
  })
  try {
    await access(join(dir, 'dist', 'cli.js'))
  } catch {
    await rm(dir, { recursive: true, force: true })
    throw new Error(`tsc did not emit dist/cli.js:\n${buildWarnings}`)
  }
  await mkdir(join(dir, 'bin'))
  await copyFile(join(root, 'bin', 'endpoint-callback.js'), join(dir, 'bin', 'endpoint-callback.js'))
  await copyFile(join(root, 'package.json'), join(dir, 'package.json'))
  await symlink(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir')
  return { bin: join(dir, 'bin', 'endpoint-callback.js'), buildWarnings, remove: () => rm(dir, { recursive: true, force: true }) }
}

/** The environment children run in: none of the CLI's key variables, nothing of the test runner's. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra }
  for (const name of ['CALLBACK_SECRET', 'CALLBACK_PUBLIC_KEY', 'CALLBACK_SIGNING_KEY', 'CALLBACK_STORE_URL', 'CALLBACK_STORE_SCHEMA', 'CALLBACK_STORE_PREFIX', 'NODE_TEST_CONTEXT', 'NODE_OPTIONS']) {
    if (!(name in extra)) delete env[name]
  }
  return env
}

export interface CliRun {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs the binary to completion (killed after `timeoutMs`). */
export function runCli(bin: string, args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: childEnv(options.env), timeout: options.timeoutMs ?? 20_000, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (error !== null && typeof (error as { code?: unknown }).code !== 'number' && error.signal == null) {
          reject(error)
          return
        }
        resolve({
          code: error === null ? 0 : typeof error.code === 'number' ? error.code : null,
          signal: error?.signal ?? null,
          stdout,
          stderr,
        })
      }
    )
  })
}

/** A running `endpoint-callback listen`. */
export interface ListenProcess {
  /** The URL from its first line. */
  url: string
  /** Every stdout line so far. */
  lines: string[]
  stderr(): string
  /** Resolves with the first line (after the URL line) matching `predicate`; rejects after `timeoutMs`. */
  waitForLine(predicate: (line: string) => boolean, timeoutMs?: number): Promise<string>
  /** Sends `signal` and resolves with how it exited (SIGKILL after 5 s). */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Starts `listen` with `args` (add `--port 0`) and `env`, and waits for the URL it prints first. */
export async function startListen(bin: string, args: string[], running: Set<ChildProcess>, env: Record<string, string> = {}): Promise<ListenProcess> {
  const child = spawn(process.execPath, [bin, 'listen', ...args], { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  const lines: string[] = []
  let stderr = ''
  let pending = ''
  const waiters = new Set<() => void>()
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child)
      resolve({ code, signal })
      for (const wake of waiters) wake()
    })
  })
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk
    const parts = pending.split('\n')
    pending = parts.pop() ?? ''
    lines.push(...parts)
    for (const wake of waiters) wake()
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))

  const waitFor = (from: number, predicate: (line: string) => boolean, timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const found = lines.slice(from).find(predicate)
        if (found !== undefined) {
          done()
          resolve(found)
        } else if (child.exitCode !== null || child.signalCode !== null) {
          done()
          reject(new Error(`listen exited (${child.exitCode ?? child.signalCode}) before the line appeared; stderr: ${stderr}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`no matching line from listen within ${timeoutMs} ms; stdout: ${lines.join('\n')}; stderr: ${stderr}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })

  const first = await waitFor(0, () => true, 10_000)
  const url = /http:\/\/[^\s"]+/.exec(first)?.[0]
  if (url === undefined) throw new Error(`listen's first line holds no URL: ${first}`)
  return {
    url,
    lines,
    stderr: () => stderr,
    waitForLine: (predicate, timeoutMs = 5_000) => waitFor(1, predicate, timeoutMs),
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
      try {
        return await exited
      } finally {
        clearTimeout(timer)
      }
    },
  }
}
