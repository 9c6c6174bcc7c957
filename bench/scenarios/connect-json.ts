// Target 6 of issue 10 (reported, not judged): the cached CheckPermission over the Connect protocol (JSON
// over HTTP/1.1 on the HTTP listener, as curl sends it) beside a no-op connect-node handler and a bare
// node:http handler answering the same JSON, each pair loaded at once on the server core (harness.ts
// pairedLoad); h2load over HTTP/1.1, 64 keep-alive connections with one request each in flight.

import { checkBody, HOT_PERMISSION, HOT_USER, hotDatabase } from "../fixtures.ts";
import { type BenchServer, CHECK_PATH, pairedLoad, startServer, startService } from "../harness.ts";
import type { BenchContext, Row, Scenario } from "../report.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
/** Reported rows (target 6): two rounds each, to keep the whole report within its six minutes. */
const ROUNDS = 2;
const JSON_HEADERS = ["content-type: application/json"];

export const connectJson: Scenario = {
  name: "connect",
  title: "Connect JSON over HTTP/1.1: cached CheckPermission beside no-op handlers (target 6, reported)",
  run,
};

/** One real answer first: a 200 whose body is not the check's answer must not count as a success. */
async function checkJson(port: number, body: string): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${port}${CHECK_PATH}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  const answer = (await response.json()) as { allowed?: boolean };
  if (response.status !== 200 || answer.allowed !== true) {
    throw new Error(`Connect JSON check on port ${port}: HTTP ${response.status} ${JSON.stringify(answer)}`);
  }
}

async function run(context: BenchContext): Promise<Row[]> {
  const database = await hotDatabase(context, "connect");
  const body = checkBody("connect-json", { userId: HOT_USER, permission: HOT_PERMISSION });
  const json = JSON.stringify({ userId: HOT_USER, permission: HOT_PERMISSION });
  const servers: BenchServer[] = [];
  const rows: Row[] = [];
  try {
    const service = await startService({
      env: { DATABASE_URL: database.url, AUTHZ_MIGRATE_ON_START: "false" },
    });
    servers.push(service);
    await checkJson(service.httpPort, json);
    const flags = service.nodeFlags();
    for (const [mode, name] of [
      ["connect-noop", "no-op connect-node handler"],
      ["http-noop", "bare node:http handler answering the same JSON"],
    ] as const) {
      const reference = await startServer(mode, { nodeArgs: flags });
      servers.push(reference);
      await checkJson(reference.httpPort, json);
      context.log(`Connect JSON beside ${mode}`);
      const versus = await pairedLoad(
        [
          { ...service, port: service.httpPort },
          { ...reference, port: reference.httpPort },
        ],
        body.jsonFile,
        { rounds: ROUNDS, seconds: SECONDS, headers: JSON_HEADERS, path: CHECK_PATH, h1: true },
      );
      await reference.stop();
      rows.push({
        name: "6. cached CheckPermission, Connect JSON over HTTP/1.1",
        figure: versus.rates[0],
        unit: "req/s",
        reference: { name, figure: versus.rates[1] },
        ratio: versus.ratio,
        note: `both loaded at once on the server core, median of ${ROUNDS} runs of ${SECONDS} s; ratios ${versus.rounds
          .map((r) => (r.rates[0] / r.rates[1]).toFixed(2))
          .join(", ")}; per CPU-second ${versus.cpuRatio.toFixed(2)}×`,
      });
    }
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
    await database.drop();
  }
  return rows;
}
