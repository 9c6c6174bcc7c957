// A real PgBouncer (Debian's package) in front of the test PostgreSQL, in transaction pooling mode, as
// production deployments run it. Its ini and userlist live in a temporary folder; it listens on a free
// loopback port. PgBouncer refuses to run as root: under root it runs as the `postgres` user (or `nobody`).

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.ts";
import { ADMIN_URL } from "./postgres.ts";

export interface PgBouncer {
  port: number;
  /** A URL for `database` through PgBouncer. */
  url(database: string): string;
  /** What it logged so far. */
  log(): string;
  stop(): Promise<void>;
}

/** The unprivileged user to run PgBouncer as when this process is root. */
function runAsUser(): string {
  for (const user of ["postgres", "nobody"]) {
    try {
      execFileSync("id", ["-u", user], { stdio: "ignore" });
      return user;
    } catch {
      // Not on this machine.
    }
  }
  throw new Error("running as root and neither a postgres nor a nobody user exists for PgBouncer");
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

export async function startPgBouncer(binary: string, poolMode = "transaction"): Promise<PgBouncer> {
  const upstream = new URL(ADMIN_URL);
  const dir = mkdtempSync(join(tmpdir(), "authz-pgbouncer-"));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const user = decodeURIComponent(upstream.username || "postgres");
  const ini = join(dir, "pgbouncer.ini");
  const userlist = join(dir, "userlist.txt");
  writeFileSync(userlist, `"${user}" ""\n`, { mode: 0o644 });
  writeFileSync(
    ini,
    [
      "[databases]",
      `* = host=${upstream.hostname.replace(/^\[|\]$/g, "")} port=${upstream.port || "5432"} user=${user}${
        upstream.password ? ` password=${decodeURIComponent(upstream.password)}` : ""
      }`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = trust",
      `auth_file = ${userlist}`,
      `pool_mode = ${poolMode}`,
      "default_pool_size = 4",
      "max_client_conn = 200",
      "ignore_startup_parameters = extra_float_digits",
      "",
    ].join("\n"),
    { mode: 0o644 },
  );
  const root = process.getuid?.() === 0;
  const child: ChildProcess = root
    ? spawn("runuser", ["-u", runAsUser(), "--", binary, ini], { stdio: ["ignore", "pipe", "pipe"] })
    : spawn(binary, [ini], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.on("exit", () => {
      exited = true;
      resolve();
    }),
  );
  const stop = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exit;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(`PgBouncer did not start:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    port,
    url(database) {
      const url = new URL(ADMIN_URL);
      url.host = `127.0.0.1:${port}`;
      url.password = "";
      url.pathname = `/${database}`;
      return url.toString();
    },
    log: () => output,
    stop,
  };
}
