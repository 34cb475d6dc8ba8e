// Azurite with its per-byte CRC-64 cost taken out, so that the link, not the emulator, bounds an upload.
//
// Preloaded by emulation.azurite for `make bench` only (azurite_server(fast=True) sets
// NODE_OPTIONS=--require <this file>); the tests run stock Azurite. Azurite 3.37.0 computes the CRC-64/NVME
// of every Put Block (and of every write it is asked to check) one byte at a time in JavaScript
// (common/utils/utils.js, CRC64Hash.update): about 65 MB/s on this machine whatever the client's concurrency,
// since Node runs it on its one thread. Real Azure computes it in the storage service at memory speed.
//
// Replaced here: CRC64Hash.prototype.update, by the same CRC (same table, same state, same digest) computed
// eight bytes at a time (slicing-by-8). Nothing else changes. The module's source is pinned by its sha256:
// a different Azurite is refused (the process exits), not patched blindly.
"use strict";

const crypto = require("crypto");
const Module = require("module");
const path = require("path");

const TARGET = path.join("azurite", "dist", "src", "common", "utils", "utils.js");
const EXPECTED_SHA256 = "09a32b7b6e9942fd24402d150ea735726391814e6d0a9a877e8685158cd9d47b";
const MARKER = "azurite_fast: CRC64Hash.update computes 8 bytes at a time";

// Runs inside utils.js (appended to its source), where CRC64Hash and CRC64_TABLE are module-level names.
function installSlicingBy8(CRC64Hash, table) {
  const hi = [new Uint32Array(256)];
  const lo = [new Uint32Array(256)];
  for (let i = 0; i < 256; i++) {
    hi[0][i] = table[i * 2];
    lo[0][i] = table[i * 2 + 1];
  }
  // Table k: the CRC of byte i followed by k zero bytes.
  for (let k = 1; k < 8; k++) {
    const h = new Uint32Array(256);
    const l = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      const carry = lo[k - 1][i] & 0xff;
      l[i] = (((hi[k - 1][i] & 0xff) << 24) | (lo[k - 1][i] >>> 8)) ^ lo[0][carry];
      h[i] = (hi[k - 1][i] >>> 8) ^ hi[0][carry];
    }
    hi.push(h);
    lo.push(l);
  }
  const [h0, h1, h2, h3, h4, h5, h6, h7] = hi;
  const [l0, l1, l2, l3, l4, l5, l6, l7] = lo;
  CRC64Hash.prototype.update = function update(chunk) {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    const length = bytes.length;
    const whole = length - (length % 8);
    let crcHi = this.hi;
    let crcLo = this.lo;
    let i = 0;
    for (; i < whole; i += 8) {
      const a = crcLo ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
      const b = crcHi ^ (bytes[i + 4] | (bytes[i + 5] << 8) | (bytes[i + 6] << 16) | (bytes[i + 7] << 24));
      crcLo =
        l7[a & 0xff] ^ l6[(a >>> 8) & 0xff] ^ l5[(a >>> 16) & 0xff] ^ l4[a >>> 24] ^
        l3[b & 0xff] ^ l2[(b >>> 8) & 0xff] ^ l1[(b >>> 16) & 0xff] ^ l0[b >>> 24];
      crcHi =
        h7[a & 0xff] ^ h6[(a >>> 8) & 0xff] ^ h5[(a >>> 16) & 0xff] ^ h4[a >>> 24] ^
        h3[b & 0xff] ^ h2[(b >>> 8) & 0xff] ^ h1[(b >>> 16) & 0xff] ^ h0[b >>> 24];
    }
    for (; i < length; i++) {
      const index = (crcLo ^ bytes[i]) & 0xff;
      crcLo = (((crcHi & 0xff) << 24) | (crcLo >>> 8)) ^ l0[index];
      crcHi = (crcHi >>> 8) ^ h0[index];
    }
    this.hi = crcHi >>> 0;
    this.lo = crcLo >>> 0;
    return this;
  };
}

const compile = Module.prototype._compile;
Module.prototype._compile = function compileWithFastCrc64(content, filename, ...rest) {
  if (filename.endsWith(path.sep + TARGET)) {
    const digest = crypto.createHash("sha256").update(content).digest("hex");
    if (digest !== EXPECTED_SHA256) {
      process.stderr.write(
        `azurite_fast: ${filename} has sha256 ${digest}, not ${EXPECTED_SHA256} (Azurite 3.37.0); ` +
          "refusing to patch a CRC-64 implementation it was not checked against\n",
      );
      process.exit(70);
    }
    // The marker is written once the replacement is in place (emulation/azurite.py waits for it in the log).
    content += `\n;(${installSlicingBy8.toString()})(CRC64Hash, CRC64_TABLE);\n`;
    content += `process.stderr.write(${JSON.stringify(`${MARKER}\n`)});\n`;
  }
  return compile.call(this, content, filename, ...rest);
};
