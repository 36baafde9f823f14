/**
 * The README and the pages under docs/ link to each other, to examples and to BENCHMARKS.md by
 * relative path. A renamed or deleted file, or a renamed heading, would leave a link that 404s on
 * GitHub and npm; these tests fail on it instead. (TypeDoc checks the {@link}s of the API reference:
 * `npm run docs:check`; the last test here checks that it documents every entry of the package.)
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** README.md and every markdown page under docs/ except the generated API reference. */
function markdownPages(): string[] {
  const pages = [join(root, 'README.md')]
  const walk = (dir: string) => {
    if (!existsSync(dir)) return
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) {
        if (relative(root, path) !== join('docs', 'api')) walk(path)
      } else if (entry.name.endsWith('.md')) pages.push(path)
    }
  }
  walk(join(root, 'docs'))
  return pages
}

/** Markdown without fenced code blocks and inline code, where `[x](y)` is not a link. */
function prose(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/`[^`\n]*`/g, '')
}

/** Inline links `[text](target)` and reference definitions `[label]: target`. */
function linkTargets(markdown: string): string[] {
  const text = prose(markdown)
  const targets: string[] = []
  for (const match of text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) targets.push(match[1]!)
  for (const match of text.matchAll(/^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$/gm)) targets.push(match[1]!)
  return targets
}

/** The anchors GitHub gives a page's headings: lowercased, punctuation dropped, spaces to dashes. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>()
  const seen = new Map<string, number>()
  for (const match of prose(markdown).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = match[1]!
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-')
    const count = seen.get(base) ?? 0
    seen.set(base, count + 1)
    anchors.add(count === 0 ? base : `${base}-${count}`)
  }
  return anchors
}

/** Every broken relative link of one page, as `target (reason)`. */
function brokenLinks(page: string): string[] {
  const broken: string[] = []
  for (const target of linkTargets(readFileSync(page, 'utf8'))) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue // https:, mailto: — not ours to check offline
    const [pathPart = '', fragment] = target.split('#', 2)
    const file = pathPart === '' ? page : resolve(dirname(page), decodeURI(pathPart))
    if (!existsSync(file)) {
      broken.push(`${target} (no such file ${relative(root, file)})`)
      continue
    }
    if (fragment !== undefined && fragment !== '' && statSync(file).isFile() && file.endsWith('.md')) {
      if (!headingAnchors(readFileSync(file, 'utf8')).has(decodeURIComponent(fragment).toLowerCase())) {
        broken.push(`${target} (no heading #${fragment} in ${relative(root, file)})`)
      }
    }
  }
  return broken
}

test('the link checker itself notices a missing file and a missing heading', () => {
  const markdown = '# Start here\n\n[ok](#start-here) [gone](#nowhere) [file](./no-such-file.md) `[code](x.md)`\n'
  assert.deepEqual(linkTargets(markdown), ['#start-here', '#nowhere', './no-such-file.md'])
  assert.deepEqual([...headingAnchors('# The pattern\n## Sending callbacks\n## Stores\n## Stores\n')], [
    'the-pattern',
    'sending-callbacks',
    'stores',
    'stores-1',
  ])
})

test('the README links to the migration guide, the examples and BENCHMARKS.md', () => {
  const targets = linkTargets(readFileSync(join(root, 'README.md'), 'utf8'))
  for (const expected of ['docs/migrating.md', 'BENCHMARKS.md', 'examples/express-receiver.ts']) {
    assert.ok(targets.includes(expected), `README.md has no link to ${expected}`)
  }
})

for (const page of markdownPages()) {
  test(`every relative link in ${relative(root, page)} points at a file (and heading) that exists`, () => {
    assert.deepEqual(brokenLinks(page), [])
  })
}

test('the API reference (typedoc.json) documents every entry point of the package', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    exports: Record<string, string | Record<string, string>>
  }
  const typedoc = JSON.parse(readFileSync(join(root, 'typedoc.json'), 'utf8')) as { entryPoints: string[] }
  const documented = new Set(typedoc.entryPoints.map((path) => path.replace(/^\.\//, '')))
  const sources = Object.entries(pkg.exports)
    .filter(([subpath]) => subpath !== './package.json')
    .map(([subpath, target]) => {
      const source = typeof target === 'string' ? undefined : target['endpoint-callback-source']
      assert.ok(source !== undefined, `exports["${subpath}"] has no endpoint-callback-source condition`)
      return source.replace(/^\.\//, '')
    })
  assert.deepEqual(
    sources.filter((source) => !documented.has(source)),
    [],
    'entry points missing from typedoc.json entryPoints'
  )
})
