/** The inspector as a Hono handler. */
import type { Inspector } from './inspector.ts'

/** What the mount reads of Hono's `Context` (so Hono's types are not needed to use it). */
export interface HonoContext {
  req: { raw: Request }
}

/**
 * A Hono handler serving the inspector: route every method under its `basePath` to it.
 *
 * @example
 * ```ts
 * const inspector = createInspector({ store, basePath: '/admin/callbacks', authorize })
 * app.all('/admin/callbacks/*', honoInspector(inspector))
 * app.all('/admin/callbacks', honoInspector(inspector))
 * ```
 */
export function honoInspector(inspector: Inspector): (c: HonoContext) => Promise<Response> {
  if (typeof inspector !== 'function') throw new TypeError('honoInspector: pass the inspector createInspector made')
  return (c) => inspector(c.req.raw)
}
