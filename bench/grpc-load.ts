// A gRPC unary load generator for requests that differ from call to call (h2load repeats one body): HTTP/2
// frames written straight to the socket (raw-h2.ts), a fixed number of calls in flight, each answer checked
// (a message, then the end of the stream; a failed call is sent again through node:http2 to say why). Run as
// its own process pinned to the load core (harness.ts grpcLoad); reads its job from the JSON file named by
// argv[2] and prints the outcome as one JSON line.
//
// The job's bodies are gRPC frames (base64), sent round-robin from a random start, or in order once each
// with `once`.

import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { RawGrpcConnection } from "./raw-h2.ts";

export interface LoadJob {
  port: number;
  path: string;
  /** gRPC-framed request messages, base64. */
  bodies: string[];
  /** Calls in flight at once. */
  concurrency: number;
  /** Stop after this many seconds (0: when `once` has sent every body). */
  seconds: number;
  /** Send each body at most once, in order (then stop, if `seconds` has not stopped it first). */
  once?: boolean;
  /** Seconds of load before measuring (not counted). */
  warmUp?: number;
  headers?: Record<string, string>;
  /** HTTP/2 connections the calls are spread over. */
  connections?: number;
}

export interface LoadOutcome {
  calls: number;
  failures: number;
  firstFailure?: string;
  seconds: number;
  rate: number;
  /** Latencies in ms, sorted. */
  latencies: number[];
}

/** What a unary gRPC call answered: the HTTP status, grpc-status (if any) and grpc-message (decoded). */
export interface UnaryAnswer {
  status: number;
  grpcStatus: string | undefined;
  message: string;
}

/** HTTP 200 with grpc-status 0. */
export const answerOk = (answer: UnaryAnswer): boolean => answer.status === 200 && answer.grpcStatus === "0";

/**
 * Sends one gRPC-framed `body` on `session` and calls `done` once the stream has closed. A callback rather
 * than a promise: a load process must cost far less per call than the server it loads.
 */
export function unaryCall(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body: Buffer,
  done: (answer: UnaryAnswer) => void,
): void {
  const stream = session.request(headers);
  const answer: UnaryAnswer = { status: 0, grpcStatus: undefined, message: "" };
  stream.on("response", (head) => {
    answer.status = Number(head[":status"]);
    // A trailers-only answer carries grpc-status in the headers.
    if (head["grpc-status"] !== undefined) answer.grpcStatus = String(head["grpc-status"]);
  });
  stream.on("trailers", (trailers) => {
    answer.grpcStatus = String(trailers["grpc-status"]);
    answer.message = decodeURIComponent(String(trailers["grpc-message"] ?? ""));
  });
  // A reset stream ends in "close" too, with no grpc-status: counted as a failure there.
  stream.on("error", () => {});
  stream.resume();
  stream.on("close", () => done(answer));
  stream.end(body);
}

async function runJob(job: LoadJob): Promise<LoadOutcome> {
  const bodies = job.bodies.map((body) => Buffer.from(body, "base64"));
  const connections = await Promise.all(
    Array.from({ length: job.connections ?? 4 }, () =>
      RawGrpcConnection.connect(job.port, job.path, job.headers),
    ),
  );
  let next = job.once ? 0 : Math.floor(Math.random() * bodies.length);
  let sent = 0;
  let measuring = !job.warmUp;
  let stopAt = Number.POSITIVE_INFINITY;
  let calls = 0;
  let failures = 0;
  let failed: { body: Buffer; why: string } | undefined;
  const latencies: number[] = [];
  let started = performance.now();

  let active = 0;
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const launch = (): void => {
    if ((job.once && next >= bodies.length) || performance.now() >= stopAt) {
      if (--active === 0) finish();
      return;
    }
    const body = bodies[next % bodies.length] as Buffer;
    next++;
    const t0 = performance.now();
    const connection = connections[sent++ % connections.length] as RawGrpcConnection;
    connection.call(body, (ok, why) => {
      if (measuring) {
        calls++;
        if (!ok) {
          failures++;
          failed ??= { body, why };
        } else {
          latencies.push(performance.now() - t0);
        }
      }
      launch();
    });
  };

  const limit = (from: number) => (job.seconds > 0 ? from + job.seconds * 1000 : Number.POSITIVE_INFINITY);
  if (job.warmUp) {
    setTimeout(() => {
      measuring = true;
      started = performance.now();
      stopAt = limit(started);
    }, job.warmUp * 1000);
  } else {
    stopAt = limit(started);
  }
  active = job.concurrency;
  for (let i = 0; i < job.concurrency; i++) launch();
  await finished;
  const seconds = (performance.now() - started) / 1000;
  for (const connection of connections) connection.close();
  latencies.sort((a, b) => a - b);
  return {
    calls,
    failures,
    ...(failed !== undefined && { firstFailure: await explain(job, failed.body, failed.why) }),
    seconds,
    rate: calls / seconds,
    latencies,
  };
}

/** What a failed call's answer said, from the same call sent again through node:http2. */
async function explain(job: LoadJob, body: Buffer, why: string): Promise<string> {
  const session = http2.connect(`http://127.0.0.1:${job.port}`);
  try {
    const headers = {
      ":method": "POST",
      ":path": job.path,
      "content-type": "application/grpc",
      te: "trailers",
    };
    const answer = await new Promise<UnaryAnswer>((resolve) =>
      unaryCall(session, { ...headers, ...job.headers }, body, resolve),
    );
    return `${why}; sent again: HTTP ${answer.status}, grpc-status ${answer.grpcStatus}: ${answer.message}`;
  } finally {
    session.close();
  }
}

if (import.meta.main) {
  const job = JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as LoadJob;
  const outcome = await runJob(job);
  if (process.env.BENCH_LOAD_DEBUG) {
    const usage = process.cpuUsage();
    process.stderr.write(
      `load process cpu ${((usage.user + usage.system) / 1e6).toFixed(2)} s over ${outcome.seconds.toFixed(2)} s\n`,
    );
  }
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
}
