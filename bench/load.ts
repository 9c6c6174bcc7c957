// What the benchmark scenarios share: server processes that print {"port": N} when listening, h2load
// against a gRPC CheckPermission, and one real call to check the answer first (h2load counts an HTTP 200
// with a non-zero grpc-status as a success).

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { CheckPermissionResponseSchema } from "../gen/flip/authz/v1/authz_pb.ts";

/** One real call first: h2load counts an HTTP 200 with a non-zero grpc-status as a success. */
export function checkOnce(port: number, request: Uint8Array): Promise<{ allowed: boolean }> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      "/flip.authz.v1.AuthzService/CheckPermission",
      (bytes: Uint8Array) => Buffer.from(bytes),
      (bytes: Buffer) => fromBinary(CheckPermissionResponseSchema, bytes),
      request,
      (error, response) => {
        client.close();
        if (error || !response) reject(error ?? new Error("no response"));
        else resolve(response);
      },
    );
  });
}

export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  Buffer.from(message).copy(frame, 5);
  return frame;
}

/** Asynchronous, so the bench process's own writer keeps running during the load. */
export async function h2load(port: number, bodyFile: string, requests: number): Promise<number> {
  const { stdout: output } = await promisify(execFile)(
    "h2load",
    [
      ...["-n", String(requests), "-c", "4", "-m", "25", "-t", "1"],
      ...["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", bodyFile],
      `http://127.0.0.1:${port}/flip.authz.v1.AuthzService/CheckPermission`,
    ],
    { encoding: "utf8" },
  );
  const rate = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(output);
  const succeeded = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded/.exec(output);
  if (!rate?.[1] || Number(succeeded?.[1]) !== requests) throw new Error(`h2load failed:\n${output}`);
  return Number(rate[1]);
}

/**
 * Runs `node [nodeOptions] <args>` with `env` over this process's environment; resolves once it prints
 * {"port": N}. `ipc` opens a message channel to it.
 */
export function startServer(
  args: string[],
  env: Record<string, string>,
  options: { nodeOptions?: string[]; ipc?: boolean } = {},
): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [...(options.nodeOptions ?? []), ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit", ...(options.ipc ? (["ipc"] as const) : [])],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line) resolve({ port: (JSON.parse(line) as { port: number }).port, child });
    });
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited with ${code}`)));
  });
}

export async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}
