/**
 * Run by `prepack` after the build: removes from dist/ the files a user of the package can never
 * reach, so that the tarball holds only what is used. A declaration is reachable from the types
 * of the `exports` map (and `types` / `typesVersions`) through the declarations it imports; a
 * module from the `exports` targets and the bin through its imports. Internal modules keep their
 * .js, but their .d.ts goes when no public declaration mentions them; a module that only holds types
 * keeps its .d.ts, but its empty .js goes. Each removed file takes its map with it. It reports on
 * stderr: stdout is `npm pack --json`'s.
 */
import { readFileSync, readdirSync, rmSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../', import.meta.url))
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

const targets = (value, pick) =>
  typeof value === 'string'
    ? [value]
    : Array.isArray(value)
      ? value.flatMap((item) => targets(item, pick))
      : value !== null && typeof value === 'object'
        ? Object.entries(value).flatMap(([key, inner]) => (pick(key) ? targets(inner, pick) : []))
        : []
const isTypes = (key) => key === 'types'
const isCode = (key) => key !== 'types' && key !== 'endpoint-callback-source'

const declarationRoots = [...targets(pkg.exports, (key) => key.startsWith('.') || isTypes(key)).filter((path) => path.endsWith('.d.ts')), pkg.types, ...targets(pkg.typesVersions, () => true)]
const codeRoots = [...targets(pkg.exports, (key) => key.startsWith('.') || isCode(key)).filter((path) => path.endsWith('.js')), pkg.main, ...Object.values(pkg.bin)]

/** Relative specifiers of the code of a file, doc comments (whose examples import other files) left out. */
function specifiers(text) {
  const code = text
    .split('\n')
    .filter((line) => !/^\s*(?:\/\*\*|\*|\/\/)/.test(line))
    .join('\n')
  return [...code.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)['"](\.{1,2}\/[^'"]+)['"]/g)].map((match) => match[1])
}

function reach(starts, rename) {
  const seen = new Set()
  const queue = starts.filter(Boolean).map((path) => normalize(join(root, path)))
  while (queue.length > 0) {
    const file = queue.shift()
    if (seen.has(file)) continue
    seen.add(file)
    let text
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const specifier of specifiers(text)) queue.push(rename(normalize(join(dirname(file), specifier))))
  }
  return seen
}

const declarations = reach(declarationRoots, (path) => path.replace(/\.[jt]s$/, '.d.ts'))
const modules = reach(codeRoots, (path) => path)

function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => (entry.isDirectory() ? files(join(dir, entry.name)) : [join(dir, entry.name)]))
}

const removed = []
for (const file of files(join(root, 'dist'))) {
  const unused = (file.endsWith('.d.ts') && !declarations.has(file)) || (file.endsWith('.js') && !modules.has(file))
  if (!unused) continue
  rmSync(file)
  rmSync(`${file}.map`, { force: true })
  removed.push(relative(root, file))
}
console.error(`prune-dist: removed ${removed.length} files no user can reach${removed.length === 0 ? '' : `: ${removed.join(', ')}`}`)
