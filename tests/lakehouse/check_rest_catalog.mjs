// The REST catalog (`dosql lakehouse catalog`) driven by an outside client, npm iceberg-js 0.8.1:
// namespaces and tables created, listed, loaded; two appends committed (add-snapshot +
// set-snapshot-ref guarded by assert-table-uuid and assert-ref-snapshot-id); a commit against a
// stale snapshot gets 409; then npm icebird reads the table from the file system (through
// metadata/version-hint.text) with time travel; then the table and namespace are dropped.
//
// Usage: node check_rest_catalog.mjs BASE_URL TOKEN LAKE_DIR STAGING_JSON
// STAGING_JSON (written by tests/lakehouse/catalog_test.cpp): {"schema", "snapshots": [{"id",
// "manifestList", "files", "records", "bytes", "rows"}...]}: each snapshot's manifest list (and
// manifests, data files) already written; rows are what each one adds.
import fs from 'node:fs';
import path from 'node:path';
import { IcebergError, IcebergRestCatalog } from 'iceberg-js';
import { icebergMetadata, icebergRead } from 'icebird';
import './iceberg_fetch.mjs';

const [baseUrl, token, lake, stagingPath] = process.argv.slice(2);
const staging = JSON.parse(fs.readFileSync(stagingPath, 'utf8'));
let failures = 0;
function check(cond, what) {
  if (!cond) {
    failures++;
    console.error(`FAIL: ${what}`);
  }
}
async function status(promise) {
  try {
    await promise;
    return 200;
  } catch (e) {
    if (!(e instanceof IcebergError)) throw e;
    return { status: e.status, type: e.icebergType, message: e.message };
  }
}

const auth = { type: 'bearer', token };
const catalog = new IcebergRestCatalog({ baseUrl, auth });
// iceberg-js puts a catalog name in the path as the spec's {prefix}: /v1/lake/namespaces/...
const prefixed = new IcebergRestCatalog({ baseUrl, auth, catalogName: 'lake' });
const intruder = new IcebergRestCatalog({ baseUrl, auth: { type: 'bearer', token: 'wrong' } });

const denied = await status(intruder.listNamespaces());
check(denied.status === 401 && denied.type === 'NotAuthorizedException', `a wrong token: ${JSON.stringify(denied)}`);

const ns = { namespace: ['rest'] };
const created = await catalog.createNamespace(ns, { properties: { owner: 'tests' } });
check(JSON.stringify(created.namespace) === '["rest"]', `createNamespace: ${JSON.stringify(created)}`);
const again = await status(prefixed.createNamespace(ns));
check(again.status === 409 && again.type === 'AlreadyExistsException', `createNamespace twice: ${JSON.stringify(again)}`);
check((await prefixed.loadNamespaceMetadata(ns)).properties.owner === 'tests', 'namespace properties');
check(await prefixed.namespaceExists(ns), 'namespaceExists');
check(!(await prefixed.namespaceExists({ namespace: ['nope'] })), 'namespaceExists of a missing one');
check((await prefixed.listNamespaces()).some((n) => JSON.stringify(n.namespace) === '["rest"]'), 'listNamespaces');

const id = { namespace: ['rest'], name: 'events' };
const meta0 = await prefixed.createTable(ns, { name: 'events', schema: staging.schema, properties: { 'created-by': 'iceberg-js' } });
check(meta0['format-version'] === 2, 'format-version 2');
check(/^[0-9a-f-]{36}$/.test(meta0['table-uuid']), `table-uuid ${meta0['table-uuid']}`);
check(meta0.properties['created-by'] === 'iceberg-js', 'table properties');
check(meta0['last-column-id'] === Math.max(...staging.schema.fields.map((f) => f.id)), 'last-column-id');
const dup = await status(prefixed.createTable(ns, { name: 'events', schema: staging.schema }));
check(dup.status === 409 && dup.type === 'AlreadyExistsException', `createTable twice: ${JSON.stringify(dup)}`);
const listed = await prefixed.listTables(ns);
check(listed.length === 1 && listed[0].name === 'events' && JSON.stringify(listed[0].namespace) === '["rest"]', `listTables: ${JSON.stringify(listed)}`);
check((await catalog.loadTable(id))['table-uuid'] === meta0['table-uuid'], 'loadTable');
check(await catalog.tableExists(id), 'tableExists');
const missing = await status(catalog.loadTable({ namespace: ['rest'], name: 'nope' }));
check(missing.status === 404 && missing.type === 'NoSuchTableException', `loadTable of a missing table: ${JSON.stringify(missing)}`);

