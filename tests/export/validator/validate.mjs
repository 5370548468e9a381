// Validate one glTF/GLB file with the Khronos glTF validator and print its JSON report.
//
// Usage: node validate.mjs PATH
// Exit status: 0 when the report has no errors, 1 when it has errors, 2 when the file could not be
// read or parsed at all. The report (with warnings, infos and hints) always goes to stdout.
import { readFile } from "node:fs/promises";
import path from "node:path";
import validator from "gltf-validator";

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate.mjs PATH");
  process.exit(2);
}

try {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 1000,
    externalResourceFunction: async (uri) =>
      new Uint8Array(await readFile(path.resolve(path.dirname(file), decodeURIComponent(uri)))),
  });
  console.log(JSON.stringify(report, null, 2));
  process.exit(report.issues.numErrors > 0 ? 1 : 0);
} catch (err) {
  console.error(`validator failed on ${file}: ${err}`);
  process.exit(2);
}
