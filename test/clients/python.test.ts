// examples/python as FLIP's backend runs it: Debian's python3-grpcio, the contract from the committed
// descriptor set, against a real server with service tokens and user JWTs.

import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { type AppDatabase, createSqliteDatabase } from "../helpers/app.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "../helpers/keys.ts";
import { createTestPool, type SecureApp, startSecureApp, type TestPool } from "../helpers/secure-app.ts";
import { requireTool } from "../helpers/tools.ts";

const python = requireTool("python3-grpcio");
const EXAMPLE_DIR = fileURLToPath(new URL("../../examples/python", import.meta.url));
const TOKEN = "flip-backend-service-token-01";
const run = promisify(execFile);

describe.skipIf(!python.available)("the Python example (grpcio)", () => {
  let db: AppDatabase;
  let pool: TestPool;
  let server: SecureApp;
  const ADMIN = randomUUID();

  beforeAll(async () => {
    db = await createSqliteDatabase();
    pool = await createTestPool();
    server = await startSecureApp(db.url, {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_JWT_ISSUER: ISSUER,
      AUTHZ_JWT_AUDIENCE: CLIENT_ID,
      AUTHZ_JWKS_FILE: pool.jwksFile,
      AUTHZ_LOG_LEVEL: "silent",
    });
    await server.app.authz.assignRole(ADMIN, "Admin", NIL_UUID);
  });
  afterAll(async () => {
    await server?.close();
    await db?.close();
  });

  it("makes a check, a write as the signed-in admin, and a read-your-writes check", async () => {
    const user = randomUUID();
    const { stdout } = await run(python.path ?? "python3", ["example.py"], {
      cwd: EXAMPLE_DIR,
      env: {
        PATH: process.env.PATH ?? "",
        AUTHZ_ADDRESS: server.grpcTarget,
        AUTHZ_SERVICE_TOKEN: TOKEN,
        ADMIN_ACCESS_TOKEN: await signAccessToken(pool.rsa, ADMIN),
        USER_ID: user.toUpperCase(),
      },
      timeout: 60_000,
    });
    const result = JSON.parse(stdout) as {
      before: { allowed: boolean; checked_at: string };
      written: { changed: boolean; roles: string[]; written_at: string };
      after: { allowed: boolean; granted_by: string[]; checked_at: string };
      refused: { code: string; details: string };
    };
    expect(result.before.allowed).toBe(false);
    expect(result.written).toMatchObject({ changed: true, roles: ["Researcher"] });
    expect(result.after).toMatchObject({ allowed: true, granted_by: ["Researcher"] });
    expect(BigInt(result.after.checked_at)).toBeGreaterThanOrEqual(BigInt(result.written.written_at));
    expect(result.refused).toEqual({
      code: "PERMISSION_DENIED",
      details: "service tokens may not call RevokeRole (it writes); use a user token",
    });
    expect(
      await db.sql("SELECT action, modified_by_user_id FROM users_audit WHERE user_id = ?", [user]),
    ).toEqual([{ action: "Assigned role Researcher", modified_by_user_id: ADMIN }]);
  });

  it("says why when flip-authz refuses the service's credential", async () => {
    const attempt = run(python.path ?? "python3", ["example.py"], {
      cwd: EXAMPLE_DIR,
      env: {
        PATH: process.env.PATH ?? "",
        AUTHZ_ADDRESS: server.grpcTarget,
        AUTHZ_SERVICE_TOKEN: "not-a-token-anyone-knows",
        ADMIN_ACCESS_TOKEN: "x",
        USER_ID: randomUUID(),
      },
      timeout: 60_000,
    });
    const failed = await attempt.then(
      () => ({ code: 0, stdout: "" }),
      (error: { code: number; stdout: string }) => error,
    );
    expect(failed.code).toBe(1);
    expect(JSON.parse(failed.stdout)).toEqual({
      error: "UNAUTHENTICATED",
      details: "invalid token: malformed token",
    });
  });
});
