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

/** Where a test names an example: `'examples/demo.ts'`, `` `examples/${name}` `` with `'demo.ts'`, … */
function names(source: string, example: string): boolean {
  const escaped = example.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  return new RegExp(`['"\`/]${escaped}['"\`]`).test(source)
}

test('every TypeScript example under examples/ is run by a test', async () => {
  const examples = (await files(join(root, 'examples'), (name) => /\.m?ts$/.test(name))).map((path) =>
    relative(join(root, 'examples'), path).split(sep).join('/')
  )
  assert.ok(examples.length > 0, 'no examples found')
  const self = fileURLToPath(import.meta.url)
  const tests = await files(join(root, 'test'), (name) => name.endsWith('.test.ts'))
  const sources = await Promise.all(tests.filter((path) => path !== self).map((path) => readFile(path, 'utf8')))
  const unrun = examples.filter((example) => !sources.some((source) => names(source, example)))
  assert.deepEqual(unrun, [], `examples no test runs: ${unrun.join(', ')}`)
})

test('the matcher finds an example named in a test and ignores one that is only mentioned', () => {
  assert.equal(names("spawn(node, ['examples/demo.ts'])", 'demo.ts'), true)
  assert.equal(names("['koa-receiver.ts', 'Koa']", 'koa-receiver.ts'), true)
  assert.equal(names('// see the demo.ts example', 'demo.ts'), false)
  assert.equal(names("'my-demo.ts'", 'demo.ts'), false)
})
