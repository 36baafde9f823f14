/**
 * The overview's chart of attempts per hour, as server-rendered SVG: no script, no external image,
 * colours from the stylesheet (the Content-Security-Policy allows no inline style).
 */
import { html } from './html.ts'
import type { Html } from './html.ts'
import type { TaskSummary } from '../types.ts'

const width = 720
const height = 160
const top = 12
const bottom = 22
const left = 36

/** Stacked bars, delivered below failed, one per bucket, with the largest total on the axis. */
export function attemptsChart(buckets: TaskSummary['attempts'], label: string): Html {
  const most = Math.max(1, ...buckets.map((bucket) => bucket.delivered + bucket.failed))
  const plot = height - top - bottom
  const step = (width - left) / Math.max(1, buckets.length)
  const bar = Math.max(1, step - 2)
  const scale = (count: number) => (count / most) * plot
  const bars = buckets.map((bucket, index) => {
    const x = (left + index * step + 1).toFixed(1)
    const delivered = scale(bucket.delivered)
    const failed = scale(bucket.failed)
    const hour = bucket.start.toISOString().slice(11, 16)
    return html`<g><title>${hour} UTC: ${bucket.delivered} delivered, ${bucket.failed} failed</title>
<rect class="bar-delivered" x="${x}" y="${(top + plot - delivered).toFixed(1)}" width="${bar.toFixed(1)}" height="${delivered.toFixed(1)}"/>
<rect class="bar-failed" x="${x}" y="${(top + plot - delivered - failed).toFixed(1)}" width="${bar.toFixed(1)}" height="${failed.toFixed(1)}"/></g>`
  })
  const ticks = buckets
    .map((bucket, index) => ({ bucket, index }))
    .filter(({ index }) => index % 6 === 0)
    .map(({ bucket, index }) => html`<text class="axis" x="${(left + index * step).toFixed(1)}" y="${height - 6}">${bucket.start.toISOString().slice(11, 16)}</text>`)
  return html`<svg class="chart" role="img" aria-label="${label}" viewBox="0 0 ${width} ${height}" xmlns="http://www.w3.org/2000/svg">
<line class="axis-line" x1="${left}" y1="${top + plot}" x2="${width}" y2="${top + plot}"/>
<text class="axis" x="0" y="${top + 8}">${most}</text><text class="axis" x="0" y="${top + plot}">0</text>
${bars}${ticks}</svg>`
}
