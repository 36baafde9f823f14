/**
 * HTML built by one tagged template that escapes every value put into it, so text that came from a
 * client or a receiver (URLs, response bodies, errors, metadata) can only ever be text. Markup is
 * nested by passing the result of another `html` call, the one value left as it is.
 */

const markup = Symbol('endpoint-callback.inspector.html')

/** Markup made by {@link html}: the only value {@link html} does not escape. */
export interface Html {
  readonly [markup]: string
}

const entities: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

/** `text` safe in element content and in quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => entities[char]!)
}

function render(value: unknown): string {
  if (value === undefined || value === null || value === false) return ''
  if (Array.isArray(value)) return value.map(render).join('')
  if (typeof value === 'object' && markup in value) return (value as Html)[markup]
  return escapeHtml(String(value))
}

/** Markup with every interpolated value escaped (arrays joined; `undefined`, `null`, `false` left out). */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1]!
  return { [markup]: out }
}

/** The text of markup, to send. */
export function htmlText(value: Html): string {
  return value[markup]
}
