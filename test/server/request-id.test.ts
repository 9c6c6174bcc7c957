// Request ids and logs, seen by real clients of a real `flip-authz serve` process: x-request-id taken from
// the call (when sane) or made, echoed on both listeners, on failures too; the access log line of each call
// (AUTHZ_ACCESS_LOG=true) with method, code, duration, peer and that id, and never a credential. In
// process: every log line a call writes carries its id, whichever logger call wrote it.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AuthzService,
  CheckPermissionRequestSchema,
  GetProfileRequestSchema,
  ListRolesRequestSchema,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import { createLogger, formatLine } from "../../src/logger.ts";
import { methodPath } from "../../src/rpc/method-name.ts";
import { createHealthState } from "../../src/server/health.ts";
import { type RunningServers, startServers } from "../../src/server/listen.ts";
import { BIN } from "../helpers/cli.ts";
import { MADE_REQUEST_ID } from "../helpers/request-id.ts";
import { jsonLines, type ServeProcess, startServe, stopAll } from "../helpers/serve-process.ts";
import { requireTool } from "../helpers/tools.ts";
import { createProbe, createTestService } from "./fixture.ts";

const TOKEN = "request-id-test-token-0001";
const script = requireTool("script");
const LIST_ROLES = methodPath(AuthzService.method.listRoles);

interface Answer {
  code: number;
  header: grpc.Metadata | undefined;
  trailer: grpc.Metadata;
}

/** ListRoles through a grpc-js client, with the metadata given; the answer's header, trailer and code. */
function listRoles(client: grpc.Client, sent: Record<string, string>): Promise<Answer> {
  return unary(
    client,
    LIST_ROLES,
    toBinary(ListRolesRequestSchema, create(ListRolesRequestSchema, {})),
    sent,
  );
}

/** A unary call with these request bytes and metadata; the answer's header, trailer and code. */
function unary(
  client: grpc.Client,
  path: string,
  request: Uint8Array,
  sent: Record<string, string>,
): Promise<Answer> {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(sent)) metadata.set(key, value);
  return new Promise((resolve) => {
    let header: grpc.Metadata | undefined;
    const call = client.makeUnaryRequest(
      path,
      (value: Buffer) => value,
      (bytes: Buffer) => bytes,
      Buffer.from(request),
      metadata,
      () => {},
    );
    call.on("metadata", (received) => {
      header = received;
    });
    call.on("status", (status) => resolve({ code: status.code, header, trailer: status.metadata }));
  });
}

const idIn = (answer: Answer) =>
  (answer.header?.get("x-request-id")[0] ?? answer.trailer.get("x-request-id")[0]) as string | undefined;

