import { execFileSync } from 'node:child_process';

/**
 * LiteLLM loads its config with PyYAML: `yaml.safe_load(open(path, "r"))` (ProxyConfig in
 * litellm/proxy/proxy_server.py). These helpers load a file the same way with Debian's python3-yaml
 * and hand back what LiteLLM would see, as JSON.
 */

const PYTHON = '/usr/bin/python3';
const LOAD = 'import json, sys, yaml\nwith open(sys.argv[1], "r") as f:\n    config = yaml.safe_load(f)\nprint(json.dumps(config, allow_nan=False))';

/** Throws, with what to install, when Debian's PyYAML is not there (.ci/run installs python3-yaml). */
export function requirePyYaml(): void {
  try {
    execFileSync(PYTHON, ['-c', 'import yaml'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`${PYTHON} cannot import yaml (${(err as Error).message.split('\n')[0]}): apt-get install -y python3-yaml (.ci/run does)`);
  }
}

/** The file as LiteLLM's loader reads it; throws with PyYAML's error when it does not load. */
export function loadWithPyYaml(file: string): unknown {
  const out = execFileSync(PYTHON, ['-c', LOAD, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024, timeout: 30_000 });
  return JSON.parse(out);
}
