// The dashboard is built into the package (dist/ui) and served by keyplane at /ui/.
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

/** @type {import('vite').UserConfig} */
export default {
  root: here,
  base: '/ui/',
  // Vite would otherwise look for a .env in ui/ and put VITE_* variables into the bundle.
  envDir: false,
  build: {
    outDir: fileURLToPath(new URL('../dist/ui', import.meta.url)),
    emptyOutDir: true,
    // Nothing is inlined as a data: URL: the Content-Security-Policy allows files from keyplane only.
    assetsInlineLimit: 0,
    // The policy forbids inline scripts; Vite's module-preload helper is not needed by the browsers keyplane supports.
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    target: 'es2022',
  },
  logLevel: 'warn',
};
