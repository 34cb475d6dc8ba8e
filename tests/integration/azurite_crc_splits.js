// Azurite's CRC-64 with and without emulation/azurite_fast.js, on the same inputs cut into chunks at random
// places (inside 8-byte groups, empty chunks, views at odd offsets, plain arrays, strings), through Azurite's
// own getCRC64FromStream / getCRC64FromString. Run by tests/integration/test_fast_emulators.py as
// `node azurite_crc_splits.js <repo root>`; prints {"cases": N, "mismatches": [...]} and exits 1 on a mismatch.
"use strict";

const fs = require("fs");
const Module = require("module");
const path = require("path");
const { Readable } = require("stream");

const root = process.argv[2];
const UTILS = path.join(root, "node_modules", "azurite", "dist", "src", "common", "utils", "utils.js");
const source = fs.readFileSync(UTILS, "utf8");

function load() {
  const module = new Module(UTILS, null);
  module.filename = UTILS;
  module.paths = Module._nodeModulePaths(path.dirname(UTILS));
  module._compile(source, UTILS);
  return module.exports;
}

const stock = load();
require(path.join(root, "emulation", "azurite_fast.js"));
const fast = load();

let seed = 0x9e3779b9; // fixed: a failure can be run again as it was
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const below = (n) => Math.floor(random() * n);

function chunksOf(bytes) {
  const chunks = [];
  for (let at = 0; at < bytes.length; ) {
    const end = Math.min(bytes.length, at + (random() < 0.1 ? 0 : 1 + below(300)));
    const kind = random();
    if (kind < 0.4) chunks.push(bytes.subarray(at, end));
    else if (kind < 0.7) chunks.push(new Uint8Array(bytes.buffer, bytes.byteOffset + at, end - at));
    else if (kind < 0.85) chunks.push(Array.from(bytes.subarray(at, end)));
    else chunks.push(Buffer.from(bytes.subarray(at, end)));
    at = end;
  }
  return chunks;
}

const hex = (digest) => Buffer.from(digest).toString("hex");
const ofStream = async (utils, chunks) =>
  hex(await utils.getCRC64FromStream(Readable.from(chunks, { objectMode: true })));

(async () => {
  const mismatches = [];
  let cases = 0;
  const pool = Buffer.alloc(8192);
  for (let i = 0; i < pool.length; i++) pool[i] = below(256);
  for (let round = 0; round < 2000; round++) {
    const start = below(64);
    const bytes = pool.subarray(start, start + below(round < 1000 ? 120 : 5000));
    const chunks = chunksOf(bytes);
    const [expected, got] = [await ofStream(stock, chunks), await ofStream(fast, chunks)];
    cases += 1;
    if (expected !== got) mismatches.push({ length: bytes.length, chunks: chunks.map((c) => c.length) });
  }
  const characters = ["A", "\u00e9", "\u20ac", "\ud83d", "\ud83d\ude00", "\u0000"];
  for (let round = 0; round < 300; round++) {
    const text = Array.from({ length: below(40) }, () => characters[below(characters.length)]).join("");
    const cut = below(text.length + 1);
    cases += 2;
    if (hex(stock.getCRC64FromString(text)) !== hex(fast.getCRC64FromString(text))) mismatches.push({ text });
    const parts = [text.slice(0, cut), text.slice(cut)];
    if ((await ofStream(stock, parts)) !== (await ofStream(fast, parts))) mismatches.push({ text, cut });
  }
  cases += 1;
  if (hex(fast.getCRC64FromString("123456789")) !== "8898790a86148bae") mismatches.push({ check: "123456789" });
  console.log(JSON.stringify({ cases, mismatches: mismatches.slice(0, 5) }));
  process.exit(mismatches.length ? 1 : 0);
})();
