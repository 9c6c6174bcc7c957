// Targets 1, 4 and 5 of issue 10, on the servers of one run:
//  1. cached CheckPermission over gRPC ≥ 0.9× a no-op grpc-js handler with channelz off (same Node, h2load
//     4 connections × 25 streams, server pinned to one core, load generator to the other);
//  4. p50/p99 at 25/50/75% of the service's measured maximum (h2load --rps) within 1.5× of the no-op's at
//     the same offered load, or under 2 ms;
//  5. RSS under the hot load with the entry's Node flags beside Node's defaults (reported), throughput
//     within 5% of Node's defaults (the condition for keeping the flags).
// Reported beside them: the no-op with grpc-js defaults (channelz on), the no-op with the bridge's codec
// (src/server/flat-codec.ts) instead of protobuf-es's, our bridge with a no-op handler,
// fully_consistent checks, and cached checks while 100 writes/s invalidate the user.

import { NIL_UUID } from "../../src/authz/ids.ts";
import { loadConfig } from "../../src/config.ts";
import { openStore } from "../../src/store/index.ts";
import {
  checkBody,
  GRPC_HEADERS,
  HOT_PERMISSION,
  HOT_USER,
  hotDatabase,
  VIEWER_ROLE_ID,
} from "../fixtures.ts";
import {
  type BenchServer,
  CHECK_PATH,
  checkOnce,
  h2load,
  type PairedResult,
  pairedLoad,
  percentile,
  startServer,
  startService,
} from "../harness.ts";
import type { BenchContext, Row, Scenario } from "../report.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/**
 * Target 4: rounds per server and fraction (alternating with the reference), seconds each. At these loads
 * both servers run a full collection every 1–3 s that stops them for 10–40 ms (node:http2 and grpc-js
 * promote nearly every call's objects, the no-op's about as much as ours), and that alone sets p99.
 * Windows of 1 s held one or none, so p99 compared which side a collection fell on; 3 s windows hold one
 * or more on each.
 */
const LATENCY_ROUNDS = 2;
const LATENCY_SECONDS = 3;
/** Load on each server alone before any comparison (see `up`). */
const WARM_UP_SECONDS = 3;
/** Node's own young-generation sizing, whatever the entry sets (0 = V8's default). */
const NODE_DEFAULTS = ["--max-semi-space-size=0"];

export const hotPath: Scenario = {
  name: "hot",
  title: "Hot path: cached CheckPermission over gRPC (targets 1, 4, 5)",
  run,
};

