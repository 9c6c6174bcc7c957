#!/usr/bin/env node
// Entry point. Plain JavaScript on purpose: it must run, and explain itself, on a Node.js too old to load
// the TypeScript sources (Node 24 strips types natively; 22.18+ does too).
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 17) || !process.features?.typescript) {
  process.stderr.write(
    `flip-authz: needs Node.js 22.17 or newer with type stripping (Node 24 LTS recommended); this is ${process.version}.\n` +
      "Run it through npm (npm start, npx flip-authz), which uses the Node 24 this package depends on.\n",
  );
  process.exit(1);
}
await import("../src/main.ts");
