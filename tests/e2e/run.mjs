// CTest entry point: runs one e2e test file with node's test runner, or exits 77 (skipped) when
// node_modules, the pensieve binary or the test model's vocabulary is absent.
import { spawnSync } from 'node:child_process';
import { missingPrerequisite } from './lib/harness.mjs';

const file = process.argv[2];
const missing = missingPrerequisite();
if (missing) {
  console.log(`SKIPPED ${file}: ${missing}`);
  process.exit(77);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', file], { stdio: 'inherit' });
process.exit(r.status ?? 1);
