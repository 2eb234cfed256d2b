#!/usr/bin/env node
// Starts s3rver (tests/node/node_modules/s3rver) on 127.0.0.1, port 0, with the buckets
// named on the command line, and prints the port on the first stdout line.
// Usage: node --openssl-legacy-provider s3_server.js DATA_DIR [BUCKET...] (s3rver's
// ListObjectsV2 continuation tokens use DES, which OpenSSL 3 only has in its legacy
// provider; without the flag the second page fails with HTTP 500). Exits by itself after 120 s and when
// stdin closes, so that a crashed test never leaves it behind.
'use strict';
const path = require('path');
const S3rver = require(path.join(__dirname, '..', '..', 'node', 'node_modules', 's3rver'));

async function main() {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: s3_server.js DATA_DIR [BUCKET...]');
    process.exit(2);
  }
  const buckets = process.argv.slice(3).map((name) => ({ name, configs: [] }));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: buckets });
  const { port } = await server.run();
  process.stdout.write(`${port}\n`);
  setTimeout(() => process.exit(3), 120000).unref();
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