describe("x-request-id and the access log, on a real serve process", () => {
  let dir: string;
  let serve: ServeProcess;
  let client: grpc.Client;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "authz-request-id-"));
    serve = await startServe(
      {
        DATABASE_URL: `sqlite:${join(dir, "authz.db")}`,
        AUTHZ_SERVICE_TOKENS: TOKEN,
        AUTHZ_ACCESS_LOG: "true",
      },
      { name: "request-id" },
    );
    client = new grpc.Client(serve.grpcTarget, grpc.credentials.createInsecure());
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The access log line of the call with this id (waits for it: stdout is read asynchronously). */
  async function accessLine(requestId: string): Promise<Record<string, unknown>> {
    for (let i = 0; i < 100; i++) {
      const line = jsonLines(serve.logs).find(
        (entry) => entry.msg === "call" && entry.requestId === requestId,
      );
      if (line) return line;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`no access log line for ${requestId}:\n${serve.logs.join("\n")}`);
  }

  it("gRPC: echoes a sane x-request-id in the response header and logs the call under it", async () => {
    const answer = await listRoles(client, {
      authorization: `Bearer ${TOKEN}`,
      "x-request-id": "req-grpc.1:A_b",
    });
    expect(answer.code).toBe(grpc.status.OK);
    expect(answer.header?.get("x-request-id")).toEqual(["req-grpc.1:A_b"]);
    const line = await accessLine("req-grpc.1:A_b");
    expect(line).toMatchObject({
      level: 30,
      transport: "grpc",
      method: LIST_ROLES.slice(1),
      code: "OK",
      peer: expect.stringMatching(/^(ipv4:)?127\.0\.0\.1:\d+$/),
    });
    expect(typeof line.durationMs).toBe("number");
    expect(line.durationMs as number).toBeGreaterThanOrEqual(0);
  });

  it("gRPC: makes a UUID when none is sent or the one sent is not sane, and echoes it on failures too", async () => {
    const none = await listRoles(client, { authorization: `Bearer ${TOKEN}` });
    expect(idIn(none)).toMatch(MADE_REQUEST_ID);
    await accessLine(idIn(none) as string);
    for (const bad of ["has spaces", "x".repeat(129), 'quote"d', "semi;colon"]) {
      const answer = await listRoles(client, { authorization: `Bearer ${TOKEN}`, "x-request-id": bad });
      expect(answer.code).toBe(grpc.status.OK);
      expect(idIn(answer)).toMatch(MADE_REQUEST_ID);
    }
    expect(idIn(await listRoles(client, { "x-request-id": "x".repeat(128) }))).toBe("x".repeat(128));
    // Refused (no credential): a trailers-only answer carries the id with the status.
    const refused = await listRoles(client, { "x-request-id": "req-refused-1" });
    expect(refused.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(idIn(refused)).toBe("req-refused-1");
    expect(await accessLine("req-refused-1")).toMatchObject({ code: "UNAUTHENTICATED" });
  });

  it("Connect JSON over HTTP: echoed in the response headers, failures included; the access log has it", async () => {
    const call = (headers: Record<string, string>) =>
      fetch(`${serve.httpBase}${LIST_ROLES}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: "{}",
      });
    const ok = await call({ authorization: `Bearer ${TOKEN}`, "x-request-id": "req-http-1" });
    expect(ok.status).toBe(200);
    await ok.arrayBuffer();
    expect(ok.headers.get("x-request-id")).toBe("req-http-1");
    expect(await accessLine("req-http-1")).toMatchObject({ transport: "connect", code: "OK" });

    const refused = await call({ "x-request-id": "req-http-2" });
    expect(refused.status).toBe(401);
    await refused.arrayBuffer();
    expect(refused.headers.get("x-request-id")).toBe("req-http-2");
    expect(await accessLine("req-http-2")).toMatchObject({ code: "UNAUTHENTICATED" });

    const made = await call({ authorization: `Bearer ${TOKEN}`, "x-request-id": "two words" });
    await made.arrayBuffer();
    expect(made.headers.get("x-request-id")).toMatch(MADE_REQUEST_ID);
    // Operator endpoints answer with one too.
    const health = await fetch(`${serve.httpBase}/healthz`, { headers: { "x-request-id": "probe-1" } });
    await health.arrayBuffer();
    expect(health.headers.get("x-request-id")).toBe("probe-1");
  });

  it("never writes a credential to the log", async () => {
    await listRoles(client, { authorization: `Bearer ${TOKEN}`, "x-request-id": "req-last" });
    await accessLine("req-last");
    expect(serve.logs.join("\n")).not.toContain(TOKEN);
    expect(serve.logs.join("\n").toLowerCase()).not.toContain("bearer");
  });
});

describe("every log line of a call carries its request id", () => {
  const lines: string[] = [];
  let servers: RunningServers;
  let client: grpc.Client;

  beforeAll(async () => {
    const logger = createLogger("info", { write: (line: string) => void lines.push(line) });
    const health = createHealthState([AuthzService.typeName]);
    health.setAll("SERVING");
    const impl = createTestService(createProbe());
    servers = await startServers({
      service: AuthzService,
      impl: {
        ...impl,
        // A module deep in the call logs with the process logger, knowing nothing of the call.
        async listRoles(request, context) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          logger.warn({ step: "deep" }, "something to say");
          return (impl.listRoles as NonNullable<typeof impl.listRoles>)(request, context);
        },
      },
      health,
      logger,
      grpc: { host: "127.0.0.1", port: 0 },
      http: { host: "127.0.0.1", port: 0 },
    });
    client = new grpc.Client(`127.0.0.1:${servers.grpcPort}`, grpc.credentials.createInsecure());
  });

  afterAll(async () => {
    client?.close();
    await servers?.shutdown(1000);
  });

  it("on the gRPC listener", async () => {
    const answer = await listRoles(client, { "x-request-id": "deep-grpc" });
    expect(idIn(answer)).toBe("deep-grpc");
    const deep = jsonLines(lines).filter((entry) => entry.step === "deep");
    expect(deep.at(-1)).toMatchObject({ requestId: "deep-grpc", msg: "something to say" });
    // The access log is off by default.
    expect(jsonLines(lines).filter((entry) => entry.msg === "call")).toEqual([]);
  });

  it("on the gRPC listener, an id is made only when something needs it: a log line or a failure", async () => {
    // ListRoles logs (above): the id made for that line goes back.
    const logged = await listRoles(client, {});
    expect(idIn(logged)).toMatch(MADE_REQUEST_ID);
    expect(
      jsonLines(lines)
        .filter((entry) => entry.step === "deep")
        .at(-1)?.requestId,
    ).toBe(idIn(logged));
    // GetProfile logs nothing and succeeds: no id made, none sent back (a UUID and a header per call cost
    // the cached check measurably); one the caller sent always comes back.
    const getProfile = `/${AuthzService.typeName}/GetProfile`;
    const profile = toBinary(GetProfileRequestSchema, create(GetProfileRequestSchema, { userId: "ABC" }));
    const quiet = await unary(client, getProfile, profile, {});
    expect(quiet.code).toBe(grpc.status.OK);
    expect(idIn(quiet)).toBeUndefined();
    expect(idIn(await unary(client, getProfile, profile, { "x-request-id": "quiet-1" }))).toBe("quiet-1");
    // A failure always carries one.
    const check = `/${AuthzService.typeName}/CheckPermission`;
    const failing = toBinary(
      CheckPermissionRequestSchema,
      create(CheckPermissionRequestSchema, { userId: "code:5" }),
    );
    const failed = await unary(client, check, failing, {});
    expect(failed.code).toBe(grpc.status.NOT_FOUND);
    expect(idIn(failed)).toMatch(MADE_REQUEST_ID);
  });

  it("on the HTTP listener, and for a handler's unexpected error", async () => {
    const response = await fetch(`http://127.0.0.1:${servers.httpPort}${LIST_ROLES}`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "deep-http" },
      body: "{}",
    });
    await response.arrayBuffer();
    expect(response.headers.get("x-request-id")).toBe("deep-http");
    expect(
      jsonLines(lines)
        .filter((entry) => entry.step === "deep")
        .at(-1),
    ).toMatchObject({
      requestId: "deep-http",
    });
    const failed = await fetch(
      `http://127.0.0.1:${servers.httpPort}/${AuthzService.typeName}/CheckPermission`,
      {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": "deep-error" },
        body: JSON.stringify({ userId: "plain-error", permission: "X" }),
      },
    );
    expect(failed.status).toBe(500);
    await failed.arrayBuffer();
    expect(failed.headers.get("x-request-id")).toBe("deep-error");
    expect(jsonLines(lines).find((entry) => entry.msg === "unexpected error in RPC handler")).toMatchObject({
      requestId: "deep-error",
    });
    // The line of that error names the call's id, not another's.
    expect(
      jsonLines(lines).find((entry) => entry.msg === undefined || entry.requestId === undefined),
    ).toBeUndefined();
  });
});

