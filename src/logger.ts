// The process logger (pino), with the places a secret could hide redacted: JSON lines on stdout, or on a
// terminal (AUTHZ_LOG_FORMAT=auto, the default) one readable line per entry. Every line written while a
// call runs carries that call's request id (`requestId`), from requestScope, whichever module logs it, and
// with tracing on the ids of its server span (`trace_id`, `span_id`, as OpenTelemetry's log model names them).

import { AsyncLocalStorage } from "node:async_hooks";
import { inspect } from "node:util";
import pino from "pino";
import type { Config } from "./config.ts";
import type { CallSpan } from "./tracing/call-span.ts";

export type Logger = pino.Logger;

/** The request id of the call being served (made on first use); the listeners run each call inside it. */
export const requestScope = new AsyncLocalStorage<{ readonly id: string; span?: CallSpan | undefined }>();

export interface LoggerOptions {
  /** "json" (default), "pretty", or "auto": pretty when stdout is a terminal. */
  format?: Config["logFormat"];
}

const NO_FIELDS = {};

export function createLogger(
  level: Config["logLevel"],
  destination?: pino.DestinationStream,
  options: LoggerOptions = {},
): Logger {
  const format = options.format ?? "json";
  const pretty =
    format === "pretty" || (format === "auto" && destination === undefined && process.stdout.isTTY);
  return pino(
    {
      level,
      base: { service: "flip-authz" },
      redact: {
        paths: [
          "authorization",
          "*.authorization",
          "headers.authorization",
          "*.headers.authorization",
          "password",
          "*.password",
          "token",
          "*.token",
        ],
        censor: "[redacted]",
      },
      serializers: { err: pino.stdSerializers.err },
      // Called only for lines that are written: a call costs nothing here unless it logs.
      mixin() {
        const call = requestScope.getStore();
        if (call === undefined) return NO_FIELDS;
        const span = call.span;
        return span === undefined
          ? { requestId: call.id }
          : { requestId: call.id, trace_id: span.traceId, span_id: span.spanId };
      },
    },
    pretty ? prettyDestination(destination ?? process.stdout, Boolean(process.stdout.isTTY)) : destination,
  );
}

const LEVELS: Record<number, [string, string]> = {
  10: ["TRACE", "\x1b[90m"],
  20: ["DEBUG", "\x1b[36m"],
  30: ["INFO ", "\x1b[32m"],
  40: ["WARN ", "\x1b[33m"],
  50: ["ERROR", "\x1b[31m"],
  60: ["FATAL", "\x1b[35m"],
};
/** Fields every line has (or that say nothing to a reader); left out of the readable form. */
const SKIPPED = new Set(["level", "time", "msg", "service", "pid", "hostname", "err"]);

/** One readable line for a pino JSON line: `12:00:01.234 INFO  message key=value …`, then an error's stack. */
export function formatLine(json: string, colors = false): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const [name, color] = LEVELS[entry.level as number] ?? [String(entry.level), ""];
  const time = typeof entry.time === "number" ? new Date(entry.time).toISOString().slice(11, 23) : "";
  const level = colors ? `${color}${name}\x1b[0m` : name;
  let line = `${time} ${level} ${String(entry.msg ?? "")}`;
  for (const [key, value] of Object.entries(entry)) {
    if (SKIPPED.has(key)) continue;
    line += ` ${key}=${typeof value === "string" && /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value)}`;
  }
  const err = entry.err as { stack?: unknown; message?: unknown } | undefined;
  if (err !== undefined) {
    const stack = typeof err.stack === "string" ? err.stack : inspect(err.message ?? err);
    line += `\n    ${stack.split("\n").join("\n    ")}`;
  }
  return `${line}\n`;
}

function prettyDestination(out: pino.DestinationStream, colors: boolean): pino.DestinationStream {
  return {
    write(json: string) {
      out.write(formatLine(json, colors));
    },
  };
}