async function run(context: BenchContext): Promise<Row[]> {
  const database = await hotDatabase(context, "hot");
  const cached = checkBody("hot-cached", { userId: HOT_USER, permission: HOT_PERMISSION });
  const full = checkBody("hot-full", { userId: HOT_USER, permission: HOT_PERMISSION, fullyConsistent: true });
  const env = { DATABASE_URL: database.url, AUTHZ_MIGRATE_ON_START: "false" };
  const servers: BenchServer[] = [];
  // Each server is loaded alone before it is compared: a fresh one, paired with one already warm, ran at
  // 0.75, 0.85 then 1.05× of it in three rounds of 3 s here, until V8 had compiled its hot code; after
  // 3 s alone (WARM_UP_SECONDS), 1.08, 1.02, 1.08.
  const up = async (server: Promise<BenchServer>) => {
    const started = await server;
    servers.push(started);
    const answer = await checkOnce(started.port, cached.bytes);
    if (!answer.allowed) throw new Error("the warm-up check was denied");
    await h2load({
      url: `http://127.0.0.1:${started.port}${CHECK_PATH}`,
      bodyFile: cached.grpcFile,
      headers: GRPC_HEADERS,
      seconds: WARM_UP_SECONDS,
    });
    return started;
  };
  const rows: Row[] = [];
  try {
    const service = await up(startService({ env }));
    // The reference at its best: the same Node flags as the service's entry sets (and channelz off).
    const flags = service.nodeFlags();
    const noop = await up(startServer("noop", { nodeArgs: flags }));
    const plain = await up(startService({ env, nodeArgs: NODE_DEFAULTS }));
    const load = (
      server: BenchServer,
      options: { rps?: number; file?: string; seconds?: number; warmUp?: number | string } = {},
    ) =>
      h2load({
        url: `http://127.0.0.1:${server.port}${CHECK_PATH}`,
        bodyFile: options.file ?? cached.grpcFile,
        headers: GRPC_HEADERS,
        seconds: options.seconds ?? SECONDS,
        warmUp: options.warmUp ?? 1,
        ...(options.rps !== undefined && { rps: options.rps }),
      });

    // Each pair loaded at once on the server core: what each does per CPU-second it gets (harness.ts).
    const paired = (a: BenchServer, b: BenchServer, rounds = ROUNDS) =>
      pairedLoad([a, b], cached.grpcFile, {
        rounds,
        seconds: SECONDS,
        headers: GRPC_HEADERS,
        path: CHECK_PATH,
      });
    const describe = (result: PairedResult, names: [string, string]) =>
      `both loaded at once on the server core, median of ${result.rounds.length} runs of ${SECONDS} s; ratios ${result.rounds
        .map((r) => (r.rates[0] / r.rates[1]).toFixed(2))
        .join(
          ", ",
        )}; per CPU-second: ${names[0]} ${result.perCpuSecond[0].toFixed(0)}, ${names[1]} ${result.perCpuSecond[1].toFixed(0)} (${result.cpuRatio.toFixed(2)}×)`;

    context.log("hot path: the service beside the no-op");
    const versusNoop = await paired(service, noop);
    rows.push({
      name: "1. cached CheckPermission, gRPC ",
      figure: versusNoop.rates[0],
      unit: "req/s",
      reference: {
        name: `no-op grpc-js handler, channelz off${flags.length > 0 ? `, ${flags.join(" ")}` : ""}`,
        figure: versusNoop.rates[1],
      },
      ratio: versusNoop.ratio,
      goal: "≥ 0.90×",
      pass: versusNoop.ratio >= 0.9,
      note: describe(versusNoop, ["service", "no-op"]),
    });

    context.log("hot path: the entry's Node flags beside Node's defaults");
    // Two rounds: the flags' margin has been wide (1.11× against a 0.95× condition).
    const versusDefaults = await paired(service, plain, 2);
    const serviceRss = service.rssMb();
    const plainRss = plain.rssMb();
    rows.push({
      name: `5. RSS under the hot load, the entry's Node flags (${flags.join(" ") || "none"})`,
      figure: serviceRss,
      unit: "MB",
      reference: { name: "same, Node's defaults", figure: plainRss },
      ratio: serviceRss / plainRss,
      note: "after the paired runs below",
    });
    rows.push({
      name: "5. throughput with the entry's Node flags",
      figure: versusDefaults.rates[0],
      unit: "req/s",
      reference: { name: "same, Node's defaults", figure: versusDefaults.rates[1] },
      ratio: versusDefaults.ratio,
      goal: "≥ 0.95× (to keep the flags)",
      pass: versusDefaults.ratio >= 0.95,
      note: describe(versusDefaults, ["flags", "defaults"]),
    });
    await plain.stop();

    // The service alone on its core: the maximum the latency loads are fractions of.
    const serviceRate = (await load(service)).rate;

    // 4. Latency at fractions of the service's maximum, beside the no-op at the same offered load. The two
    // alternate (no-op first, then the service first) and each one's requests from both rounds are pooled:
    // a burst of other work on the machine lands on either side alike instead of on whichever ran then.
    for (const fraction of [0.25, 0.5, 0.75]) {
      const rps = Math.round(serviceRate * fraction);
      context.log(`latency at ${fraction * 100}% (${rps} req/s)`);
      const pooled = new Map<BenchServer, number[][]>([
        [noop, []],
        [service, []],
      ]);
      for (let round = 0; round < LATENCY_ROUNDS; round++) {
        for (const server of round % 2 === 0 ? [noop, service] : [service, noop]) {
          const { latencies } = await load(server, { rps, seconds: LATENCY_SECONDS, warmUp: "500ms" });
          pooled.get(server)?.push(latencies);
        }
      }
      const merged = (server: BenchServer) => (pooled.get(server) ?? []).flat().sort((a, b) => a - b);
      const measured = merged(service);
      const reference = merged(noop);
      for (const p of [50, 99]) {
        const figure = percentile(measured, p);
        const ref = percentile(reference, p);
        const perRound = (pooled.get(service) ?? [])
          .map((latencies, i) => {
            const other = pooled.get(noop)?.[i] ?? [];
            return `${percentile(latencies, p).toFixed(2)}/${percentile(other, p).toFixed(2)}`;
          })
          .join(", ");
        rows.push({
          name: `4. p${p} at ${fraction * 100}% of the maximum (${rps} req/s offered)`,
          figure,
          unit: "ms",
          reference: { name: "no-op at the same load", figure: ref },
          ratio: figure / ref,
          goal: "≤ 1.5× or < 2 ms",
          pass: figure <= 1.5 * ref || figure < 2,
          note: `${measured.length} vs ${reference.length} requests in ${LATENCY_ROUNDS} alternating rounds of ${LATENCY_SECONDS} s; each round's p${p} (ms), service/no-op: ${perRound}`,
        });
      }
    }

    // Reported: what channelz costs the no-op, what the bridge's codec saves it, what the bridge costs, the
    // database path, and invalidations.
    for (const [mode, name] of [
      ["noop-channelz", "no-op grpc-js handler, grpc-js defaults (channelz on)"],
      ["noop-codec", "no-op grpc-js handler, channelz off, the bridge's codec instead of protobuf-es"],
      ["bridge", "our grpc-js bridge, no-op Connect handler"],
    ] as const) {
      const other = await up(startServer(mode, { nodeArgs: flags }));
      // Reported only: one round after the warm-up, to keep the whole report within its six minutes.
      const versus = await pairedLoad([other, noop], cached.grpcFile, {
        rounds: 1,
        seconds: SECONDS,
        headers: GRPC_HEADERS,
        path: CHECK_PATH,
      });
      await other.stop();
      rows.push({
        name: `${name}`,
        figure: versus.rates[0],
        unit: "req/s",
        reference: { name: "no-op, channelz off", figure: versus.rates[1] },
        ratio: versus.ratio,
        note: describe(versus, [mode, "no-op"]),
      });
    }
    const fullRate = (await load(service, { file: full.grpcFile })).rate;
    rows.push({
      name: `CheckPermission, fully_consistent (${database.kind})`,
      figure: fullRate,
      unit: "req/s",
      reference: { name: "cached", figure: serviceRate },
      ratio: fullRate / serviceRate,
    });
    rows.push(await whileWriting(database.url, serviceRate, () => load(service)));
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
    await database.drop();
  }
  return rows;
}

/** Cached checks of the hot user while a writer changes that user's roles 100 times a second. */
async function whileWriting(url: string, cachedRate: number, load: () => Promise<{ rate: number }>) {
  const store = await openStore(loadConfig({ DATABASE_URL: url }).database, { migrate: false });
  let writes = 0;
  let running = true;
  const writer = (async () => {
    const started = Date.now();
    while (running) {
      if (writes % 2 === 0) await store.assignRole(HOT_USER, VIEWER_ROLE_ID, NIL_UUID);
      else await store.revokeRole(HOT_USER, VIEWER_ROLE_ID, NIL_UUID);
      writes++;
      const due = started + writes * 10;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - Date.now())));
    }
  })();
  const started = performance.now();
  try {
    const { rate } = await load();
    const seconds = (performance.now() - started) / 1000;
    return {
      name: "cached CheckPermission while 100 writes/s invalidate the user",
      figure: rate,
      unit: "req/s",
      reference: { name: "without writes", figure: cachedRate },
      ratio: rate / cachedRate,
      note: `${(writes / seconds).toFixed(0)} writes/s during the load`,
    } satisfies Row;
  } finally {
    running = false;
    await writer;
    await store.close();
  }
}
