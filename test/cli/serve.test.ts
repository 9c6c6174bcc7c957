// `flip-authz serve` as operators run it: a real process, real ports, signals.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BIN, runCli } from "../helpers/cli.ts";
import { freePort } from "../helpers/ports.ts";

describe("flip-authz serve", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "flip-authz-serve-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("serves, reports SERVING to healthcheck, and exits 0 on SIGTERM", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const env = {
      PATH: process.env.PATH ?? "",
      DATABASE_URL: `sqlite:${join(dir, "serve.db")}`,
      AUTHZ_GRPC_LISTEN: `127.0.0.1:${grpcPort}`,
      AUTHZ_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
    };
    const child = spawn(process.execPath, [BIN, "serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    try {
      for (let i = 0; i < 100 && !stdout.includes("flip-authz listening"); i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(stdout).toContain("flip-authz listening");
      expect(stdout).toContain("authentication is OFF");

      const health = await runCli(["healthcheck"], env);
      expect(health.stdout.trim()).toBe("SERVING");
      expect(health.code).toBe(0);

      const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      expect(ready.status).toBe(200);
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
    const lines = stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { msg: string });
    expect(lines.map((line) => line.msg)).toContain("stopped");

    const down = await runCli(["healthcheck"], env);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^flip-authz: 127\.0\.0\.1:\d+: /);
  });

  it("refuses open mode on 0.0.0.0, naming what to set", async () => {
    const result = await runCli(["serve"], {
      DATABASE_URL: `sqlite:${join(dir, "open.db")}`,
      AUTHZ_GRPC_LISTEN: "0.0.0.0:0",
      AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
    });
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      "flip-authz: AUTHZ_SERVICE_TOKENS or AUTHZ_JWT_ISSUER: listening on 0.0.0.0:0 needs credentials (or AUTHZ_ALLOW_UNAUTHENTICATED=true)",
    );
  });

  it("refuses a short service token without showing it", async () => {
    const result = await runCli(["serve"], { AUTHZ_SERVICE_TOKENS: "tooshort" });
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      "flip-authz: AUTHZ_SERVICE_TOKENS: token #1 is shorter than 16 characters",
    );
  });
});

// The system Node of these machines is 20: the entry point must say what is wrong, not crash on syntax.
const oldNode = ["/usr/bin/node", "/usr/local/bin/node"].find((path) => {
  const version = spawnSync(path, ["--version"], { encoding: "utf8" }).stdout?.trim() ?? "";
  const major = Number(/^v(\d+)\./.exec(version)?.[1] ?? "0");
  return major > 0 && major < 22;
});

describe.skipIf(oldNode === undefined)("the entry point on an old Node", () => {
  it("stops with a clear message", () => {
    const result = spawnSync(oldNode ?? "node", [BIN, "serve"], { encoding: "utf8" });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("flip-authz: needs Node.js 22.17 or newer");
  });
});
