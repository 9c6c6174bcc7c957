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

// The server runs with these V8 flags unless the command line or NODE_OPTIONS sets them: V8 otherwise
// sizes the young generation to the machine (64 MB semi-spaces on a 24 GiB one), which costs ~100 MB of
// RSS under load and, measured in bench/ (README "Performance"), no throughput. V8 reads them only at
// start, so the process re-executes itself with them: same pid, so signals and PID 1 are unaffected.
const SERVE_FLAGS = ["--max-semi-space-size=4"];
const command = process.argv[2] ?? "serve";
if (command === "serve" && typeof process.execve === "function") {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)];
  const missing = SERVE_FLAGS.filter((flag) => !given.some((arg) => arg.startsWith(flag.split("=")[0])));
  if (missing.length > 0) {
    process.execve(process.execPath, [
      process.execPath,
      ...missing,
      ...process.execArgv,
      ...process.argv.slice(1),
    ]);
  }
}
await import("../src/main.ts");
