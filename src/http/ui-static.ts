import { existsSync } from 'node:fs';
import path from 'node:path';
import express, { type RequestHandler, type Router } from 'express';
import { AppError } from './errors';

/**
 * The dashboard's policy: its own scripts, styles and API only. No inline script or style, no eval,
 * no form posts anywhere (the sign-in form is handled by script; without it nothing is sent), and
 * Trusted Types with no policy, so that assigning HTML to innerHTML or the like throws in the browser.
 */
export const UI_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join('; ');

/**
 * Vite's assets/ holds only files named after a hash of their bytes (`[name]-[hash][extname]`): a
 * new build is a new URL, so they may be kept for a year. Files of ui/public keep their names.
 */
const HASHED_DIR = '/assets/';

/**
 * `GET /ui/`: the built dashboard (Vite's output, dist/ui), with the policy above. Hashed assets
 * are cached for good; index.html is revalidated every time, so a new build is picked up at once.
 * When the dashboard was not built, `/ui/` says so instead of a bare 404.
 */
export function uiStatic(dir: string): Router {
  const router = express.Router();
  router.use(((_req, res, next) => {
    res.setHeader('Content-Security-Policy', UI_CSP);
    next();
  }) as RequestHandler);
  router.use(
    express.static(dir, {
      index: ['index.html'],
      redirect: true,
      dotfiles: 'ignore',
      fallthrough: true,
      setHeaders(res, file) {
        const rel = '/' + path.relative(dir, file).split(path.sep).join('/');
        res.setHeader('Cache-Control', rel.startsWith(HASHED_DIR) ? 'public, max-age=31536000, immutable' : 'no-cache');
      },
    }),
  );
  router.use(((req, _res, next) => {
    if (req.path === '/' && !existsSync(path.join(dir, 'index.html'))) {
      return next(new AppError(404, 'ui-not-built', 'Dashboard not built', 'this installation has no built dashboard: run `npm run build`'));
    }
    next();
  }) as RequestHandler);
  return router;
}
