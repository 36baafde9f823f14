/** The inspector as Express middleware. */
import type { RequestHandler } from 'express'
import type { Inspector } from './inspector.ts'
import { requestUrl, sendResponse, webRequest } from './node-http.ts'

/**
 * Express middleware serving the inspector. Mount it at the inspector's `basePath`; a body parser
 * before it is fine.
 *
 * @example
 * ```ts
 * const inspector = createInspector({ store, basePath: '/admin/callbacks', authorize })
 * app.use('/admin/callbacks', expressInspector(inspector))
 * ```
 */
export function expressInspector(inspector: Inspector): RequestHandler {
  if (typeof inspector !== 'function') throw new TypeError('expressInspector: pass the inspector createInspector made')
  return (req, res, next) => {
    void (async () => {
      const request = await webRequest(req, requestUrl(req.protocol, req.get('host'), req.originalUrl), req.body)
      await sendResponse(res, await inspector(request))
    })().catch(next)
  }
}
