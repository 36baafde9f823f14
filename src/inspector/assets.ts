/**
 * The inspector's stylesheet and its one small script, served from its own path so the
 * Content-Security-Policy can forbid every inline script and style. The page works without the
 * script; with it, times read "3 min ago" and the overview refreshes itself.
 */

export const stylesheet = `:root { color-scheme: light dark; --fg: #1d2329; --muted: #5b6670; --bg: #fff; --panel: #f4f6f8; --line: #d8dee4;
  --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --link: #0b5cad; font: 14px/1.45 system-ui, sans-serif; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9aa6b2; --bg: #0d1117; --panel: #161b22; --line: #30363d; --link: #58a6ff; } }
body { margin: 0; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1.5rem; align-items: baseline; padding: .75rem 1.5rem; border-bottom: 1px solid var(--line); background: var(--panel); }
header h1 { font-size: 1.1rem; margin: 0; }
header nav a { margin-right: 1rem; }
main { padding: 1rem 1.5rem 3rem; max-width: 1200px; }
a { color: var(--link); text-decoration: none; } a:hover { text-decoration: underline; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
pre { background: var(--panel); border: 1px solid var(--line); padding: .6rem; overflow: auto; max-height: 24rem; white-space: pre-wrap; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .6rem .9rem; min-width: 7.5rem; }
.card .label { color: var(--muted); font-size: .85rem; }
.card .value { font-size: 1.4rem; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: 0 .45rem; border-radius: 9px; font-size: .8rem; border: 1px solid var(--line); }
.dest-state { display: inline-block; padding: 0 .45rem; border-radius: 9px; font-size: .8rem; border: 1px solid var(--line); }
.dest-closed { color: var(--ok); } .dest-open { color: var(--bad); } .dest-throttled, .dest-probing { color: var(--warn); }
.status-delivered { color: var(--ok); } .status-failed { color: var(--bad); } .status-scheduled, .status-delivering { color: var(--warn); }
.error { color: var(--bad); }
.muted { color: var(--muted); }
.notice { padding: .5rem .8rem; border: 1px solid var(--line); background: var(--panel); border-radius: 6px; }
.notice.bad { border-color: var(--bad); }
form.search { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; }
form.search label { display: flex; flex-direction: column; font-size: .8rem; color: var(--muted); }
input, select, button { font: inherit; padding: .25rem .4rem; }
button { cursor: pointer; border: 1px solid var(--line); border-radius: 5px; background: var(--panel); color: var(--fg); }
button.danger { color: var(--bad); }
form.inline { display: inline; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; word-break: break-all; }
ol.timeline { list-style: none; padding: 0; border-left: 2px solid var(--line); margin-left: .5rem; }
ol.timeline li { margin: 0 0 1rem; padding-left: 1rem; position: relative; }
ol.timeline li::before { content: ""; position: absolute; left: -7px; top: .35rem; width: 10px; height: 10px; border-radius: 50%; background: var(--line); }
ol.timeline li.outcome-delivered::before { background: var(--ok); }
ol.timeline li.outcome-failed::before, ol.timeline li.outcome-retry::before { background: var(--bad); }
svg.chart { width: 100%; max-width: 720px; height: auto; }
svg.chart .bar-delivered { fill: var(--ok); } svg.chart .bar-failed { fill: var(--bad); }
svg.chart .axis { fill: var(--muted); font-size: 10px; } svg.chart .axis-line { stroke: var(--line); }
.legend span::before { content: "■ "; } .legend .delivered { color: var(--ok); } .legend .failed { color: var(--bad); }
`

export const script = `(() => {
  const units = [['day', 86400], ['h', 3600], ['min', 60], ['s', 1]]
  const relative = (ms) => {
    const seconds = Math.round(Math.abs(ms) / 1000)
    for (const [unit, size] of units) {
      if (seconds >= size || unit === 's') {
        const n = Math.floor(seconds / size)
        const text = n + ' ' + unit + (unit === 'day' && n !== 1 ? 's' : '')
        return ms >= 0 ? text + ' ago' : 'in ' + text
      }
    }
  }
  const update = () => {
    for (const time of document.querySelectorAll('time[datetime]')) {
      const at = Date.parse(time.getAttribute('datetime'))
      if (Number.isNaN(at)) continue
      if (!time.title) time.title = time.textContent
      time.textContent = relative(Date.now() - at)
    }
  }
  update()
  setInterval(update, 15000)
  const refresh = Number(document.body.dataset.refresh || 0)
  if (refresh > 0) {
    setInterval(() => { if (document.visibilityState === 'visible') location.reload() }, refresh * 1000)
  }
})()
`