describe.skipIf(!script.available)("log format on a terminal", () => {
  it("serve writes readable lines when its stdout is a terminal (AUTHZ_LOG_FORMAT unset)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "authz-tty-"));
    // script(1) runs the command on a pseudo-terminal and copies what it writes.
    const child = spawn(script.path as string, ["-qfec", `${process.execPath} ${BIN} serve`, "/dev/null"], {
      env: {
        PATH: process.env.PATH ?? "",
        DATABASE_URL: `sqlite:${join(dir, "authz.db")}`,
        AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
        AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
      },
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    try {
      for (let i = 0; i < 300 && !output.includes("flip-authz listening"); i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const line = output.split("\n").find((l) => l.includes("flip-authz listening")) ?? output;
      // Time, coloured level, message, fields: no JSON object.
      const shown = line.split(String.fromCharCode(27)).join("ESC");
      expect(shown).toMatch(/^\d\d:\d\d:\d\d\.\d{3} ESC\[32mINFO ESC\[0m flip-authz listening /);
      expect(line.trim().startsWith("{")).toBe(false);
    } finally {
      if (child.pid !== undefined && child.exitCode === null) process.kill(-child.pid, "SIGTERM");
      await new Promise((resolve) => child.once("close", resolve));
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe("log format", () => {
  it("writes readable lines when asked (AUTHZ_LOG_FORMAT=pretty), JSON otherwise", () => {
    const pretty: string[] = [];
    createLogger("info", { write: (line: string) => void pretty.push(line) }, { format: "pretty" }).warn(
      { requestId: "r-1", code: "NOT_FOUND", note: "two words" },
      "lookup failed",
    );
    expect(pretty).toHaveLength(1);
    expect(pretty[0]).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} WARN {2}lookup failed requestId=r-1 code=NOT_FOUND note="two words"\n$/,
    );
    const json: string[] = [];
    // "auto" with a destination that is not a terminal: JSON.
    createLogger("info", { write: (line: string) => void json.push(line) }, { format: "auto" }).info("hello");
    expect(JSON.parse(json[0] as string)).toMatchObject({ msg: "hello", level: 30, service: "flip-authz" });
  });

  it("puts an error's stack under its line", () => {
    const line = formatLine(
      JSON.stringify({
        level: 50,
        time: 0,
        msg: "boom",
        err: { message: "bad", stack: "Error: bad\n    at x" },
      }),
    );
    expect(line).toBe("00:00:00.000 ERROR boom\n    Error: bad\n        at x\n");
  });
});
