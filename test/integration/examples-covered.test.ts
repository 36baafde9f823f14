/**
 * Every example under examples/ runs in CI: each one is run by some test. An example nobody runs
 * rots silently while the README keeps pointing people at it; this fails as soon as one is added
 * without a test that runs it.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))

async function files(dir: string, keep: (name: string) => boolean): Promise<string[]> {
  const found: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && keep(entry.name)) found.push(join(entry.parentPath, entry.name))
  }
  return found.sort()
}

/**
 * Whether `source` runs `example` in a child process: a spawn (spawn, spawnSync, execFile, fork)
 * whose arguments hold `examples/<example>`, or `examples/${…}` with the example's name quoted in
 * the same file (a list the test runs through). A name only mentioned — in a comment, a list of
 * links, an assertion on the README — does not count.
 */
function runs(source: string, example: string): boolean {
  const escaped = example.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const spawnArgs = /\b(?:spawn|spawnSync|execFile|execFileSync|fork)\(([^)]*)/g
  for (const [, args = ''] of source.matchAll(spawnArgs)) {
    if (new RegExp(`['"\`]examples/${escaped}['"\`]`).test(args)) return true
    if (/`examples\/\$\{[^}]+\}`/.test(args) && new RegExp(`['"\`]${escaped}['"\`]`).test(source)) return true
  }
  return false
}

test('every TypeScript example under examples/ is run by a test', async () => {
  const examples = (await files(join(root, 'examples'), (name) => /\.m?ts$/.test(name))).map((path) =>
    relative(join(root, 'examples'), path).split(sep).join('/')
  )
  assert.ok(examples.length > 0, 'no examples found')
  const self = fileURLToPath(import.meta.url)
  const tests = await files(join(root, 'test'), (name) => name.endsWith('.test.ts'))
  const sources = await Promise.all(tests.filter((path) => path !== self).map((path) => readFile(path, 'utf8')))
  const unrun = examples.filter((example) => !sources.some((source) => runs(source, example)))
  assert.deepEqual(unrun, [], `examples no test runs: ${unrun.join(', ')}`)
})

test('the matcher finds an example a test spawns and ignores one that is only mentioned', () => {
  assert.equal(runs("spawnSync(process.execPath, ['--import', 'tsx', 'examples/demo.ts'], {})", 'demo.ts'), true)
  const throughList = "for (const name of ['koa-receiver.ts']) spawn(process.execPath, ['--import', 'tsx', `examples/${name}`])"
  assert.equal(runs(throughList, 'koa-receiver.ts'), true)
  assert.equal(runs(throughList, 'demo.ts'), false, 'a spawn through a list runs only what the list names')
  assert.equal(runs("['koa-receiver.ts', 'Koa']", 'koa-receiver.ts'), false, 'a quoted name without a spawn')
  assert.equal(runs("for (const link of ['docs/migrating.md', 'examples/demo.ts']) assert.ok(readme.includes(link))", 'demo.ts'), false)
  assert.equal(runs('// see the demo.ts example', 'demo.ts'), false)
  assert.equal(runs("spawnSync(node, ['examples/my-demo.ts'])", 'demo.ts'), false)
})
