#!/usr/bin/env node
'use strict';
// Runs the compiled CLI when it was built (npm run build) from the current sources, else the
// TypeScript source through tsx (a checkout being edited never runs a stale build).
const path = require('node:path');
const fs = require('node:fs');

const root = path.join(__dirname, '..');
const built = path.join(root, 'dist', 'cli.js');

/** The newest modification time under `dir` (0 when it does not exist). */
function newest(dir) {
  let t = 0;
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs);
  }
  return t;
}

function fresh() {
  if (!fs.existsSync(built)) return false;
  // A runtime tree (compose image, /opt/keyplane) ships no sources: its build is the code.
  const src = path.join(root, 'src');
  return !fs.existsSync(src) || newest(src) <= fs.statSync(built).mtimeMs;
}

if (fresh()) {
  require(built).main();
} else {
  try {
    require.resolve('tsx/cjs');
  } catch {
    // A checkout installed without dev dependencies: say what to do in one line, not a stack trace.
    process.stderr.write(`keyplane: ${fs.existsSync(built) ? 'the build in dist/ is older than src/' : 'there is no build in dist/'}, and tsx (a dev dependency) is not installed to run the sources: run npm run build (or npm ci)\n`);
    process.exit(1);
  }
  require('tsx/cjs');
  require(path.join(root, 'src', 'cli.ts')).main();
}
