// sdc-clients' importImageFromDatacenterAndWait against two imgstore
// daemons: it follows the `workflow-api` header to poll the job, then GETs
// the image. Run by tests/it/compat.rs with IMGAPI_URL (the destination),
// IMAGE_UUID, ACCOUNT and DATACENTER set.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const IMGAPI = require('sdc-clients').IMGAPI;

test('importImageFromDatacenterAndWait copies and returns the image', async () => {
    const client = new IMGAPI({ url: process.env.IMGAPI_URL, agent: false });
    try {
        const image = await new Promise((resolve, reject) => {
            client.importImageFromDatacenterAndWait(process.env.IMAGE_UUID,
                process.env.ACCOUNT, { datacenter: process.env.DATACENTER },
                (err, img) => (err ? reject(err) : resolve(img)));
        });
        assert.strictEqual(image.uuid, process.env.IMAGE_UUID);
        assert.strictEqual(image.state, 'active');
        assert.strictEqual(image.owner, process.env.ACCOUNT);
        // A failing copy comes back as an error from the last chain result.
        await assert.rejects(new Promise((resolve, reject) => {
            client.importImageFromDatacenterAndWait(process.env.IMAGE_UUID,
                process.env.ACCOUNT, { datacenter: 'nowhere' },
                (err, img) => (err ? reject(err) : resolve(img)));
        }), (err) => err.statusCode === 422 && err.body.code === 'ValidationFailed');
    } finally {
        client.close();
    }
});
