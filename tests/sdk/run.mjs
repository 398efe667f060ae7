// Drives every Vault method of the official WorkOS Node SDK (11.x and 8.x) against a running
// byok-broker, and the Admin Portal's link generation (intent bring_your_own_key) with an admin key.
// Usage: BROKER_PORT=8787 WORKOS_API_KEY=<app key> WORKOS_ADMIN_KEY=<admin key> node run.mjs
// BROKER_HTTPS=1: over TLS (`https: true`; the broker's CA through NODE_EXTRA_CA_CERTS).
// Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
import assert from 'node:assert/strict';
import { WorkOS as WorkOS11 } from 'workos11';
import { WorkOS as WorkOS8 } from 'workos8';

const port = Number(process.env.BROKER_PORT ?? 8787);
const apiKey = process.env.WORKOS_API_KEY;
const adminKey = process.env.WORKOS_ADMIN_KEY;
const https = process.env.BROKER_HTTPS === '1';
const scheme = https ? 'https' : 'http';
let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name}: ${error?.stack ?? error}`);
  }
}

async function exercise(label, WorkOS, { v11 }) {
  const workos = new WorkOS(apiKey, { apiHostname: '127.0.0.1', port, https, ...(v11 ? { maxRetries: 0 } : {}) });
  const vault = workos.vault;
  const suffix = `${label}-${Date.now()}`;
  const context = { organization_id: `org_${suffix}` };
  let created;

  await check(`${label} createObject`, async () => {
    created = await vault.createObject({ name: `secret/${suffix}`, value: 's3cr3t', context });
    assert.equal(created.id.length, 36);
    assert.deepEqual(created.context, context);
    assert.ok(created.versionId);
  });
  await check(`${label} createObject with a name taken is a ConflictException`, async () => {
    await assert.rejects(vault.createObject({ name: `secret/${suffix}`, value: 'x', context }), (e) => e.status === 409);
  });
  await check(`${label} readObject`, async () => {
    const object = await vault.readObject({ id: created.id });
    assert.equal(object.value, 's3cr3t');
    assert.equal(object.name, `secret/${suffix}`);
  });
  await check(`${label} readObjectByName (name with a slash)`, async () => {
    const object = await vault.readObjectByName(v11 ? { name: `secret/${suffix}` } : `secret/${suffix}`);
    assert.equal(object.id, created.id);
  });
  await check(`${label} describeObject`, async () => {
    const described = await vault.describeObject({ id: created.id });
    assert.equal(described.value, undefined);
    assert.equal(described.metadata.id, created.id);
  });
  let updated;
  await check(`${label} updateObject with versionCheck`, async () => {
    updated = await vault.updateObject({ id: created.id, value: 'n3w', versionCheck: created.versionId });
    assert.notEqual(updated.metadata.versionId, created.versionId);
    assert.equal((await vault.readObject({ id: created.id })).value, 'n3w');
  });
  await check(`${label} updateObject with a stale versionCheck is a ConflictException`, async () => {
    await assert.rejects(vault.updateObject({ id: created.id, value: 'x', versionCheck: created.versionId }), (e) => e.status === 409);
  });
  await check(`${label} listObjectVersions`, async () => {
    const versions = await vault.listObjectVersions({ id: created.id });
    assert.equal(versions.length, 2);
    assert.equal(versions.filter((v) => v.currentVersion).length, 1);
  });
  await check(`${label} listObjects`, async () => {
    const list = await vault.listObjects({ limit: 100 });
    assert.ok(list.data.some((o) => o.id === created.id));
  });
  if (v11) {
    await check(`${label} listObjects autoPagination across pages of 100`, async () => {
      for (let i = 0; i < 101; i += 1) await vault.createObject({ name: `page-${i}/${suffix}`, value: 'v', context });
      const all = await (await vault.listObjects()).autoPagination();
      const names = all.map((o) => o.name);
      assert.equal(new Set(names).size, names.length, 'no object twice');
      assert.ok(names.includes(`secret/${suffix}`));
      assert.equal(names.filter((n) => n.startsWith('page-') && n.endsWith(suffix)).length, 101);
    });
  }
  if (v11) {
    await check(`${label} listObjects order and search`, async () => {
      const names = async (order) => (await (await vault.listObjects({ search: suffix, order })).autoPagination()).map((o) => o.name);
      const ascending = await names('asc');
      assert.ok(ascending.length > 0 && ascending.every((n) => n.includes(suffix)));
      assert.deepEqual(ascending, (await names('desc')).reverse());
    });
  }
  if (v11) {
    await check(`${label} listObjects updatedAfter (Date)`, async () => {
      const recent = await vault.listObjects({ updatedAfter: new Date(Date.now() - 3600_000) });
      assert.ok(recent.data.length > 0, 'objects updated in the last hour are listed');
      const none = await vault.listObjects({ updatedAfter: new Date(Date.now() + 3600_000) });
      assert.equal(none.data.length, 0);
    });
  }
  await check(`${label} encrypt/decrypt with associated data`, async () => {
    const blob = await vault.encrypt('hello world', context, 'aad-1');
    assert.equal(await vault.decrypt(blob, 'aad-1'), 'hello world');
    await assert.rejects(vault.decrypt(blob, 'wrong-aad'));
  });
  await check(`${label} createDataKey/decryptDataKey`, async () => {
    const key = await vault.createDataKey({ context });
    assert.equal(Buffer.from(key.dataKey.key, 'base64').length, 32);
    const again = await vault.decryptDataKey({ keys: key.encryptedKeys });
    assert.equal(again.key, key.dataKey.key);
    assert.equal(again.id, key.dataKey.id);
  });
  if (v11) {
    await check(`${label} createRekey`, async () => {
      const key = await vault.createDataKey({ context });
      const rekeyed = await vault.createRekey({ context: { ...context, data_type: 'moved' }, encryptedKeys: key.encryptedKeys });
      assert.equal(rekeyed.dataKey, key.dataKey.key); // createRekey returns the flat response
      assert.equal(rekeyed.context.data_type, 'moved');
      const again = await vault.decryptDataKey({ keys: rekeyed.encryptedKeys });
      assert.equal(again.key, key.dataKey.key);
    });
  }
  await check(`${label} an empty key context is an UnprocessableEntityException`, async () => {
    await assert.rejects(vault.createDataKey({ context: {} }), (e) => e.status === 422);
  });
  if (v11) {
    await check(`${label} deleteObject with a stale versionCheck is a ConflictException`, async () => {
      await assert.rejects(vault.deleteObject({ id: created.id, versionCheck: created.versionId }), (e) => e.status === 409);
      assert.equal((await vault.readObject({ id: created.id })).value, 'n3w', 'a refused delete keeps the object');
    });
  }
  await check(`${label} deleteObject`, async () => {
    await vault.deleteObject({ id: created.id });
    await assert.rejects(vault.readObject({ id: created.id }), (e) => e.status === 404);
  });
  await check(`${label} a wrong API key is an UnauthorizedException`, async () => {
    const other = new WorkOS('sk_wrong_key_123456789', { apiHostname: '127.0.0.1', port, https, ...(v11 ? { maxRetries: 0 } : {}) });
    await assert.rejects(other.vault.readObject({ id: created.id }), (e) => e.status === 401);
  });
}

// Admin Portal links: 11.x `workos.adminPortal.generateLink`, 8.x `workos.portal.generateLink`.
async function portal(label, WorkOS, { v11 }) {
  const workos = new WorkOS(adminKey, { apiHostname: '127.0.0.1', port, https, ...(v11 ? { maxRetries: 0 } : {}) });
  const portalApi = v11 ? workos.adminPortal : workos.portal;
  const organization = `org_portal_${label}_${Date.now()}`;
  let link;
  await check(`${label} generateLink (bring_your_own_key)`, async () => {
    const result = await portalApi.generateLink({ organization, intent: 'bring_your_own_key', returnUrl: 'https://app.example/settings', successUrl: 'https://app.example/done' });
    link = result.link;
    assert.match(link, new RegExp(`^${scheme}://127\\.0\\.0\\.1:${port}/portal/launch\\?token=ptl_[0-9a-f]{64}$`));
  });
  await check(`${label} the link opens the portal once`, async () => {
    const opened = await fetch(link, { redirect: 'manual' });
    assert.equal(opened.status, 200);
    const cookie = opened.headers.get('set-cookie');
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.equal(/Secure/.test(cookie), https);
    const session = await fetch(`${scheme}://127.0.0.1:${port}/portal/api/session`, { headers: { cookie: cookie.split(';')[0] } });
    assert.equal((await session.json()).organization_id, organization);
    assert.equal((await fetch(link)).status, 403);
  });
  await check(`${label} generateLink with another intent is an UnprocessableEntityException`, async () => {
    await assert.rejects(portalApi.generateLink({ organization, intent: 'sso' }), (e) => e.status === 422);
  });
  await check(`${label} generateLink with an app key is refused`, async () => {
    const app = new WorkOS(apiKey, { apiHostname: '127.0.0.1', port, https, ...(v11 ? { maxRetries: 0 } : {}) });
    await assert.rejects((v11 ? app.adminPortal : app.portal).generateLink({ organization, intent: 'bring_your_own_key' }), (e) => e.status === 403);
  });
}

await exercise(`sdk-v11-${scheme}`, WorkOS11, { v11: true });
await exercise(`sdk-v8-${scheme}`, WorkOS8, { v11: false });
await portal(`sdk-v11-${scheme}`, WorkOS11, { v11: true });
await portal(`sdk-v8-${scheme}`, WorkOS8, { v11: false });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
