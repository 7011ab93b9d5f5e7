// Triton's own IMGAPI client (sdc-clients 13.x) against an imgstore daemon.
// Run by tests/it/compat.rs with IMGAPI_URL set; by hand:
//   IMGAPI_URL=http://127.0.0.1:8080 node --test tools/compat/sdc-clients.test.js
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const IMGAPI = require('sdc-clients').IMGAPI;

const URL = process.env.IMGAPI_URL;
const ALICE = 'a11ce000-0000-4000-8000-000000000001';
const BOB = 'b0b00000-0000-4000-8000-000000000002';

function call(fn) {
    return new Promise((resolve, reject) => {
        fn((err, result, res) => (err ? reject(err) : resolve({ result, res })));
    });
}

// With IMGAPI_SIGN_USER and IMGAPI_SIGN_KEY (a private key file) every
// request is signed as sdc-clients signs for an IMGAPI with
// `"authType": "signature"`.
const options = { url: URL, agent: false };
if (process.env.IMGAPI_SIGN_USER) {
    options.user = process.env.IMGAPI_SIGN_USER;
    options.sign = require('smartdc-auth').privateKeySigner({
        key: fs.readFileSync(process.env.IMGAPI_SIGN_KEY, 'utf8'),
        user: options.user,
    });
}
const client = new IMGAPI(options);
test.after(() => client.close());

test('ping', async () => {
    const { result } = await call((cb) => client.ping(cb));
    assert.strictEqual(result.ping, 'pong');
    assert.strictEqual(result.imgapi, true);
});

test('create, upload, activate, get, download, acl, update, disable, enable, delete', async () => {
    const { result: img } = await call((cb) => client.createImage({
        name: 'compat-base', version: '1.0.0', type: 'zone-dataset', os: 'smartos',
    }, ALICE, cb));
    assert.strictEqual(img.state, 'unactivated');
    assert.strictEqual(img.owner, ALICE);

    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imgstore-compat-'));
    const file = path.join(tmp, 'image.bin');
    const data = crypto.randomBytes(3 * 1024 * 1024 + 17);
    fs.writeFileSync(file, data);
    const sha1 = crypto.createHash('sha1').update(data).digest('hex');

    const { result: withFile } = await call((cb) => client.addImageFile({
        uuid: img.uuid, file, compression: 'none', sha1,
    }, ALICE, cb));
    assert.deepStrictEqual(withFile.files, [{ sha1, size: data.length, compression: 'none' }]);

    const { result: active } = await call((cb) => client.activateImage(img.uuid, ALICE, cb));
    assert.strictEqual(active.state, 'active');
    assert.ok(active.published_at);

    const { result: got } = await call((cb) => client.getImage(img.uuid, ALICE, cb));
    assert.strictEqual(got.uuid, img.uuid);

    // getImageFile checks Content-MD5 itself and fails with ChecksumError.
    const out = path.join(tmp, 'download.bin');
    await call((cb) => client.getImageFile(img.uuid, out, ALICE, cb));
    assert.ok(fs.readFileSync(out).equals(data));

    const { result: shared } = await call((cb) => client.addImageAcl(img.uuid, [BOB], ALICE, cb));
    assert.deepStrictEqual(shared.acl, [BOB]);
    const { result: seen } = await call((cb) => client.getImage(img.uuid, BOB, cb));
    assert.strictEqual(seen.uuid, img.uuid);
    const { result: unshared } = await call((cb) => client.removeImageAcl(img.uuid, [BOB], ALICE, cb));
    assert.strictEqual(unshared.acl, undefined);
    await assert.rejects(call((cb) => client.getImage(img.uuid, BOB, cb)),
        (err) => err.statusCode === 404 && err.body.code === 'ResourceNotFound');

    const { result: updated } = await call((cb) => client.updateImage(img.uuid,
        { description: 'updated by sdc-clients', tags: { role: 'compat' } }, ALICE, cb));
    assert.strictEqual(updated.description, 'updated by sdc-clients');

    const { result: disabled } = await call((cb) => client.disableImage(img.uuid, ALICE, cb));
    assert.strictEqual(disabled.state, 'disabled');
    const { result: enabled } = await call((cb) => client.enableImage(img.uuid, ALICE, cb));
    assert.strictEqual(enabled.state, 'active');

    // Errors come back with the IMGAPI code sdc-clients callers branch on.
    await assert.rejects(call((cb) => client.activateImage(img.uuid, ALICE, cb)),
        (err) => err.statusCode === 422 && err.body.code === 'ImageAlreadyActivated');
    await assert.rejects(call((cb) => client.deleteImage(img.uuid, BOB, cb)),
        (err) => err.statusCode === 404);

    await call((cb) => client.deleteImage(img.uuid, ALICE, cb));
    await assert.rejects(call((cb) => client.getImage(img.uuid, cb)),
        (err) => err.statusCode === 404);
    fs.rmSync(tmp, { recursive: true, force: true });
});

test('listImages pages through more than 1000 images with the inclusive marker', async () => {
    const owner = 'c0ffee00-0000-4000-8000-000000000003';
    const n = 1010;
    const made = new Set();
    for (let i = 0; i < n; i += 25) {
        const batch = [];
        for (let j = i; j < Math.min(n, i + 25); j++) {
            batch.push(call((cb) => client.createImage({
                name: 'page-' + j, version: '1', type: 'other', os: 'other',
            }, owner, cb)).then(({ result }) => made.add(result.uuid)));
        }
        await Promise.all(batch);
    }
    const { result: all } = await call((cb) => client.listImages({ owner, state: 'all' }, cb));
    assert.strictEqual(all.length, n);
    assert.deepStrictEqual(new Set(all.map((i) => i.uuid)), made);
    const { result: page } = await call((cb) => client.listImages(
        { owner, state: 'all', limit: 10 }, cb));
    assert.strictEqual(page.length, 10);
});
