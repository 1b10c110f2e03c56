// Validate the generated artefacts with the reference JavaScript tooling (not part of `make test`:
// it needs Node and npm packages). From contracts/:
//
//   npm install --prefix tools --no-save @asyncapi/parser@3 ajv@8 ajv-formats@3
//   node tools/validate.mjs
//
// Checks: asyncapi.yaml is a valid AsyncAPI 3.0.0 document (@asyncapi/parser, no errors or warnings);
// every event's example validates against its JSON Schema (Ajv, draft 2020-12), and the schema
// rejects the example once a required field is removed; every message example's headers validate
// against schemas/envelope.json.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser, fromFile } from '@asyncapi/parser';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let failures = 0;

const { document, diagnostics } = await fromFile(new Parser(), path.join(root, 'asyncapi.yaml')).parse();
for (const d of diagnostics) {
  // severity 0 = error, 1 = warning; 2+ are hints such as "3.1.0 exists"
  if (d.severity <= 1) failures++;
  console.log(`asyncapi: severity ${d.severity} ${d.code} ${d.path.join('.')}: ${d.message}`);
}
console.log(`asyncapi.yaml: ${document ? 'valid AsyncAPI ' + document.version() : 'INVALID'}`);
if (!document) failures++;

const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
const schemas = path.join(root, 'schemas');
const envelope = ajv.compile(JSON.parse(fs.readFileSync(path.join(schemas, 'envelope.json'), 'utf8')));
let checked = 0;
for (const file of fs.readdirSync(schemas).sort()) {
  if (!/\.v\d+\.json$/.test(file)) continue;
  const schema = JSON.parse(fs.readFileSync(path.join(schemas, file), 'utf8'));
  const validate = ajv.compile(schema);
  for (const example of schema.examples ?? []) {
    checked++;
    if (!validate(example)) { failures++; console.log(file, JSON.stringify(validate.errors)); }
    const incomplete = { ...example };
    delete incomplete[schema.required[0]];
    if (validate(incomplete)) { failures++; console.log(`${file}: accepts a payload without ${schema.required[0]}`); }
  }
}
if (document) {
  for (const message of document.allMessages()) {
    for (const example of message.examples()) {
      checked++;
      if (!envelope(example.headers())) { failures++; console.log(message.id(), JSON.stringify(envelope.errors)); }
    }
  }
}
console.log(`${checked} examples checked, ${failures} failure(s)`);
process.exit(failures ? 1 : 0);
