// CTest entry point: runs one e2e test file with node's test runner, or exits 77 (skipped) when
// node_modules or the pensieve binary is absent; a missing test vocabulary is a failure.
import { spawnSync } from 'node:child_process';
import { missingPrerequisite, missingTestData } from './lib/harness.mjs';

const file = process.argv[2];
const missing = missingPrerequisite();
if (missing) {
  console.log(`SKIPPED ${file}: ${missing}`);
  process.exit(77);
}
const noData = missingTestData();
if (noData) {
  console.log(`FAILED ${file}: ${noData}`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', file], { stdio: 'inherit' });
process.exit(r.status ?? 1);
