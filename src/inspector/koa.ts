/** The inspector as Koa middleware. */
import type { Middleware } from 'koa'
import type { Inspector } from './inspector.ts'
import { requestUrl, webRequest } from './node-http.ts'

/**
 * Koa middleware serving the inspector under its `basePath`; other paths go on to `next`.
 *
 * @example
 * ```ts
 * const inspector = createInspector({ store, basePath: '/admin/callbacks', authorize })
 * app.use(koaInspector(inspector))
 * ```
 */
export function koaInspector(inspector: Inspector): Middleware {
  if (typeof inspector !== 'function') throw new TypeError('koaInspector: pass the inspector createInspector made')
  const { basePath } = inspector
  return async (ctx, next) => {
    if (ctx.path !== basePath && !ctx.path.startsWith(`${basePath}/`)) return next()
    const body = (ctx.request as { body?: unknown }).body
    const response = await inspector(await webRequest(ctx.req, requestUrl(ctx.protocol, ctx.host, ctx.originalUrl), body))
    ctx.status = response.status
    response.headers.forEach((value, name) => {
      if (name !== 'set-cookie') ctx.set(name, value)
    })
    const cookies = response.headers.getSetCookie()
    if (cookies.length > 0) ctx.set('set-cookie', cookies)
    ctx.body = Buffer.from(await response.arrayBuffer())
  }
}
