/**
 * Unknown option keys: a misspelt option (`concurency`, `urlpolicy`) would otherwise be ignored
 * and its default used in silence. Checked once, when an options object is first resolved.
 */

/**
 * Throws a `TypeError` naming the first key of `options` that is not in `known`, and the known
 * option nearest to it. `where` prefixes the message (`createWorker`, `retry`, …).
 */
export function checkOptionNames(options: object, known: ReadonlySet<string>, where: string): void {
  for (const key of Object.keys(options)) {
    if (known.has(key)) continue
    const nearest = nearestName(key, known)
    const hint = nearest === undefined ? `known options: ${[...known].join(', ')}` : `did you mean \`${nearest}\`?`
    throw new TypeError(`${where}: unknown option \`${key}\` (${hint})`)
  }
}

/** The known name closest to `key` (case-insensitive edit distance), when it is close enough to be a typo. */
function nearestName(key: string, known: ReadonlySet<string>): string | undefined {
  const lower = key.toLowerCase()
  let best: string | undefined
  let bestDistance = Infinity
  for (const name of known) {
    const distance = editDistance(lower, name.toLowerCase())
    if (distance < bestDistance) {
      best = name
      bestDistance = distance
    }
  }
  return bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]!
}
