/**
 * `npm run bench` runs every benchmark in bench/ one after the other, each in its own process so
 * that one's heap and JIT state do not colour the next. `npm run bench -- verify deliver` runs some.
 */
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const dir = fileURLToPath(new URL('.', import.meta.url))
const wanted = process.argv.slice(2)
const scripts = readdirSync(dir)
  .filter((file) => file.endsWith('.ts') && file !== 'run.ts')
  .filter((file) => wanted.length === 0 || wanted.includes(file.replace(/\.ts$/, '')))
  .sort()

let failed = 0
for (const script of scripts) {
  console.log(`\n=== bench/${script}`)
  const result = spawnSync(
    process.execPath,
    ['--conditions=endpoint-callback-source', '--import', 'tsx', '--expose-gc', `${dir}${script}`],
    { stdio: 'inherit' }
  )
  if (result.status !== 0) failed++
}
process.exit(failed === 0 ? 0 : 1)