const uuid = meta0['table-uuid'];
const append = (s, parent) => ({
  requirements: [
    { type: 'assert-table-uuid', uuid },
    { type: 'assert-ref-snapshot-id', ref: 'main', 'snapshot-id': parent },
  ],
  updates: [
    {
      action: 'add-snapshot',
      snapshot: {
        'snapshot-id': s.id,
        ...(parent === null ? {} : { 'parent-snapshot-id': parent }),
        'sequence-number': s.sequence,
        'timestamp-ms': Date.now(),
        'manifest-list': s.manifestList,
        summary: { operation: 'append', 'added-data-files': String(s.files), 'added-records': String(s.records) },
        'schema-id': 0,
      },
    },
    { action: 'set-snapshot-ref', 'ref-name': 'main', type: 'branch', 'snapshot-id': s.id },
  ],
});
const [a, b] = staging.snapshots;
const r1 = await prefixed.updateTable(id, append(a, null));
check(r1.metadata['current-snapshot-id'] === a.id, `commit 1: current-snapshot-id ${r1.metadata['current-snapshot-id']}`);
check(r1['metadata-location'] === `file://${path.resolve(lake, 'rest/events/metadata/v2.metadata.json')}`, `metadata-location ${r1['metadata-location']}`);
check(r1.metadata['last-sequence-number'] === 1, 'last-sequence-number 1');
check(r1.metadata['snapshot-log'].length === 1 && r1.metadata['metadata-log'].length === 1, 'snapshot-log and metadata-log');

// Stale: a writer that still believes main has no snapshot.
const stale = await status(prefixed.updateTable(id, append(b, null)));
check(stale.status === 409 && stale.type === 'CommitFailedException', `a stale commit: ${JSON.stringify(stale)}`);
const wrongUuid = await status(prefixed.updateTable(id, { requirements: [{ type: 'assert-table-uuid', uuid: '00000000-0000-4000-8000-000000000000' }], updates: [] }));
check(wrongUuid.status === 409, `assert-table-uuid of another table: ${JSON.stringify(wrongUuid)}`);
const unknown = await status(prefixed.updateTable(id, { requirements: [], updates: [{ action: 'frobnicate' }] }));
check(unknown.status === 400 && unknown.type === 'BadRequestException', `an unknown update: ${JSON.stringify(unknown)}`);

const r2 = await prefixed.updateTable(id, append(b, a.id));
check(r2.metadata['current-snapshot-id'] === b.id, 'commit 2');
check(r2.metadata.snapshots.length === 2 && r2.metadata['snapshot-log'].length === 2, 'two snapshots');
check(fs.readFileSync(path.join(lake, 'rest/events/metadata/version-hint.text'), 'utf8').trim() === '3', 'version-hint.text names v3');

// An outside reader on the file system, no catalog: icebird finds v3 through the hint.
const tableUrl = `file://${path.resolve(lake, 'rest/events')}`;
const norm = (rows) => rows.map((r) => ({ id: Number(r.id), name: r.name })).sort((x, y) => x.id - y.id);
const all = norm(await icebergRead({ tableUrl }));
check(JSON.stringify(all) === JSON.stringify(norm([...a.rows, ...b.rows])), `icebird reads both appends: ${JSON.stringify(all)}`);
const v2 = await icebergMetadata({ tableUrl, metadataFileName: 'v2.metadata.json' });
const first = norm(await icebergRead({ tableUrl, metadata: v2 }));
check(JSON.stringify(first) === JSON.stringify(norm(a.rows)), `icebird time travel to v2: ${JSON.stringify(first)}`);

const notEmpty = await status(catalog.dropNamespace(ns));
check(notEmpty.status === 409 && notEmpty.type === 'NamespaceNotEmptyException', `dropNamespace with a table: ${JSON.stringify(notEmpty)}`);
await prefixed.dropTable(id, { purge: true });
check(!(await prefixed.tableExists(id)), 'the table is gone');
check(!fs.existsSync(path.join(lake, 'rest/events')), 'a purge removes the table directory');
await prefixed.dropNamespace(ns);
check(!(await prefixed.namespaceExists(ns)), 'the namespace is gone');

if (failures) {
  console.error(`check_rest_catalog: ${failures} failures`);
  process.exit(1);
}
console.log(`check_rest_catalog: iceberg-js created, listed, loaded, committed (a stale commit got 409) and dropped; icebird read ${all.length} rows`);
